# A policy may not claim INDETERMINATE: that state is the PDP's alone.
package gatehouse.main

default decision := {"decision": "indeterminate", "reason_code": "evaluation_error"}
