package gatehouse.main

default decision := {"decision": "not_applicable", "reason_code": "no_applicable_policy"}
