# decision has no default: undefined for most inputs.
package gatehouse.main

decision := {"decision": "allow", "reason_code": "allowed"} if input.action == "never:matches"
