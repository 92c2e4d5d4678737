# Tests of token:exchange, through data.gatehouse.main.decision, with the
# principals and clients of the demo seed.
package gatehouse.exchange_test

import data.gatehouse.main

# sam (acme, support_agent) signed in through support-console: the subject
# token of an impersonation.
sam := {
	"subject": "sam",
	"client_id": "support-console",
	"tenant": "acme",
	"roles": ["support_agent"],
	"scopes": ["invoice:read", "openid", "support:impersonate", "support:read"],
	"actor_chain": [],
}

# alice (acme, billing_approver) signed in through invoice-web: the subject
# token of a delegation to support-export.
alice := {
	"subject": "alice",
	"client_id": "invoice-web",
	"tenant": "acme",
	"roles": ["billing_approver"],
	"scopes": ["invoice:approve", "invoice:read", "invoice:write", "offline_access", "openid", "profile", "support:write"],
	"actor_chain": [],
}

# sam asks support-console to impersonate alice on her read ticket.
impersonate_alice := {"type": "token", "id": "alice", "tenant": "acme", "attributes": {
	"mode": "impersonation",
	"client_id": "support-console",
	"audience": "gatehouse-api",
	"scope": "invoice:read",
	"lifetime_seconds": 900,
	"subject_exchanged": false,
	"target_roles": "billing_approver",
	"ticket_id": "tkt_1",
	"ticket_access": "read",
	"actor_subject": "",
	"actor_client_id": "",
	"actor_tenant": "",
}}

# support-export (acting for itself) asks to act for alice.
delegate_for_alice := {"type": "token", "id": "alice", "tenant": "acme", "attributes": {
	"mode": "delegation",
	"client_id": "support-export",
	"audience": "gatehouse-api",
	"scope": "invoice:read",
	"lifetime_seconds": 300,
	"subject_exchanged": false,
	"actor_subject": "support-export",
	"actor_client_id": "support-export",
	"actor_tenant": "acme",
}}

with_attributes(resource, patch) := object.union(resource, {"attributes": patch})

without_attribute(resource, name) := json.remove(resource, [concat("/", ["attributes", name])])

decide(principal, resource) := d if {
	d := main.decision with input as {
		"principal": principal,
		"action": "token:exchange",
		"resource": resource,
		"context": {"request_id": "", "source_ip": "192.0.2.10", "time": "2026-11-26T09:00:00Z"},
	}
}

impersonate(patch) := decide(sam, with_attributes(impersonate_alice, patch))

delegate(patch) := decide(alice, with_attributes(delegate_for_alice, patch))

denied(d, code) if {
	d.decision == "deny"
	d.reason_code == code
	d.obligations == []
}

# --- dispatch ---

test_dispatched_on_type_token if {
	d := main.decision with input as {"principal": sam, "action": "token:exchange", "resource": object.union(impersonate_alice, {"type": "ticket"})}
	d.decision == "not_applicable"
}

test_other_token_action_not_applicable if {
	d := main.decision with input as {"principal": sam, "action": "token:revoke", "resource": impersonate_alice}
	d.reason_code == "no_applicable_policy"
}

# --- impersonation: allowed ---

test_impersonation_allowed if {
	d := decide(sam, impersonate_alice)
	d.decision == "allow"
	d.reason_code == "allowed"
	d.required_scopes == []
	d.obligations == []
}

test_impersonation_allowed_without_optional_attributes if {
	# ticket_access absent means read; the actor attributes may be absent.
	r := json.remove(impersonate_alice, ["attributes/ticket_access", "attributes/actor_subject", "attributes/actor_client_id", "attributes/actor_tenant"])
	decide(sam, r).decision == "allow"
}

test_impersonation_allowed_at_the_lifetime_limit_and_below if {
	impersonate({"lifetime_seconds": 900}).decision == "allow"
	impersonate({"lifetime_seconds": 1}).decision == "allow"
	impersonate({"lifetime_seconds": 300.0}).decision == "allow"
}

