# Package gatehouse.support decides the support service's actions on
# support tickets (resource type "support", the actions' prefix; resource.id
# is the ticket id). Its data (data.json next to this file) holds the
# cross-tenant support grants, which the exchange policy reads too.
#
# Checks run in a fixed order per action and the first failing one decides.
# Every action starts with the tenant and then the scope: the token must
# carry a scope of the catalog (data.gatehouse.scopes) that grants the
# action, else deny insufficient_scope naming the granting scopes.
#
# support:write (OpenTicket): a user opens a ticket for themselves.
#   1. tenant: the ticket is in the principal's tenant, else tenant_mismatch;
#   2. scope;
#   3. nobody acts through the principal (empty actor chain): a ticket is
#      the customer's consent to be helped, and an agent impersonating the
#      customer must not give it, else actor_not_permitted;
#   4. the principal is a user, not a client acting for itself, else
#      role_not_permitted;
#   5. ticket: a check on one ticket names its customer (else
#      missing_attribute / invalid_attribute), and it is the principal,
#      else role_not_permitted.
#
# support:read (ListTickets, CloseTicket, GetCustomerOverview):
#   1. tenant: the principal's tenant, or one a cross-tenant support grant
#      gives the principal's tenant, else tenant_mismatch;
#   2. scope;
#   3. ticket: a check on one ticket names its customer;
#   4. reader: a role permitting support:read (an agent), or a user reading
#      their own tickets in their own tenant (attribute customer ==
#      principal.subject; a collection-level check without a customer is
#      "may list their own"; customer "" asks about every customer's
#      tickets, which only agents may read), else role_not_permitted.
#
# support:impersonate (StartImpersonation, EndImpersonation):
#   1. tenant as for support:read;
#   2. scope;
#   3. role: a role permitting support:impersonate, else
#      role_not_permitted;
#   4. the principal's token is not itself an exchanged one (empty actor
#      chain), else reexchange_not_permitted;
#   5. ticket: a check on one ticket names its customer and status ("open"
#      or "closed"; access, when given, "read" or "write"), else
#      missing_attribute / invalid_attribute;
#   6. the ticket is open, else no_open_ticket.
#
# support:export (ExportInvoices): decided like invoice:read, from the
# catalog (the roles and the scope that permit invoice:read permit
# support:export): tenant (the principal's own), scope, and a role for a
# user (a client acting for itself has none).
#
# A check without resource.id is collection-level (the gateway's route
# check, a list, a create): what only one ticket has (its status, a
# required customer) is not asked for, and the service asks again for each
# ticket it shows or changes.
package gatehouse.support

import data.gatehouse.catalog
import data.gatehouse.outcome

# actions are the actions gatehouse.main routes to this package.
actions := {"support:read", "support:write", "support:impersonate", "support:export"}

# supports(agent_tenant, customer_tenant) holds when agents of agent_tenant
# may help customers of customer_tenant: the same tenant, or a cross-tenant
# support grant {"agent_tenant": ..., "customer_tenant": ...} in data.json.
supports(agent_tenant, customer_tenant) if {
	agent_tenant != ""
	customer_tenant == agent_tenant
}

supports(agent_tenant, customer_tenant) if {
	agent_tenant != ""
	some grant in data.gatehouse.support.cross_tenant_support
	grant.agent_tenant == agent_tenant
	grant.customer_tenant == customer_tenant
}

decision := write_decision if input.action == "support:write"

decision := read_decision if input.action == "support:read"

decision := impersonate_decision if input.action == "support:impersonate"

decision := export_decision if input.action == "support:export"

write_decision := outcome.deny("tenant_mismatch", "tickets are opened in the principal's own tenant") if {
	not same_tenant
} else := outcome.deny_scope(catalog.granting_scopes(input.action)) if {
	not scope_ok
} else := outcome.deny("actor_not_permitted", "a ticket is the customer's own request: nobody opens one acting for them") if {
	not own_token
} else := outcome.deny("role_not_permitted", "tickets are opened by users, not by clients acting for themselves") if {
	client_acting_for_itself
} else := outcome.deny("missing_attribute", "a check on one ticket needs its customer attribute") if {
	not customer_present
} else := outcome.deny("invalid_attribute", "the customer attribute must be a string") if {
	not customer_valid
} else := outcome.deny("role_not_permitted", "a user opens and changes only their own tickets") if {
	not own_tickets
} else := outcome.allow if {
	same_tenant
	scope_ok
	own_token
	not client_acting_for_itself
	own_tickets
}

