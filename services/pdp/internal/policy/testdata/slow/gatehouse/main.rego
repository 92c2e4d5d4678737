# "slow:loop" runs for minutes unless the evaluation is cancelled.
package gatehouse.main

default decision := {"decision": "not_applicable", "reason_code": "no_applicable_policy"}

decision := {"decision": "allow", "reason_code": "allowed"} if {
	input.action == "slow:loop"
	some a in numbers.range(1, 100000)
	some b in numbers.range(1, 100000)
	a * b == -1
}