test_impersonation_allowed_with_several_read_only_scopes if {
	# support:read is read-only; invoice:read grants invoice:read and
	# support:export, both reads.
	impersonate({"scope": "invoice:read support:read"}).decision == "allow"
}

test_impersonation_allowed_without_scopes if {
	# A token without scopes can do nothing: nothing to refuse.
	impersonate({"scope": ""}).decision == "allow"
}

test_impersonation_of_a_user_without_roles if {
	impersonate({"target_roles": ""}).decision == "allow"
}

test_impersonation_with_write_ticket_allows_write_scopes if {
	p := object.union(sam, {"scopes": ["invoice:read", "invoice:write", "support:impersonate", "support:write"]})
	r := with_attributes(impersonate_alice, {"ticket_access": "write", "scope": "invoice:read invoice:write support:write"})
	decide(p, r).decision == "allow"
}

# --- impersonation: tenant_mismatch and the cross-tenant support grant ---

test_impersonation_other_tenant_denied if {
	d := decide(sam, object.union(impersonate_alice, {"id": "carol", "tenant": "globex"}))
	denied(d, "tenant_mismatch")
}

test_impersonation_agent_of_another_tenant_denied if {
	denied(decide(object.union(sam, {"tenant": "globex"}), impersonate_alice), "tenant_mismatch")
}

test_impersonation_cross_tenant_grant_honoured if {
	r := object.union(impersonate_alice, {"id": "carol", "tenant": "globex"})
	d := decide(sam, r) with data.gatehouse.support.cross_tenant_support as [{"agent_tenant": "acme", "customer_tenant": "globex"}]
	d.decision == "allow"
}

test_impersonation_cross_tenant_grant_is_directed if {
	# globex's agents may help acme's customers, not the other way round.
	r := object.union(impersonate_alice, {"id": "carol", "tenant": "globex"})
	d := decide(sam, r) with data.gatehouse.support.cross_tenant_support as [{"agent_tenant": "globex", "customer_tenant": "acme"}]
	denied(d, "tenant_mismatch")
}

test_impersonation_cross_tenant_grant_of_another_tenant_pair if {
	r := object.union(impersonate_alice, {"id": "carol", "tenant": "globex"})
	d := decide(sam, r) with data.gatehouse.support.cross_tenant_support as [{"agent_tenant": "acme", "customer_tenant": "initech"}]
	denied(d, "tenant_mismatch")
}

test_impersonation_empty_tenants_denied if {
	p := object.union(sam, {"tenant": ""})
	r := object.union(impersonate_alice, {"tenant": ""})
	denied(decide(p, r), "tenant_mismatch")
}

test_demo_has_no_cross_tenant_grant if {
	data.gatehouse.support.cross_tenant_support == []
}

# --- impersonation: insufficient_scope, role_not_permitted ---

test_impersonation_without_impersonate_scope if {
	d := decide(object.union(sam, {"scopes": ["invoice:read", "openid", "support:read"]}), impersonate_alice)
	denied(d, "insufficient_scope")
	d.required_scopes == ["support:impersonate"]
}

test_impersonation_by_a_customer_denied if {
	# alice holds no role that permits token:exchange.
	p := object.union(alice, {"scopes": ["invoice:read", "support:impersonate"]})
	r := object.union(impersonate_alice, {"id": "bob", "attributes": {"target_roles": "billing_viewer"}})
	denied(decide(p, r), "role_not_permitted")
}

test_impersonation_by_a_client_acting_for_itself_denied if {
	p := {"subject": "support-console", "client_id": "support-console", "tenant": "acme", "roles": [], "scopes": ["support:impersonate"], "actor_chain": []}
	denied(decide(p, impersonate_alice), "role_not_permitted")
}

test_impersonation_order_tenant_scope_role if {
	p := object.union(alice, {"tenant": "globex", "scopes": ["openid"]})
	denied(decide(p, impersonate_alice), "tenant_mismatch")
	denied(decide(object.union(alice, {"scopes": ["openid"]}), impersonate_alice), "insufficient_scope")
}

