# Package gatehouse.exchange decides token exchanges (RFC 8693) at the
# issuer: action token:exchange on resource type "token", where resource.id
# and resource.tenant are the new token's subject and tenant. The principal
# is the subject token's: for impersonation the agent, for delegation the
# user the delegate acts for. Its data is data.json next to this file.
#
# The attributes (all typed):
#
#   mode               "impersonation" | "delegation"
#   client_id          the client asking for the exchange
#   audience           the new token's audience
#   scope              the requested scopes, space separated
#   lifetime_seconds   the new token's lifetime (a whole number >= 1)
#   subject_exchanged  the subject token already has an act claim
#   target_roles       impersonation: the new subject's roles, space separated
#   ticket_id          impersonation: the ticket the client states (optional)
#   ticket_access      impersonation: "read" (default) or "write" (optional)
#   actor_subject, actor_client_id, actor_tenant
#                      delegation: the actor token's; empty (or absent) for
#                      impersonation
#
# First the input: a missing attribute is missing_attribute, a malformed or
# inconsistent one invalid_attribute (an unknown mode included). Then, in
# order, the first failing check decides.
#
# impersonation:
#   1. tenant: the agent's tenant, or one a cross-tenant support grant
#      (data.gatehouse.support) gives it, else tenant_mismatch;
#   2. scope: the agent's token carries a scope that grants token:exchange
#      (the catalog: support:impersonate), else insufficient_scope;
#   3. role: one of the agent's roles permits token:exchange (the catalog:
#      support_agent), else role_not_permitted;
#   4. the agent's token is not itself exchanged (no act claim), else
#      reexchange_not_permitted (impersonation.allow_reexchange lifts it);
#   5. ticket: a ticket_id, stated by a client of
#      impersonation.ticket_clients, else ticket_required;
#   6. lifetime: at most impersonation.max_lifetime_seconds (900), else
#      lifetime_exceeded;
#   7. scopes: each requested scope is one the agent's token carries, is
#      not forbidden (impersonation.forbidden_scopes, or a scope granting an
#      action whose verb is in forbidden_verbs: admin, approve), and is
#      read-only (every action it grants has a verb in read_verbs), or, when
#      ticket_access is "write", read or write (write_verbs), else
#      scope_not_permitted;
#   8. target: the new subject holds no admin role (impersonation.admin_roles,
#      or a role permitting an action whose verb is in admin_verbs), else
#      actor_not_permitted.
#
# delegation:
#   1. tenant: the actor's tenant, the new token's and the user's are one,
#      else tenant_mismatch;
#   2. actor: a delegate of data.delegates, acting for itself (actor_subject
#      == actor_client_id) and asking itself (client_id == actor_client_id),
#      else actor_not_permitted;
#   3. chain: the user's token carries at most max_actor_chain_depth actors
#      already, else actor_chain_too_long;
#   4. audience: one of the delegate's audiences, else actor_not_permitted;
#   5. scopes: each requested scope is the delegate's and the user's token
#      carries it, else scope_not_permitted;
#   6. lifetime: at most the delegate's max_lifetime_seconds, else
#      lifetime_exceeded.
#
# The ticket statements are trusted, not checked: the issuer cannot see
# tickets. The support service is their authority and decides
# support:impersonate on the ticket (gatehouse.support) before it asks for
# the exchange, and only the clients of impersonation.ticket_clients, which
# authenticate at the token endpoint, are believed (docs/pdp.md).
package gatehouse.exchange

import data.gatehouse.catalog
import data.gatehouse.outcome
import data.gatehouse.support

# actions are the actions gatehouse.main routes to this package.
actions := {"token:exchange"}

# limits are the impersonation rules' data (data.json: impersonation).
limits := data.gatehouse.exchange.impersonation

modes := {"impersonation", "delegation"}

# required are the attributes each mode needs, with their types.
required := {
	"impersonation": object.union(common_attributes, {"target_roles": "string"}),
	"delegation": object.union(common_attributes, {
		"actor_subject": "string",
		"actor_client_id": "string",
		"actor_tenant": "string",
	}),
}

