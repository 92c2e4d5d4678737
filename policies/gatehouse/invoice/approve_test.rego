# Tests of invoice:approve and its step-up rule, through
# data.gatehouse.main.decision. Principals (alice, bob, carol, billing_bot)
# come from invoice_test.rego.
package gatehouse.invoice_test

import data.gatehouse.main

# The request time of every test, and sign-ins relative to it.
now := "2026-11-25T09:00:00Z"

# alice signed in with a password one minute ago, or with a TOTP code two
# minutes ago; invoice-web asked for invoice:approve.
alice_pwd := object.union(alice, {
	"scopes": ["invoice:approve", "invoice:read", "invoice:write", "openid"],
	"acr": "pwd",
	"auth_time": "2026-11-25T08:59:00Z",
})

alice_mfa := object.union(alice_pwd, {"acr": "mfa", "auth_time": "2026-11-25T08:58:00Z"})

# Demo invoices: inv_demo_acme_1 (1,200.00 EUR) and inv_demo_acme_2
# (25,000.00 EUR, above the 10,000.00 threshold).
small_invoice := {"type": "invoice", "id": "inv_demo_acme_1", "tenant": "acme", "attributes": {
	"amount_cents": 120000, "created_by": "billing-bot", "status": "draft",
}}

large_invoice := object.union(small_invoice, {"id": "inv_demo_acme_2", "attributes": {
	"amount_cents": 2500000, "created_by": "billing-bot", "status": "draft",
}})

with_amount(amount) := object.union(large_invoice, {"attributes": {"amount_cents": amount}})

approve(principal, resource) := d if {
	d := main.decision with input as {
		"principal": principal,
		"action": "invoice:approve",
		"resource": resource,
		"context": {"request_id": "", "source_ip": "192.0.2.10", "time": now},
	}
}

# The decision for a missing or stale step-up, exactly.
step_up_required := {
	"decision": "deny",
	"reason_code": "step_up_required",
	"message": "a stronger or more recent authentication is required",
	"required_scopes": [],
	"obligations": [{"type": "step_up", "params": {"acr": "mfa", "max_age": "300"}}],
}

# --- allowed ---

test_allow_small_invoice_with_password_sign_in if {
	d := approve(alice_pwd, small_invoice)
	d.decision == "allow"
	d.obligations == []
}

test_allow_small_invoice_without_auth_time_or_request_time if {
	# Below the threshold neither auth_time nor the request time matters.
	p := object.remove(alice_pwd, ["acr", "auth_time"])
	d := main.decision with input as {"principal": p, "action": "invoice:approve", "resource": small_invoice}
	d.decision == "allow"
}

test_allow_large_invoice_with_fresh_mfa if {
	d := approve(alice_mfa, large_invoice)
	d.decision == "allow"
	d.reason_code == "allowed"
	d.obligations == []
}

test_allow_at_the_threshold_without_mfa if {
	# 10,000.00 exactly is not above 10,000.00.
	approve(alice_pwd, with_amount(1000000)).decision == "allow"
}

test_allow_mfa_exactly_max_age_old if {
	p := object.union(alice_mfa, {"auth_time": "2026-11-25T08:55:00Z"})
	approve(p, large_invoice).decision == "allow"
}

test_allow_auth_time_after_request_time if {
	# Issuer and caller clocks differ by a few seconds; a sign-in "in the
	# future" is recent (the token's signature vouches for auth_time).
	p := object.union(alice_mfa, {"auth_time": "2026-11-25T09:00:30Z"})
	approve(p, large_invoice).decision == "allow"
}

test_allow_fractional_amount_below_threshold if {
	approve(alice_pwd, with_amount(999999.5)).decision == "allow"
}

# --- step_up_required ---

test_step_up_large_invoice_with_password_sign_in if {
	approve(alice_pwd, large_invoice) == step_up_required
}

test_step_up_just_above_the_threshold if {
	approve(alice_pwd, with_amount(1000001)) == step_up_required
}

test_step_up_stale_mfa if {
	p := object.union(alice_mfa, {"auth_time": "2026-11-25T08:54:59Z"})
	approve(p, large_invoice) == step_up_required
}

test_step_up_mfa_without_auth_time if {
	approve(object.remove(alice_mfa, ["auth_time"]), large_invoice) == step_up_required
}

test_step_up_without_acr if {
	approve(object.remove(alice_mfa, ["acr"]), large_invoice) == step_up_required
}

test_step_up_acr_compared_exactly if {
	approve(object.union(alice_mfa, {"acr": "MFA"}), large_invoice) == step_up_required
	approve(object.union(alice_mfa, {"acr": ""}), large_invoice) == step_up_required
}