# --- impersonation: reexchange_not_permitted ---

test_reexchange_of_an_exchanged_subject_denied if {
	denied(impersonate({"subject_exchanged": true}), "reexchange_not_permitted")
}

test_reexchange_of_a_token_with_actor_chain_denied if {
	p := object.union(sam, {"actor_chain": [{"subject": "mallory", "client_id": "support-console"}]})
	denied(decide(p, impersonate_alice), "reexchange_not_permitted")
}

test_reexchange_allowed_when_data_allows if {
	d := impersonate({"subject_exchanged": true}) with data.gatehouse.exchange.impersonation.allow_reexchange as true
	d.decision == "allow"
}

# --- impersonation: ticket_required ---

test_impersonation_without_ticket_denied if {
	denied(impersonate({"ticket_id": ""}), "ticket_required")
	denied(decide(sam, without_attribute(impersonate_alice, "ticket_id")), "ticket_required")
}

test_ticket_stated_by_an_untrusted_client_denied if {
	denied(impersonate({"client_id": "billing-bot"}), "ticket_required")
}

test_ticket_clients_come_from_data if {
	d := impersonate({"client_id": "helpdesk"}) with data.gatehouse.exchange.impersonation.ticket_clients as ["helpdesk"]
	d.decision == "allow"
}

test_order_reexchange_before_ticket if {
	denied(impersonate({"subject_exchanged": true, "ticket_id": ""}), "reexchange_not_permitted")
}

# --- impersonation: lifetime_exceeded ---

test_impersonation_longer_than_15_minutes_denied if {
	denied(impersonate({"lifetime_seconds": 901}), "lifetime_exceeded")
	denied(impersonate({"lifetime_seconds": 3600}), "lifetime_exceeded")
}

test_impersonation_lifetime_limit_from_data if {
	d := impersonate({"lifetime_seconds": 600}) with data.gatehouse.exchange.impersonation.max_lifetime_seconds as 300
	denied(d, "lifetime_exceeded")
}

test_impersonation_without_lifetime_limit_denied if {
	d := impersonate({}) with data.gatehouse.exchange.impersonation as object.remove(data.gatehouse.exchange.impersonation, ["max_lifetime_seconds"])
	denied(d, "lifetime_exceeded")
}

test_order_ticket_before_lifetime if {
	denied(impersonate({"ticket_id": "", "lifetime_seconds": 3600}), "ticket_required")
}

# --- impersonation: scope_not_permitted ---

test_impersonation_write_scope_on_read_ticket_denied if {
	p := object.union(sam, {"scopes": ["invoice:read", "invoice:write", "support:impersonate"]})
	d := decide(p, with_attributes(impersonate_alice, {"scope": "invoice:read invoice:write"}))
	denied(d, "scope_not_permitted")
	d.required_scopes == []
}

test_impersonation_write_scope_without_ticket_access_denied if {
	p := object.union(sam, {"scopes": ["invoice:write", "support:impersonate"]})
	denied(decide(p, without_attribute(with_attributes(impersonate_alice, {"scope": "invoice:write"}), "ticket_access")), "scope_not_permitted")
}

test_impersonation_never_approve_or_admin_scopes if {
	every s in ["invoice:approve", "policy:admin", "keys:admin", "revocations:read"] {
		p := object.union(sam, {"scopes": ["support:impersonate", s]})
		r := with_attributes(impersonate_alice, {"ticket_access": "write", "scope": s})
		denied(decide(p, r), "scope_not_permitted")
	}
}

test_impersonation_never_a_scope_granting_an_admin_verb if {
	# A future scope is refused by the verbs of what it grants.
	scopes := object.union(data.gatehouse.scopes, {"tenant:manage": {"operations": ["tenant:write", "tenant:admin"]}})
	p := object.union(sam, {"scopes": ["support:impersonate", "tenant:manage"]})
	r := with_attributes(impersonate_alice, {"ticket_access": "write", "scope": "tenant:manage"})
	d := decide(p, r) with data.gatehouse.scopes as scopes
	denied(d, "scope_not_permitted")
}

