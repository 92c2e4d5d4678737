# Tests of the support service's ticket actions, through
# data.gatehouse.main.decision, with the principals of the demo seed.
package gatehouse.support_test

import data.gatehouse.main

# sam (acme, support_agent) through support-console.
sam := {
	"subject": "sam",
	"client_id": "support-console",
	"tenant": "acme",
	"roles": ["support_agent"],
	"scopes": ["invoice:read", "openid", "support:impersonate", "support:read"],
	"actor_chain": [],
}

# Customers through invoice-web, which grants support:write.
alice := {
	"subject": "alice",
	"client_id": "invoice-web",
	"tenant": "acme",
	"roles": ["billing_approver"],
	"scopes": ["invoice:approve", "invoice:read", "invoice:write", "openid", "support:write"],
	"actor_chain": [],
}

bob := object.union(alice, {"subject": "bob", "roles": ["billing_viewer"]})

carol := object.union(alice, {"subject": "carol", "tenant": "globex"})

# globex's agent, for the cross-tenant grant.
gina := object.union(sam, {"subject": "gina", "tenant": "globex"})

# reporting-job acting for itself.
reporting_job := {
	"subject": "reporting-job",
	"client_id": "reporting-job",
	"tenant": "acme",
	"roles": [],
	"scopes": ["invoice:read"],
	"actor_chain": [],
}

# alice as sam sees her while impersonating her.
alice_impersonated := object.union(alice, {
	"scopes": ["invoice:read", "support:read", "support:write"],
	"actor_chain": [{"subject": "sam", "client_id": "support-console"}],
})

alices_ticket := {"type": "support", "id": "tkt_1", "tenant": "acme", "attributes": {
	"customer": "alice", "status": "open", "access": "read",
}}

closed_ticket := object.union(alices_ticket, {"attributes": {"status": "closed"}})

# A collection-level check: the gateway's route check, a list, a create.
acme_tickets := {"type": "support", "id": "", "tenant": "acme", "attributes": {}}

globex_ticket := {"type": "support", "id": "tkt_9", "tenant": "globex", "attributes": {
	"customer": "carol", "status": "open", "access": "read",
}}

acme_to_globex := [{"agent_tenant": "acme", "customer_tenant": "globex"}]

decide(principal, action, resource) := d if {
	d := main.decision with input as {
		"principal": principal,
		"action": action,
		"resource": resource,
		"context": {"request_id": "", "source_ip": "192.0.2.10", "time": "2026-11-26T09:00:00Z"},
	}
}

allowed(principal, action, resource) if {
	d := decide(principal, action, resource)
	d.decision == "allow"
	d.reason_code == "allowed"
	d.obligations == []
}

denied(d, code) if {
	d.decision == "deny"
	d.reason_code == code
	d.obligations == []
}

# --- dispatch ---

test_dispatched_on_type_support if {
	d := main.decision with input as {"principal": sam, "action": "support:read", "resource": object.union(alices_ticket, {"type": "ticket"})}
	d.reason_code == "no_applicable_policy"
}

test_uncovered_support_action_not_applicable if {
	decide(sam, "support:delete", alices_ticket).decision == "not_applicable"
}

# --- support:write ---

test_write_customer_opens_own_ticket if {
	allowed(alice, "support:write", acme_tickets)
	allowed(bob, "support:write", object.union(acme_tickets, {"attributes": {"customer": "bob"}}))
	allowed(alice, "support:write", alices_ticket)
}

test_write_other_tenant if {
	denied(decide(carol, "support:write", acme_tickets), "tenant_mismatch")
}

test_write_no_cross_tenant_grant if {
	d := decide(carol, "support:write", acme_tickets) with data.gatehouse.support.cross_tenant_support as [{"agent_tenant": "globex", "customer_tenant": "acme"}]
	denied(d, "tenant_mismatch")
}

test_write_without_scope if {
	d := decide(sam, "support:write", acme_tickets)
	denied(d, "insufficient_scope")
	d.required_scopes == ["support:write"]
}

test_write_acting_for_the_customer if {
	# sam impersonating alice cannot consent for her.
	denied(decide(alice_impersonated, "support:write", acme_tickets), "actor_not_permitted")
}

test_write_client_acting_for_itself if {
	bot := object.union(reporting_job, {"scopes": ["support:write"]})
	denied(decide(bot, "support:write", acme_tickets), "role_not_permitted")
}

test_write_for_someone_else if {
	denied(decide(bob, "support:write", alices_ticket), "role_not_permitted")
	denied(decide(bob, "support:write", object.union(acme_tickets, {"attributes": {"customer": "alice"}})), "role_not_permitted")
}

