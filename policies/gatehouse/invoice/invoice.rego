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
# invoice:approve of one invoice (resource.id set) then also needs:
#
#   4. amount: the attribute amount_cents (the invoice's amount in the
#      smallest currency unit), else deny missing_attribute; a number, else
#      deny invalid_attribute;
#   5. step-up: above the threshold in approval_step_up (data.json next to
#      this file: 1,000,000, i.e. 10,000.00 of a two-decimal currency), the
#      principal's acr must be approval_step_up.acr and its auth_time at most
#      approval_step_up.max_age_seconds before context.time, else deny
#      step_up_required with a step_up obligation naming acr and max_age.
#      A missing acr, auth_time or context.time fails this check.
#
# invoice:approve without resource.id asks whether the principal may approve
# its tenant's invoices at all (the gateway's route-level check): checks 1-3
# decide it. It never approves a particular invoice; the invoice service
# always asks again with the invoice's id and amount.
#
# Every check is written as "<check>_ok" and denied with "not <check>_ok", so
# an absent input field fails the check instead of skipping it.
package gatehouse.invoice

import data.gatehouse.outcome

# actions are the actions gatehouse.main routes to this package.
actions := {"invoice:read", "invoice:write", "invoice:approve"}

# step_up is the approval threshold and what a step-up requires (data.json).
step_up := data.gatehouse.invoice.approval_step_up

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
} else := outcome.deny("missing_attribute", "approving an invoice needs its amount_cents attribute") if {
	not amount_present
} else := outcome.deny("invalid_attribute", "amount_cents must be a number") if {
	not amount_ok
} else := outcome.deny_step_up(step_up.acr, step_up.max_age_seconds) if {
	not step_up_ok
} else := outcome.allow if {
	tenant_ok
	scope_ok
	role_ok
	amount_ok
	step_up_ok
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

# approving_one_invoice holds for invoice:approve of a particular invoice,
# the only check that needs its amount. A request without resource.id is
# collection-level (see the package comment).
approving_one_invoice if {
	input.action == "invoice:approve"
	object.get(input.resource, "id", "") != ""
}

amount_present if not approving_one_invoice

amount_present if {
	approving_one_invoice
	_ = input.resource.attributes.amount_cents
}

amount_ok if not approving_one_invoice

amount_ok if {
	approving_one_invoice
	is_number(input.resource.attributes.amount_cents)
}

step_up_ok if not approving_one_invoice

# At or below the threshold no step-up is needed. A threshold that is not a
# number (a broken data.json) never counts as "below".
step_up_ok if {
	approving_one_invoice
	is_number(step_up.amount_cents_above)
	input.resource.attributes.amount_cents <= step_up.amount_cents_above
}

step_up_ok if {
	approving_one_invoice
	recent_strong_authentication
}

# recent_strong_authentication: the principal signed in with the required
# acr at most max_age_seconds before the request (RFC 9470's acr and
# max_age; auth_time as in OpenID Connect). Without auth_time or
# context.time it does not hold.
recent_strong_authentication if {
	input.principal.acr == step_up.acr
	auth_time := time.parse_rfc3339_ns(input.principal.auth_time)
	now := time.parse_rfc3339_ns(input.context.time)
	now - auth_time <= step_up.max_age_seconds * 1000000000
}