test_impersonation_never_the_impersonate_scope if {
	# An impersonation token cannot impersonate again, even on a write ticket.
	denied(impersonate({"scope": "support:impersonate"}), "scope_not_permitted")
	denied(impersonate({"scope": "support:impersonate", "ticket_access": "write"}), "scope_not_permitted")
}

test_impersonation_never_oidc_or_unknown_scopes if {
	denied(impersonate({"scope": "openid"}), "scope_not_permitted")
	p := object.union(sam, {"scopes": ["invoice:read", "ledger:read", "support:impersonate"]})
	denied(decide(p, with_attributes(impersonate_alice, {"scope": "ledger:read"})), "scope_not_permitted")
}

test_impersonation_never_wider_than_the_agent_token if {
	# support:write is a write scope the ticket allows, but sam's token lacks it.
	denied(impersonate({"ticket_access": "write", "scope": "support:write"}), "scope_not_permitted")
}

test_impersonation_scope_classes_come_from_data if {
	d := impersonate({"scope": "invoice:read"}) with data.gatehouse.exchange.impersonation.read_verbs as ["read"]

	# invoice:read also grants support:export: with only "read" a read verb,
	# the scope is no longer read-only.
	denied(d, "scope_not_permitted")
}

test_order_lifetime_before_scope if {
	denied(impersonate({"lifetime_seconds": 901, "scope": "invoice:approve"}), "lifetime_exceeded")
}

# --- impersonation: an admin target (actor_not_permitted) ---

test_impersonation_of_an_admin_denied if {
	denied(impersonate({"target_roles": "admin billing_viewer"}), "actor_not_permitted")
}

test_impersonation_of_a_role_with_admin_permissions_denied if {
	roles := object.union(data.gatehouse.roles, {"platform_operator": {"permissions": ["policy:admin"]}})
	d := impersonate({"target_roles": "platform_operator"}) with data.gatehouse.roles as roles
	denied(d, "actor_not_permitted")
}

test_impersonation_of_approvers_and_unknown_roles_allowed if {
	# An approver is a customer, not an administrator; a role the catalog
	# does not know permits nothing.
	impersonate({"target_roles": "billing_approver billing_viewer"}).decision == "allow"
	impersonate({"target_roles": "auditor"}).decision == "allow"
}

test_order_scope_before_target if {
	denied(impersonate({"target_roles": "admin", "scope": "invoice:approve"}), "scope_not_permitted")
}

# --- delegation: allowed ---

test_delegation_allowed if {
	d := decide(alice, delegate_for_alice)
	d.decision == "allow"
	d.reason_code == "allowed"
}

test_delegation_chain_allowed_up_to_the_depth if {
	# alice's token already carries support-export and sam (depth 2, then 3).
	two := object.union(alice, {"actor_chain": [{"subject": "support-export", "client_id": "support-export"}, {"subject": "sam", "client_id": "support-console"}]})
	delegate_chain(two, true).decision == "allow"
	three := object.union(alice, {"actor_chain": array.concat(two.actor_chain, [{"subject": "x", "client_id": "y"}])})
	delegate_chain(three, true).decision == "allow"
}

delegate_chain(principal, exchanged) := decide(principal, with_attributes(delegate_for_alice, {"subject_exchanged": exchanged}))

test_delegation_for_an_impersonated_customer if {
	# sam impersonating alice runs the export: support-export acts for alice,
	# sam stays in the chain.
	p := object.union(alice, {"scopes": ["invoice:read"], "actor_chain": [{"subject": "sam", "client_id": "support-console"}]})
	delegate_chain(p, true).decision == "allow"
}

test_delegation_without_ticket_attributes if {
	# Ticket attributes are irrelevant to a delegation.
	delegate({"ticket_id": "", "ticket_access": ""}).decision == "allow"
}

# --- delegation: actor_chain_too_long ---