read_decision := outcome.deny("tenant_mismatch", "the ticket belongs to a tenant the principal may not support") if {
	not supported_tenant
} else := outcome.deny_scope(catalog.granting_scopes(input.action)) if {
	not scope_ok
} else := outcome.deny("missing_attribute", "a check on one ticket needs its customer attribute") if {
	not customer_present
} else := outcome.deny("invalid_attribute", "the customer attribute must be a string") if {
	not customer_valid
} else := outcome.deny("role_not_permitted", "only support agents read other customers' tickets") if {
	not reader_ok
} else := outcome.allow if {
	supported_tenant
	scope_ok
	reader_ok
}

impersonate_decision := outcome.deny("tenant_mismatch", "the ticket belongs to a tenant the principal may not support") if {
	not supported_tenant
} else := outcome.deny_scope(catalog.granting_scopes(input.action)) if {
	not scope_ok
} else := outcome.deny("role_not_permitted", "none of the principal's roles grants this action") if {
	not role_ok
} else := outcome.deny("reexchange_not_permitted", "an exchanged token cannot start or end an impersonation") if {
	not own_token
} else := outcome.deny("missing_attribute", "a check on one ticket needs its customer and status attributes") if {
	not impersonation_ticket_present
} else := outcome.deny("invalid_attribute", "customer must be a string, status open or closed, access read or write") if {
	not impersonation_ticket_valid
} else := outcome.deny("no_open_ticket", "impersonation needs an open ticket of the customer") if {
	not ticket_open
} else := outcome.allow if {
	supported_tenant
	scope_ok
	role_ok
	own_token
	ticket_open
}

export_decision := outcome.deny("tenant_mismatch", "the export covers the principal's own tenant only") if {
	not same_tenant
} else := outcome.deny_scope(catalog.granting_scopes(input.action)) if {
	not scope_ok
} else := outcome.deny("role_not_permitted", "none of the principal's roles grants this action") if {
	not export_role_ok
} else := outcome.allow if {
	same_tenant
	scope_ok
	export_role_ok
}

# --- principal ---

same_tenant if {
	input.principal.tenant != ""
	input.resource.tenant == input.principal.tenant
}

supported_tenant if supports(input.principal.tenant, input.resource.tenant)

scope_ok if catalog.scope_grants(input.principal.scopes, input.action)

role_ok if catalog.role_permits(input.principal.roles, input.action)

export_role_ok if role_ok

export_role_ok if client_acting_for_itself

# own_token: nobody acts through the principal's token (no act claim).
own_token if count(object.get(input.principal, "actor_chain", [])) == 0

# client_acting_for_itself holds for client_credentials tokens, whose
# subject is the client (RFC 9068 section 2.2) and which nobody acts
# through; see gatehouse.invoice.
client_acting_for_itself if {
	input.principal.client_id != ""
	input.principal.subject == input.principal.client_id
	own_token
}

# reader_ok: an agent, or a user reading their own tickets.
reader_ok if role_ok

reader_ok if {
	not client_acting_for_itself
	same_tenant
	own_tickets
}

# --- the ticket ---

attributes := object.get(input.resource, "attributes", {})

# one_ticket holds for a check on one ticket; without resource.id the check
# is collection-level.
one_ticket if object.get(input.resource, "id", "") != ""

customer_named if "customer" in object.keys(attributes)

customer_present if not one_ticket

customer_present if customer_named

customer_valid if not customer_named

customer_valid if is_string(attributes.customer)

# own_tickets: the ticket is the principal's, or, collection-level and
# without a customer, the principal asks about their own tickets.
own_tickets if {
	not one_ticket
	not customer_named
}

own_tickets if attributes.customer == input.principal.subject

impersonation_ticket_present if not one_ticket

impersonation_ticket_present if {
	customer_named
	"status" in object.keys(attributes)
}

impersonation_ticket_valid if not one_ticket

impersonation_ticket_valid if {
	one_ticket
	is_string(attributes.customer)
	attributes.status in {"open", "closed"}
	access_valid
}

access_valid if not "access" in object.keys(attributes)

access_valid if attributes.access in {"read", "write"}

ticket_open if not one_ticket

ticket_open if attributes.status == "open"
