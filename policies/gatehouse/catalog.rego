# Package gatehouse.catalog answers questions about the permission catalog
# (data.gatehouse.actions, .roles and .scopes, in data.json next to this
# file) for the domain packages that decide by it. Every function is false
# or empty for a scope, role or action the catalog does not know, so an
# unknown name never grants anything.
package gatehouse.catalog

# granting_scopes(action) are the catalog's scopes whose operations include
# action, sorted; none for an action no scope grants.
granting_scopes(action) := sort([name |
	some name, scope in data.gatehouse.scopes
	action in scope.operations
])

# scope_grants(scopes, action) holds when one of scopes grants action.
scope_grants(scopes, action) if {
	some scope in scopes
	action in data.gatehouse.scopes[scope].operations
}

# role_permits(roles, action) holds when one of roles permits action.
role_permits(roles, action) if {
	some role in roles
	action in data.gatehouse.roles[role].permissions
}

# verbs(scope) are the verbs of the actions scope grants ({"read",
# "export"} for invoice:read); empty for an OpenID Connect scope and for a
# scope the catalog does not know.
verbs(scope) := {verb |
	some action in object.get(data.gatehouse.scopes, [scope, "operations"], [])
	verb := split(action, ":")[1]
}

# role_verbs(role) are the verbs of the actions role permits; empty for a
# role the catalog does not know.
role_verbs(role) := {verb |
	some action in object.get(data.gatehouse.roles, [role, "permissions"], [])
	verb := split(action, ":")[1]
}