test_delegation_chain_too_long if {
	chain := [{"subject": "a", "client_id": "a"}, {"subject": "b", "client_id": "b"}, {"subject": "c", "client_id": "c"}, {"subject": "d", "client_id": "d"}]
	denied(delegate_chain(object.union(alice, {"actor_chain": chain}), true), "actor_chain_too_long")
}

test_delegation_chain_depth_from_data if {
	p := object.union(alice, {"actor_chain": [{"subject": "sam", "client_id": "support-console"}]})
	d := delegate_chain(p, true) with data.gatehouse.exchange.max_actor_chain_depth as 0
	denied(d, "actor_chain_too_long")
	delegate_chain(alice, false).decision == "allow" with data.gatehouse.exchange.max_actor_chain_depth as 0
}

# --- delegation: tenant_mismatch ---

test_delegation_actor_of_another_tenant if {
	denied(delegate({"actor_tenant": "globex"}), "tenant_mismatch")
}

test_delegation_for_a_user_of_another_tenant if {
	carol := object.union(alice, {"subject": "carol", "tenant": "globex"})
	r := object.union(delegate_for_alice, {"id": "carol", "tenant": "globex"})
	denied(decide(carol, r), "tenant_mismatch")
}

test_delegation_new_token_in_another_tenant if {
	denied(decide(alice, object.union(delegate_for_alice, {"tenant": "globex"})), "tenant_mismatch")
}

test_delegation_ignores_cross_tenant_support_grants if {
	d := delegate({"actor_tenant": "globex"}) with data.gatehouse.support.cross_tenant_support as [{"agent_tenant": "globex", "customer_tenant": "acme"}]
	denied(d, "tenant_mismatch")
}

# --- delegation: actor_not_permitted ---

test_delegation_by_a_client_that_is_no_delegate if {
	denied(delegate({"actor_subject": "billing-bot", "actor_client_id": "billing-bot", "client_id": "billing-bot"}), "actor_not_permitted")
}

test_delegation_actor_must_be_the_delegate_itself if {
	# A user signed in through support-export is not the delegate.
	denied(delegate({"actor_subject": "mallory"}), "actor_not_permitted")
}

test_delegation_asked_by_another_client if {
	denied(delegate({"client_id": "support-console"}), "actor_not_permitted")
}

test_delegation_to_an_audience_not_allowed if {
	denied(delegate({"audience": "gatehouse-pdp"}), "actor_not_permitted")
}

test_delegates_come_from_data if {
	delegates := {"nightly-report": {"audiences": ["gatehouse-api"], "scopes": ["invoice:read"], "max_lifetime_seconds": 60}}
	d := delegate({"actor_subject": "nightly-report", "actor_client_id": "nightly-report", "client_id": "nightly-report", "lifetime_seconds": 60}) with data.gatehouse.exchange.delegates as delegates
	d.decision == "allow"
	d2 := delegate({}) with data.gatehouse.exchange.delegates as delegates
	denied(d2, "actor_not_permitted")
}

test_demo_delegates if {
	data.gatehouse.exchange.delegates == {"support-export": {"audiences": ["gatehouse-api"], "scopes": ["invoice:read"], "max_lifetime_seconds": 300}}
}

test_order_tenant_before_actor if {
	denied(delegate({"actor_tenant": "globex", "actor_client_id": "billing-bot"}), "tenant_mismatch")
}

test_order_actor_before_chain if {
	chain := [{"subject": "a", "client_id": "a"}, {"subject": "b", "client_id": "b"}, {"subject": "c", "client_id": "c"}, {"subject": "d", "client_id": "d"}]
	p := object.union(alice, {"actor_chain": chain})
	d := decide(p, with_attributes(delegate_for_alice, {"actor_subject": "billing-bot", "actor_client_id": "billing-bot", "client_id": "billing-bot"}))
	denied(d, "actor_not_permitted")
}

# --- delegation: scope_not_permitted ---

test_delegation_scope_beyond_the_delegate if {
	denied(delegate({"scope": "invoice:read invoice:write"}), "scope_not_permitted")
}

