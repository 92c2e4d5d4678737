# The package has no decision rule at all.
package gatehouse.main

allow := true