test_write_one_ticket_without_customer if {
	denied(decide(alice, "support:write", json.remove(alices_ticket, ["attributes/customer"])), "missing_attribute")
}

test_write_customer_not_a_string if {
	denied(decide(alice, "support:write", object.union(alices_ticket, {"attributes": {"customer": 1}})), "invalid_attribute")
}

# --- support:read ---

test_read_agent_reads_tenant_tickets if {
	allowed(sam, "support:read", alices_ticket)
	allowed(sam, "support:read", closed_ticket)
	allowed(sam, "support:read", acme_tickets)
}

test_read_customer_reads_own_tickets if {
	# invoice-web's support:write grants support:read of one's own tickets.
	allowed(alice, "support:read", alices_ticket)
	allowed(alice, "support:read", object.union(acme_tickets, {"attributes": {"customer": "alice"}}))
	allowed(alice, "support:read", acme_tickets)
}

test_read_every_customers_tickets_is_for_agents if {
	# customer "" asks about the tenant's tickets, whoever their customer.
	everyones := object.union(acme_tickets, {"attributes": {"customer": ""}})
	allowed(sam, "support:read", everyones)
	denied(decide(alice, "support:read", everyones), "role_not_permitted")
}

test_read_customer_reads_another_customers_ticket if {
	d := decide(bob, "support:read", alices_ticket)
	denied(d, "role_not_permitted")
	denied(decide(bob, "support:read", object.union(acme_tickets, {"attributes": {"customer": "alice"}})), "role_not_permitted")
}

test_read_agent_of_another_tenant if {
	denied(decide(gina, "support:read", alices_ticket), "tenant_mismatch")
}

test_read_customer_of_another_tenant if {
	denied(decide(carol, "support:read", alices_ticket), "tenant_mismatch")
}

test_read_with_cross_tenant_grant if {
	allowed(sam, "support:read", globex_ticket) with data.gatehouse.support.cross_tenant_support as acme_to_globex
	denied(decide(sam, "support:read", globex_ticket), "tenant_mismatch")
}

test_read_grant_does_not_make_customers_agents if {
	# A grant lets acme's agents help globex; acme's customers still see
	# only their own tickets.
	d := decide(alice, "support:read", globex_ticket) with data.gatehouse.support.cross_tenant_support as acme_to_globex
	denied(d, "role_not_permitted")
	d2 := decide(object.union(alice, {"subject": "carol"}), "support:read", globex_ticket) with data.gatehouse.support.cross_tenant_support as acme_to_globex
	denied(d2, "role_not_permitted")
}

test_read_without_scope if {
	d := decide(object.union(sam, {"scopes": ["invoice:read"]}), "support:read", alices_ticket)
	denied(d, "insufficient_scope")
	d.required_scopes == ["support:read", "support:write"]
}

test_read_client_acting_for_itself if {
	bot := object.union(reporting_job, {"scopes": ["support:read"]})
	denied(decide(bot, "support:read", acme_tickets), "role_not_permitted")
}

test_read_one_ticket_without_customer if {
	denied(decide(sam, "support:read", json.remove(alices_ticket, ["attributes/customer"])), "missing_attribute")
}

test_read_customer_not_a_string if {
	denied(decide(alice, "support:read", object.union(alices_ticket, {"attributes": {"customer": true}})), "invalid_attribute")
}

test_read_order_tenant_scope_reader if {
	denied(decide(object.union(carol, {"scopes": []}), "support:read", alices_ticket), "tenant_mismatch")
	denied(decide(object.union(bob, {"scopes": []}), "support:read", alices_ticket), "insufficient_scope")
}

# --- support:impersonate ---

test_impersonate_open_ticket if {
	allowed(sam, "support:impersonate", alices_ticket)
	allowed(sam, "support:impersonate", json.remove(alices_ticket, ["attributes/access"]))
}

test_impersonate_collection_level if {
	allowed(sam, "support:impersonate", acme_tickets)
}

test_impersonate_closed_ticket if {
	d := decide(sam, "support:impersonate", closed_ticket)
	denied(d, "no_open_ticket")
}

test_impersonate_other_tenant if {
	denied(decide(gina, "support:impersonate", alices_ticket), "tenant_mismatch")
}

test_impersonate_with_cross_tenant_grant if {
	allowed(sam, "support:impersonate", globex_ticket) with data.gatehouse.support.cross_tenant_support as acme_to_globex
}