common_attributes := {
	"mode": "string",
	"client_id": "string",
	"audience": "string",
	"scope": "string",
	"lifetime_seconds": "number",
	"subject_exchanged": "boolean",
}

optional := {"ticket_id": "string", "ticket_access": "string"}

# The input decides first; a valid input goes to the rules of its mode.
# Each mode's decision is a rule of its own, never an else of the other, so
# a failure in one can never be answered by the other's rules.
decision := input_decision if not input_ok

decision := impersonation_decision if {
	input_ok
	attributes.mode == "impersonation"
}

decision := delegation_decision if {
	input_ok
	attributes.mode == "delegation"
}

input_decision := outcome.deny("missing_attribute", "a token exchange check needs the mode attribute") if {
	not mode_present
} else := outcome.deny("invalid_attribute", "mode must be impersonation or delegation") if {
	not mode_known
} else := outcome.deny("missing_attribute", "a token exchange check needs the new subject and its mode's attributes") if {
	not attributes_present
} else := outcome.deny("invalid_attribute", "a token exchange attribute has the wrong type or an inconsistent value") if {
	not attributes_valid
}

impersonation_decision := outcome.deny("tenant_mismatch", "the customer is in a tenant the agent may not support") if {
	not impersonation_tenant_ok
} else := outcome.deny_scope(catalog.granting_scopes(input.action)) if {
	not scope_ok
} else := outcome.deny("role_not_permitted", "none of the principal's roles grants this action") if {
	not role_ok
} else := outcome.deny("reexchange_not_permitted", "an exchanged token cannot be exchanged for an impersonation") if {
	not reexchange_ok
} else := outcome.deny("ticket_required", "impersonation needs a support ticket stated by a trusted client") if {
	not ticket_stated
} else := outcome.deny("lifetime_exceeded", "the impersonation token would live longer than allowed") if {
	not impersonation_lifetime_ok
} else := outcome.deny("scope_not_permitted", "a requested scope is not permitted to an impersonation") if {
	not impersonation_scopes_ok
} else := outcome.deny("actor_not_permitted", "the customer holds an admin role and cannot be impersonated") if {
	not target_ok
} else := outcome.allow if {
	impersonation_tenant_ok
	scope_ok
	role_ok
	reexchange_ok
	ticket_stated
	impersonation_lifetime_ok
	impersonation_scopes_ok
	target_ok
}

delegation_decision := outcome.deny("tenant_mismatch", "the actor, the user and the new token must be in one tenant") if {
	not delegation_tenant_ok
} else := outcome.deny("actor_not_permitted", "the actor is not a delegate that may act for users") if {
	not delegate_ok
} else := outcome.deny("actor_chain_too_long", "the subject token already carries the longest actor chain allowed") if {
	not chain_ok
} else := outcome.deny("actor_not_permitted", "the delegate may not obtain tokens for this audience") if {
	not audience_ok
} else := outcome.deny("scope_not_permitted", "a requested scope is not permitted to the delegate") if {
	not delegation_scopes_ok
} else := outcome.deny("lifetime_exceeded", "the delegated token would live longer than allowed") if {
	not delegation_lifetime_ok
} else := outcome.allow if {
	delegation_tenant_ok
	delegate_ok
	chain_ok
	audience_ok
	delegation_scopes_ok
	delegation_lifetime_ok
}

# --- input ---

attributes := object.get(input.resource, "attributes", {})

actor_chain := object.get(input.principal, "actor_chain", [])

# input_ok: every attribute is present, typed and consistent.
input_ok if {
	mode_present
	mode_known
	attributes_present
	attributes_valid
}

mode_present if "mode" in object.keys(attributes)

mode_known if attributes.mode in modes

# requested are the requested scopes.
requested := {s | some s in split(attributes.scope, " "); s != ""}

# attributes_present: the new subject, and every attribute of the mode.
attributes_present if {
	object.get(input.resource, "id", "") != ""
	every name, _ in required[attributes.mode] {
		name in object.keys(attributes)
	}
	every name in actor_attributes[attributes.mode] {
		attributes[name] != ""
	}
}

