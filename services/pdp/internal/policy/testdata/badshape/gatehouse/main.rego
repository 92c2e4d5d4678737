# decision is total, but answers some inputs with a malformed object.
package gatehouse.main

default decision := {"decision": "not_applicable", "reason_code": "no_applicable_policy"}

decision := {"decision": "permit", "reason_code": "allowed"} if input.action == "bad:state"

decision := {"decision": "allow", "reason_code": "Allowed!"} if input.action == "bad:code"

decision := {"decision": "allow", "reason_code": "allowed", "message": 7} if input.action == "bad:message"

decision := {"decision": "deny", "reason_code": "insufficient_scope", "required_scopes": "a b"} if input.action == "bad:scopes"

decision := {"decision": "deny", "reason_code": "x", "obligations": [{"params": {}}]} if input.action == "bad:obligation"

decision := {"decision": "deny", "reason_code": "x", "obligations": [{"type": "step_up", "params": {"max_age": 300}}]} if input.action == "bad:param"

decision := "allow" if input.action == "bad:object"

decision := {
	"decision": "deny",
	"reason_code": "step_up_required",
	"message": "",
	"required_scopes": [],
	"obligations": [{"type": "step_up", "params": {"acr": "mfa", "max_age": "300"}}],
} if input.action == "good:obligation"

# A builtin error (strict mode) fails the evaluation.
decision := {"decision": "allow", "reason_code": "allowed", "message": sprintf("%d", [to_number("x")])} if input.action == "bad:builtin"