test_step_up_without_request_time if {
	d := main.decision with input as {"principal": alice_mfa, "action": "invoice:approve", "resource": large_invoice, "context": {}}
	d == step_up_required
}

test_step_up_client_acting_for_itself_above_threshold if {
	# A client without a user cannot sign in again: large approvals need one.
	bot := object.union(billing_bot, {"scopes": ["invoice:approve"]})
	approve(bot, small_invoice).decision == "allow"
	approve(bot, large_invoice) == step_up_required
}

test_step_up_params_come_from_data if {
	d := approve(alice_pwd, large_invoice) with data.gatehouse.invoice.approval_step_up as {
		"amount_cents_above": 1000000, "acr": "phr", "max_age_seconds": 600,
	}
	d.reason_code == "step_up_required"
	d.obligations == [{"type": "step_up", "params": {"acr": "phr", "max_age": "600"}}]
}

test_threshold_comes_from_data if {
	approve(alice_pwd, large_invoice) with data.gatehouse.invoice.approval_step_up.amount_cents_above as 2500000
}

# --- missing or broken data fails closed ---

test_no_step_up_data_denies if {
	large := approve(alice_mfa, large_invoice) with data.gatehouse.invoice.approval_step_up as {}
	large.decision != "allow"
	small := approve(alice_pwd, small_invoice) with data.gatehouse.invoice.approval_step_up as {}
	small.decision != "allow"
}

test_threshold_not_a_number_needs_step_up if {
	d := approve(alice_pwd, small_invoice) with data.gatehouse.invoice.approval_step_up.amount_cents_above as "1000000"
	d == step_up_required
}

# --- the amount ---

test_deny_missing_amount if {
	d := approve(alice_mfa, json.remove(large_invoice, ["attributes/amount_cents"]))
	d.decision == "deny"
	d.reason_code == "missing_attribute"
	d.obligations == []
}

test_deny_missing_attributes if {
	approve(alice_mfa, object.remove(large_invoice, ["attributes"])).reason_code == "missing_attribute"
}

test_deny_amount_not_a_number if {
	d := approve(alice_mfa, with_amount("2500000"))
	d.decision == "deny"
	d.reason_code == "invalid_attribute"
}

test_deny_amount_false if {
	approve(alice_mfa, with_amount(false)).reason_code == "invalid_attribute"
}

# --- tenant, scope and role come first ---

test_deny_billing_viewer if {
	bob_approve := object.union(bob, {"scopes": ["invoice:approve", "invoice:read", "openid"], "acr": "mfa", "auth_time": "2026-11-25T08:59:00Z"})
	d := approve(bob_approve, large_invoice)
	d.decision == "deny"
	d.reason_code == "role_not_permitted"
	d.obligations == []
	approve(bob_approve, small_invoice).reason_code == "role_not_permitted"
}

test_deny_other_tenant if {
	c := object.union(carol, {"scopes": ["invoice:approve"], "acr": "mfa", "auth_time": "2026-11-25T08:59:00Z"})
	d := approve(c, large_invoice)
	d.reason_code == "tenant_mismatch"
	d.obligations == []
}

test_deny_without_approve_scope if {
	d := approve(object.union(alice_mfa, {"scopes": ["invoice:read", "invoice:write"]}), large_invoice)
	d.reason_code == "insufficient_scope"
	d.required_scopes == ["invoice:approve"]
}

test_order_role_before_amount if {
	bob_approve := object.union(bob, {"scopes": ["invoice:approve"]})
	approve(bob_approve, object.remove(large_invoice, ["attributes"])).reason_code == "role_not_permitted"
}

test_order_tenant_before_step_up if {
	c := object.union(carol, {"scopes": ["invoice:approve"], "acr": "pwd"})
	approve(c, large_invoice).reason_code == "tenant_mismatch"
}

# --- collection level (the gateway's route check: no id, no amount) ---

collection := {"type": "invoice", "id": "", "tenant": "acme", "attributes": {}}

test_collection_level_decided_by_tenant_scope_and_role if {
	d := approve(alice_pwd, collection)
	d.decision == "allow"
	d.obligations == []
	approve(object.remove(alice_pwd, ["acr", "auth_time"]), object.remove(collection, ["id"])).decision == "allow"
	approve(object.union(bob, {"scopes": ["invoice:approve"]}), collection).reason_code == "role_not_permitted"
	approve(object.union(alice_pwd, {"scopes": ["invoice:read"]}), collection).reason_code == "insufficient_scope"
}
