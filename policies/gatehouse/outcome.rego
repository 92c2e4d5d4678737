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
