# Tests of the invoice policy, through data.gatehouse.main.decision (the one
# query the PDP evaluates), with principals from the demo seed.
package gatehouse.invoice_test

import data.gatehouse.main

# Principals as the PDP passes them: normalized, every field present.

reporting_job := {
	"subject": "reporting-job",
	"client_id": "reporting-job",
	"tenant": "acme",
	"roles": [],
	"scopes": ["invoice:read"],
}

billing_bot := {
	"subject": "billing-bot",
	"client_id": "billing-bot",
	"tenant": "acme",
	"roles": [],
	"scopes": ["invoice:read", "invoice:write"],
}

# bob (billing_viewer) and alice (billing_approver) through invoice-web.
bob := {
	"subject": "bob",
	"client_id": "invoice-web",
	"tenant": "acme",
	"roles": ["billing_viewer"],
	"scopes": ["invoice:read", "invoice:write", "openid"],
}

alice := object.union(bob, {"subject": "alice", "roles": ["billing_approver"]})

carol := object.union(alice, {"subject": "carol", "tenant": "globex"})

# sam (support_agent) through support-console.
sam := {
	"subject": "sam",
	"client_id": "support-console",
	"tenant": "acme",
	"roles": ["support_agent"],
	"scopes": ["invoice:read", "openid", "support:read"],
}

acme_invoice := {"type": "invoice", "id": "inv-1001", "tenant": "acme", "attributes": {}}

globex_invoice := object.union(acme_invoice, {"id": "inv-2001", "tenant": "globex"})

req(principal, action, resource) := {"principal": principal, "action": action, "resource": resource}

decide(principal, action, resource) := d if {
	d := main.decision with input as req(principal, action, resource)
}

# --- allow ---

test_allow_client_acting_for_itself_reads if {
	d := decide(reporting_job, "invoice:read", acme_invoice)
	d.decision == "allow"
	d.reason_code == "allowed"
	d.required_scopes == []
	d.obligations == []
}

test_deny_client_shaped_principal_with_actor_chain if {
	d := decide(object.union(billing_bot, {"actor_chain": [{"subject": "mallory"}]}), "invoice:write", acme_invoice)
	d.decision == "deny"
	d.reason_code == "role_not_permitted"
}

test_allow_client_acting_for_itself_writes if {
	decide(billing_bot, "invoice:write", acme_invoice).decision == "allow"
}

test_allow_billing_viewer_reads if {
	decide(bob, "invoice:read", acme_invoice).decision == "allow"
}

test_allow_billing_approver_writes if {
	decide(alice, "invoice:write", acme_invoice).decision == "allow"
}

test_allow_support_agent_reads if {
	decide(sam, "invoice:read", acme_invoice).decision == "allow"
}

test_allow_one_of_several_roles_grants if {
	p := object.union(bob, {"roles": ["auditor", "billing_approver"]})
	decide(p, "invoice:write", acme_invoice).decision == "allow"
}

test_allow_collection_level_with_principal_tenant if {
	# The PDP fills an empty resource tenant with the principal's tenant.
	decide(bob, "invoice:read", {"type": "invoice", "id": "", "tenant": "acme", "attributes": {}}).decision == "allow"
}

# --- tenant_mismatch ---

test_deny_cross_tenant_user if {
	d := decide(carol, "invoice:read", acme_invoice)
	d.decision == "deny"
	d.reason_code == "tenant_mismatch"
	d.required_scopes == []
}

test_deny_cross_tenant_client if {
	decide(reporting_job, "invoice:read", globex_invoice).reason_code == "tenant_mismatch"
}

test_deny_missing_resource_tenant if {
	decide(bob, "invoice:read", object.remove(acme_invoice, ["tenant"])).reason_code == "tenant_mismatch"
}

test_deny_empty_tenants if {
	p := object.union(bob, {"tenant": ""})
	r := object.union(acme_invoice, {"tenant": ""})
	decide(p, "invoice:read", r).reason_code == "tenant_mismatch"
}

# --- insufficient_scope ---

test_deny_client_without_scope if {
	d := decide(reporting_job, "invoice:write", acme_invoice)
	d.decision == "deny"
	d.reason_code == "insufficient_scope"
	d.required_scopes == ["invoice:write"]
}