test_impersonate_without_scope if {
	d := decide(object.union(sam, {"scopes": ["support:read"]}), "support:impersonate", alices_ticket)
	denied(d, "insufficient_scope")
	d.required_scopes == ["support:impersonate"]
}

test_impersonate_by_a_customer if {
	p := object.union(bob, {"scopes": ["support:impersonate"]})
	denied(decide(p, "support:impersonate", alices_ticket), "role_not_permitted")
}

test_impersonate_with_an_exchanged_token if {
	p := object.union(sam, {"actor_chain": [{"subject": "mallory", "client_id": "support-console"}]})
	denied(decide(p, "support:impersonate", alices_ticket), "reexchange_not_permitted")
}

test_impersonate_ticket_without_status_or_customer if {
	denied(decide(sam, "support:impersonate", json.remove(alices_ticket, ["attributes/status"])), "missing_attribute")
	denied(decide(sam, "support:impersonate", json.remove(alices_ticket, ["attributes/customer"])), "missing_attribute")
	denied(decide(sam, "support:impersonate", object.remove(alices_ticket, ["attributes"])), "missing_attribute")
}

test_impersonate_ticket_with_malformed_attributes if {
	denied(decide(sam, "support:impersonate", object.union(alices_ticket, {"attributes": {"status": "OPEN"}})), "invalid_attribute")
	denied(decide(sam, "support:impersonate", object.union(alices_ticket, {"attributes": {"status": true}})), "invalid_attribute")
	denied(decide(sam, "support:impersonate", object.union(alices_ticket, {"attributes": {"access": "admin"}})), "invalid_attribute")
	denied(decide(sam, "support:impersonate", object.union(alices_ticket, {"attributes": {"customer": 3}})), "invalid_attribute")
}

test_impersonate_write_ticket if {
	allowed(sam, "support:impersonate", object.union(alices_ticket, {"attributes": {"access": "write"}}))
}

test_impersonate_order if {
	# tenant, scope, role, own token, then the ticket.
	denied(decide(object.union(gina, {"scopes": []}), "support:impersonate", closed_ticket), "tenant_mismatch")
	denied(decide(object.union(bob, {"scopes": []}), "support:impersonate", closed_ticket), "insufficient_scope")
	denied(decide(object.union(bob, {"scopes": ["support:impersonate"]}), "support:impersonate", closed_ticket), "role_not_permitted")
	p := object.union(sam, {"actor_chain": [{"subject": "x", "client_id": "y"}]})
	denied(decide(p, "support:impersonate", closed_ticket), "reexchange_not_permitted")
	denied(decide(sam, "support:impersonate", json.remove(closed_ticket, ["attributes/customer"])), "missing_attribute")
}

# --- support:export ---

test_export_by_those_who_may_read_invoices if {
	allowed(alice, "support:export", acme_tickets)
	allowed(bob, "support:export", acme_tickets)
	allowed(sam, "support:export", acme_tickets)
	allowed(reporting_job, "support:export", acme_tickets)
}

test_export_without_invoice_read_scope if {
	d := decide(object.union(alice, {"scopes": ["openid", "support:write"]}), "support:export", acme_tickets)
	denied(d, "insufficient_scope")
	d.required_scopes == ["invoice:read"]
}

test_export_without_a_role_that_reads_invoices if {
	denied(decide(object.union(bob, {"roles": ["auditor"]}), "support:export", acme_tickets), "role_not_permitted")
}

test_export_other_tenant if {
	denied(decide(carol, "support:export", acme_tickets), "tenant_mismatch")
}

test_export_follows_invoice_read_in_the_catalog if {
	# support:export is permitted exactly where invoice:read is.
	granted_by(data.gatehouse.roles, "permissions", "invoice:read") == granted_by(data.gatehouse.roles, "permissions", "support:export")
	granted_by(data.gatehouse.scopes, "operations", "invoice:read") == granted_by(data.gatehouse.scopes, "operations", "support:export")
	count(granted_by(data.gatehouse.roles, "permissions", "support:export")) == 3
}

# granted_by(entries, key, action) are the names of the roles or scopes
# whose list key includes action.
granted_by(entries, key, action) := {name |
	some name, entry in entries
	action in entry[key]
}

# --- the catalog's support entries ---

test_support_scopes_in_catalog if {
	data.gatehouse.scopes["support:write"].operations == ["support:write", "support:read"]
	data.gatehouse.scopes["support:write"].owner == "support"
	data.gatehouse.scopes["support:read"].operations == ["support:read"]
	data.gatehouse.scopes["support:impersonate"].operations == ["support:impersonate", "token:exchange"]
}