# actor_attributes must not be empty in a mode.
actor_attributes := {
	"impersonation": set(),
	"delegation": {"actor_subject", "actor_client_id", "actor_tenant"},
}

attributes_valid if {
	every name, type in object.union(optional, required[attributes.mode]) {
		type_name(object.get(attributes, name, "")) == type
	}
	lifetime_valid
	mode_consistent
}

# lifetime_valid: a whole number of seconds, at least one.
lifetime_valid if {
	attributes.lifetime_seconds >= 1
	floor(attributes.lifetime_seconds) == attributes.lifetime_seconds
}

# An impersonation names no actor token, and says read or write.
mode_consistent if {
	attributes.mode == "impersonation"
	every name in {"actor_subject", "actor_client_id", "actor_tenant"} {
		object.get(attributes, name, "") == ""
	}
	object.get(attributes, "ticket_access", "") in {"", "read", "write"}
}

# A delegation keeps the subject token's subject.
mode_consistent if {
	attributes.mode == "delegation"
	input.resource.id == input.principal.subject
}

# --- impersonation ---
#
# Every check is a positive rule ("<check>_ok") denied with "not
# <check>_ok", so an absent input field or data member fails the check
# instead of skipping it.

impersonation_tenant_ok if support.supports(input.principal.tenant, input.resource.tenant)

scope_ok if catalog.scope_grants(input.principal.scopes, input.action)

role_ok if catalog.role_permits(input.principal.roles, input.action)

impersonation_lifetime_ok if attributes.lifetime_seconds <= limits.max_lifetime_seconds

reexchange_ok if {
	attributes.subject_exchanged == false
	count(actor_chain) == 0
}

reexchange_ok if limits.allow_reexchange == true

ticket_stated if {
	object.get(attributes, "ticket_id", "") != ""
	attributes.client_id in limits.ticket_clients
}

write_access if attributes.ticket_access == "write"

impersonation_scopes_ok if {
	is_array(limits.forbidden_scopes)
	is_array(limits.forbidden_verbs)
	every s in requested {
		s in input.principal.scopes
		impersonation_scope_permitted(s)
	}
}

impersonation_scope_permitted(s) if {
	not forbidden_scope(s)
	grants_only(s, {v | some v in limits.read_verbs})
}

impersonation_scope_permitted(s) if {
	write_access
	not forbidden_scope(s)
	grants_only(s, {v | some v in array.concat(limits.read_verbs, limits.write_verbs)})
}

# grants_only(scope, verbs): scope grants at least one action, and the
# verb of each is one of verbs.
grants_only(scope, verbs) if {
	count(catalog.verbs(scope)) > 0
	every v in catalog.verbs(scope) {
		v in verbs
	}
}

forbidden_scope(s) if s in limits.forbidden_scopes

forbidden_scope(s) if {
	some v in catalog.verbs(s)
	v in limits.forbidden_verbs
}

target_roles := {r | some r in split(attributes.target_roles, " "); r != ""}

# target_ok: the new subject holds no admin role.
target_ok if {
	is_array(limits.admin_roles)
	is_array(limits.admin_verbs)
	not admin_target
}

admin_target if {
	some r in target_roles
	r in limits.admin_roles
}

admin_target if {
	some r in target_roles
	some v in catalog.role_verbs(r)
	v in limits.admin_verbs
}

# --- delegation ---

delegate := data.gatehouse.exchange.delegates[attributes.actor_client_id]

delegation_tenant_ok if {
	input.principal.tenant != ""
	input.resource.tenant == input.principal.tenant
	attributes.actor_tenant == input.principal.tenant
}

delegate_ok if {
	_ = delegate
	attributes.actor_subject == attributes.actor_client_id
	attributes.client_id == attributes.actor_client_id
}

chain_ok if count(actor_chain) <= data.gatehouse.exchange.max_actor_chain_depth

audience_ok if attributes.audience in delegate.audiences

delegation_lifetime_ok if attributes.lifetime_seconds <= delegate.max_lifetime_seconds

delegation_scopes_ok if {
	every s in requested {
		s in delegate.scopes
		s in input.principal.scopes
	}
}