test_deny_user_without_scope_despite_role if {
	p := object.union(alice, {"scopes": ["openid"]})
	d := decide(p, "invoice:read", acme_invoice)
	d.reason_code == "insufficient_scope"
	d.required_scopes == ["invoice:read"]
}

test_deny_missing_scopes_field if {
	d := decide(object.remove(bob, ["scopes"]), "invoice:read", acme_invoice)
	d.reason_code == "insufficient_scope"
}

# --- role_not_permitted ---

test_deny_billing_viewer_writes if {
	d := decide(bob, "invoice:write", acme_invoice)
	d.decision == "deny"
	d.reason_code == "role_not_permitted"
	d.required_scopes == []
}

test_deny_support_agent_writes if {
	p := object.union(sam, {"scopes": ["invoice:write"]})
	decide(p, "invoice:write", acme_invoice).reason_code == "role_not_permitted"
}

test_deny_user_without_roles if {
	decide(object.union(bob, {"roles": []}), "invoice:read", acme_invoice).reason_code == "role_not_permitted"
}

test_deny_unknown_role if {
	decide(object.union(bob, {"roles": ["billing_admin"]}), "invoice:read", acme_invoice).reason_code == "role_not_permitted"
}

test_deny_user_without_client_id_is_not_a_client if {
	p := object.union(reporting_job, {"client_id": ""})
	decide(p, "invoice:read", acme_invoice).reason_code == "role_not_permitted"
}

test_deny_user_through_client_needs_role if {
	# A user (subject != client_id) of a client with the scope still needs a role.
	p := object.union(billing_bot, {"subject": "mallory"})
	decide(p, "invoice:write", acme_invoice).reason_code == "role_not_permitted"
}

# --- order of checks: tenant, then scope, then role ---

test_order_tenant_before_scope if {
	# Cross-tenant and lacking the scope: the tenant decides.
	decide(reporting_job, "invoice:write", globex_invoice).reason_code == "tenant_mismatch"
}

test_order_scope_before_role if {
	# Lacking both the scope and the role: the scope decides.
	p := object.union(bob, {"scopes": ["openid"]})
	decide(p, "invoice:write", acme_invoice).reason_code == "insufficient_scope"
}

test_order_tenant_before_role if {
	decide(object.union(carol, {"roles": []}), "invoice:read", acme_invoice).reason_code == "tenant_mismatch"
}

# --- the scope an action needs comes from the catalog (data.gatehouse.scopes) ---

test_deny_oidc_scopes_grant_no_action if {
	p := object.union(bob, {"scopes": ["openid", "profile", "offline_access"]})
	d := decide(p, "invoice:read", acme_invoice)
	d.reason_code == "insufficient_scope"
	d.required_scopes == ["invoice:read"]
}

test_deny_scope_of_another_action if {
	p := object.union(alice, {"scopes": ["invoice:approve", "support:read"]})
	decide(p, "invoice:write", acme_invoice).reason_code == "insufficient_scope"
}

# A catalog where a broad scope grants several actions.
broad_catalog := object.union(data.gatehouse.scopes, {"invoice:all": {
	"description": "Everything about invoices.",
	"operations": ["invoice:read", "invoice:write"],
}})

test_allow_any_granting_scope_suffices if {
	p := object.union(billing_bot, {"scopes": ["invoice:all"]})
	d := main.decision with input as req(p, "invoice:write", acme_invoice)
		with data.gatehouse.scopes as broad_catalog
	d.decision == "allow"
}

test_deny_names_every_granting_scope_sorted if {
	d := main.decision with input as req(reporting_job, "invoice:write", acme_invoice)
		with data.gatehouse.scopes as broad_catalog
	d.reason_code == "insufficient_scope"
	d.required_scopes == ["invoice:all", "invoice:write"]
}

test_deny_action_no_scope_grants if {
	# Fail closed: with no scope granting invoice:write, no token has it.
	d := main.decision with input as req(billing_bot, "invoice:write", acme_invoice)
		with data.gatehouse.scopes as object.remove(data.gatehouse.scopes, ["invoice:write"])
	d.decision == "deny"
	d.reason_code == "insufficient_scope"
	d.required_scopes == []
}
