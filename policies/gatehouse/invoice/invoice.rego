# Package gatehouse.invoice decides the invoice actions it lists in actions.
#
# Checks run in a fixed order and the first failing one decides:
#
#   1. tenant: the invoice's tenant equals the principal's tenant, else
#      deny tenant_mismatch;
#   2. scope: the token carries a scope that grants the action (a scope of
#      the catalog, data.gatehouse.scopes, whose operations include it), else
#      deny insufficient_scope, naming the granting scopes in required_scopes;
#   3. role: a user needs a role whose permissions (data.gatehouse.roles)
#      include the action, else deny role_not_permitted. A client acting for
#      itself (subject == client_id, RFC 9068 section 2.2, client_credentials)
#      has no roles and is authorized by tenant and scope alone.
#
# Every check is written as "<check>_ok" and denied with "not <check>_ok", so
# an absent input field fails the check instead of skipping it.
package gatehouse.invoice

import data.gatehouse.outcome

# actions are the actions gatehouse.main routes to this package. The catalog
# (data.gatehouse.actions) also defines invoice:approve, which no rule decides
# yet: it stays not_applicable.
actions := {"invoice:read", "invoice:write"}

# granting_scopes are the catalog's scopes whose operations include the
# requested action, sorted. An action no scope grants has none, and then no
# token carries the scope it needs (fail closed).
granting_scopes := sort([name |
	some name, scope in data.gatehouse.scopes
	input.action in scope.operations
])

decision := outcome.deny("tenant_mismatch", "the invoice belongs to another tenant") if {
	not tenant_ok
} else := outcome.deny_scope(granting_scopes) if {
	not scope_ok
} else := outcome.deny("role_not_permitted", "none of the principal's roles grants this action") if {
	not role_ok
} else := outcome.allow if {
	tenant_ok
	scope_ok
	role_ok
}

tenant_ok if {
	input.principal.tenant != ""
	input.resource.tenant == input.principal.tenant
}

scope_ok if {
	some scope in input.principal.scopes
	input.action in data.gatehouse.scopes[scope].operations
}

# A client acting for itself is authorized by tenant and scope alone.
role_ok if client_acting_for_itself

role_ok if {
	some role in input.principal.roles
	input.action in data.gatehouse.roles[role].permissions
}

# client_acting_for_itself holds for client_credentials tokens, whose subject
# is the client (RFC 9068 section 2.2) and which nobody acts through. A
# principal without a client_id, or with an actor chain, is treated as a user.
client_acting_for_itself if {
	input.principal.client_id != ""
	input.principal.subject == input.principal.client_id
	count(object.get(input.principal, "actor_chain", [])) == 0
}
