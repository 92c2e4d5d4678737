# Package gatehouse.main is the PDP's one entry point: the PDP evaluates
# data.gatehouse.main.decision and nothing else.
#
# decision is total: it always yields an object
#
#   {
#     "decision":        "allow" | "deny" | "not_applicable",
#     "reason_code":     snake_case code from docs/reference/reason-codes.md,
#     "message":         developer-facing text, never attribute values,
#     "required_scopes": [scope, ...]  (set for insufficient_scope),
#     "obligations":     [{"type": string, "params": {string: string}}, ...],
#   }
#
# It dispatches on the resource type and action to one domain package per
# resource type. An action no domain package covers is not_applicable, which
# the PDP's callers treat as a denial (fail closed). The PDP itself returns
# INDETERMINATE for invalid input or a failed evaluation; policies never do.
package gatehouse.main

# Nothing covers the request: not applicable (and so not permitted).
default decision := {
	"decision": "not_applicable",
	"reason_code": "no_applicable_policy",
	"message": "no policy covers this action and resource type",
	"required_scopes": [],
	"obligations": [],
}

# Invoice actions are decided by package gatehouse.invoice.
decision := data.gatehouse.invoice.decision if {
	input.resource.type == "invoice"
	input.action in data.gatehouse.invoice.actions
}

# Token exchanges (RFC 8693) at the issuer are decided by package
# gatehouse.exchange.
decision := data.gatehouse.exchange.decision if {
	input.resource.type == "token"
	input.action in data.gatehouse.exchange.actions
}

# The support service's ticket actions are decided by package
# gatehouse.support.
decision := data.gatehouse.support.decision if {
	input.resource.type == "support"
	input.action in data.gatehouse.support.actions
}
