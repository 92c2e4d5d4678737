# Package gatehouse.outcome builds the decision objects that domain packages
# return, so every package yields the same shape (see gatehouse.main).
package gatehouse.outcome

# allow permits the request.
allow := {
	"decision": "allow",
	"reason_code": "allowed",
	"message": "",
	"required_scopes": [],
	"obligations": [],
}

# deny refuses the request for reason code with a developer-facing message.
# The message must not carry attribute values (tenants, subjects, ids).
deny(code, message) := {
	"decision": "deny",
	"reason_code": code,
	"message": message,
	"required_scopes": [],
	"obligations": [],
}

# deny_scope refuses a request whose token lacks one of scopes, and names
# the scopes the action needs (the edge puts them in WWW-Authenticate).
deny_scope(scopes) := {
	"decision": "deny",
	"reason_code": "insufficient_scope",
	"message": "the access token lacks a scope this action requires",
	"required_scopes": scopes,
	"obligations": [],
}

# deny_step_up refuses a request until the user signs in again with acr and
# at most max_age seconds ago (RFC 9470): the step_up obligation carries
# both, and the edge turns it into a 401 insufficient_user_authentication
# challenge with acr_values and max_age.
deny_step_up(acr, max_age) := {
	"decision": "deny",
	"reason_code": "step_up_required",
	"message": "a stronger or more recent authentication is required",
	"required_scopes": [],
	"obligations": [{"type": "step_up", "params": {"acr": acr, "max_age": format_int(max_age, 10)}}],
}
