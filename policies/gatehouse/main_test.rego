# Tests of the dispatcher gatehouse.main: what no domain package covers is
# not_applicable, and every answer has the full decision shape.
package gatehouse.main_test

import data.gatehouse.main

alice := {
	"subject": "alice",
	"client_id": "invoice-web",
	"tenant": "acme",
	"roles": ["billing_approver"],
	"scopes": ["invoice:approve", "invoice:read", "invoice:write", "support:read"],
}

not_applicable(action, type) if {
	d := main.decision with input as {
		"principal": alice,
		"action": action,
		"resource": {"type": type, "id": "x-1", "tenant": "acme", "attributes": {}},
	}
	d == {
		"decision": "not_applicable",
		"reason_code": "no_applicable_policy",
		"message": "no policy covers this action and resource type",
		"required_scopes": [],
		"obligations": [],
	}
}

test_not_applicable_unknown_resource_type if {
	not_applicable("ledger:read", "ledger")
}

test_not_applicable_uncovered_invoice_action if {
	# An invoice action the invoice package does not list.
	not_applicable("invoice:delete", "invoice")
}

test_invoice_approve_is_covered if {
	"invoice:approve" in data.gatehouse.invoice.actions
}

test_not_applicable_uncovered_support_action if {
	not_applicable("support:delete", "support")
}

test_not_applicable_support_action_on_another_type if {
	not_applicable("support:read", "ticket")
}

test_not_applicable_uncovered_token_action if {
	not_applicable("token:introspect", "token")
}

test_support_and_exchange_actions_are_covered if {
	data.gatehouse.support.actions == {"support:read", "support:write", "support:impersonate", "support:export"}
	data.gatehouse.exchange.actions == {"token:exchange"}
}

test_not_applicable_type_does_not_match_action if {
	not_applicable("invoice:read", "support")
}

test_not_applicable_empty_input if {
	main.decision.reason_code == "no_applicable_policy" with input as {}
}

test_decision_shape_on_allow if {
	d := main.decision with input as {
		"principal": alice,
		"action": "invoice:read",
		"resource": {"type": "invoice", "id": "inv-1001", "tenant": "acme", "attributes": {}},
	}
	object.keys(d) == {"decision", "reason_code", "message", "required_scopes", "obligations"}
	d.decision == "allow"
}

test_decision_shape_on_deny if {
	d := main.decision with input as {
		"principal": alice,
		"action": "invoice:read",
		"resource": {"type": "invoice", "id": "inv-2001", "tenant": "globex", "attributes": {}},
	}
	object.keys(d) == {"decision", "reason_code", "message", "required_scopes", "obligations"}
	d.decision == "deny"
}

test_role_matrix_matches_demo_seed if {
	data.gatehouse.roles.billing_viewer.permissions == ["invoice:read", "support:export"]
	data.gatehouse.roles.billing_approver.permissions == ["invoice:read", "invoice:write", "invoice:approve", "support:export"]
	data.gatehouse.roles.support_agent.permissions == ["support:read", "support:impersonate", "invoice:read", "token:exchange", "support:export"]
}

test_scope_catalog_describes_every_scope if {
	object.keys(data.gatehouse.scopes) == {
		"openid", "profile", "offline_access",
		"invoice:read", "invoice:write", "invoice:approve",
		"support:read", "support:write", "support:impersonate",
		"policy:admin", "keys:admin", "revocations:read",
	}
	every _, s in data.gatehouse.scopes {
		s.description != ""
	}
}

test_catalog_defines_every_granted_action if {
	defined := object.keys(data.gatehouse.actions)
	every _, s in data.gatehouse.scopes {
		every a in s.operations {
			a in defined
		}
	}
	every _, r in data.gatehouse.roles {
		every a in r.permissions {
			a in defined
		}
	}
}

test_dispatched_actions_are_catalog_actions if {
	dispatched := (data.gatehouse.invoice.actions | data.gatehouse.support.actions) | data.gatehouse.exchange.actions
	every a in dispatched {
		a in object.keys(data.gatehouse.actions)
	}
}