test_delegation_scope_beyond_the_user if {
	p := object.union(alice, {"scopes": ["openid"]})
	denied(decide(p, delegate_for_alice), "scope_not_permitted")
}

test_order_audience_before_scope if {
	denied(delegate({"audience": "other", "scope": "invoice:write"}), "actor_not_permitted")
}

# --- delegation: lifetime_exceeded ---

test_delegation_longer_than_the_delegate_may if {
	denied(delegate({"lifetime_seconds": 301}), "lifetime_exceeded")
	delegate({"lifetime_seconds": 299}).decision == "allow"
}

test_order_scope_before_lifetime if {
	denied(delegate({"scope": "invoice:write", "lifetime_seconds": 3600}), "scope_not_permitted")
}

# --- the input: missing_attribute, invalid_attribute ---

test_missing_mode if {
	denied(decide(sam, without_attribute(impersonate_alice, "mode")), "missing_attribute")
	denied(decide(sam, object.remove(impersonate_alice, ["attributes"])), "missing_attribute")
}

test_unknown_mode if {
	d := impersonate({"mode": "self"})
	denied(d, "invalid_attribute")
	d.message == "mode must be impersonation or delegation"
	denied(impersonate({"mode": "Impersonation"}), "invalid_attribute")
	denied(impersonate({"mode": 1}), "invalid_attribute")
}

test_missing_required_attribute_impersonation if {
	every name in ["client_id", "audience", "scope", "lifetime_seconds", "subject_exchanged", "target_roles"] {
		denied(decide(sam, without_attribute(impersonate_alice, name)), "missing_attribute")
	}
}

test_missing_required_attribute_delegation if {
	every name in ["client_id", "audience", "scope", "lifetime_seconds", "subject_exchanged", "actor_subject", "actor_client_id", "actor_tenant"] {
		denied(decide(alice, without_attribute(delegate_for_alice, name)), "missing_attribute")
	}
}

test_empty_actor_attributes_of_a_delegation_are_missing if {
	every name in ["actor_subject", "actor_client_id", "actor_tenant"] {
		denied(delegate({name: ""}), "missing_attribute")
	}
}

test_missing_new_subject if {
	denied(decide(sam, object.remove(impersonate_alice, ["id"])), "missing_attribute")
	denied(decide(sam, object.union(impersonate_alice, {"id": ""})), "missing_attribute")
}

test_attribute_of_the_wrong_type if {
	denied(impersonate({"lifetime_seconds": "900"}), "invalid_attribute")
	denied(impersonate({"subject_exchanged": "false"}), "invalid_attribute")
	denied(impersonate({"scope": ["invoice:read"]}), "invalid_attribute")
	denied(impersonate({"target_roles": 0}), "invalid_attribute")
	denied(impersonate({"ticket_id": 7}), "invalid_attribute")
	denied(delegate({"actor_tenant": 1}), "invalid_attribute")
}

test_lifetime_not_a_positive_whole_number if {
	denied(impersonate({"lifetime_seconds": 0}), "invalid_attribute")
	denied(impersonate({"lifetime_seconds": -60}), "invalid_attribute")
	denied(impersonate({"lifetime_seconds": 1.5}), "invalid_attribute")
}

test_unknown_ticket_access if {
	denied(impersonate({"ticket_access": "admin"}), "invalid_attribute")
	denied(impersonate({"ticket_access": "WRITE"}), "invalid_attribute")
}

test_impersonation_with_an_actor_token if {
	# An actor token makes it a delegation: an inconsistent request.
	denied(impersonate({"actor_subject": "support-export"}), "invalid_attribute")
}

test_delegation_changing_the_subject if {
	# A delegated token keeps the subject token's subject.
	denied(decide(alice, object.union(delegate_for_alice, {"id": "bob"})), "invalid_attribute")
}

test_order_input_before_rules if {
	# A cross-tenant request with a missing attribute: the input decides.
	p := object.union(sam, {"tenant": "globex"})
	denied(decide(p, without_attribute(impersonate_alice, "scope")), "missing_attribute")
}
