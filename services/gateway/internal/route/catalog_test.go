package route_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// catalogPath is the permission catalog, the one definition of the actions
// the PDP's policies know (see docs/permissions.md).
const catalogPath = "../../../../policies/gatehouse/data.json"

// TestDefaultUsesCatalogActions fails when a route asks the PDP about an
// action the catalog does not define: such a route could never be allowed,
// or would be decided by a policy nobody documented.
func TestDefaultUsesCatalogActions(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	// Only what this test needs; the pdp module validates the rest.
	var catalog struct {
		Actions map[string]json.RawMessage `json:"actions"`
	}
	if err := json.Unmarshal(data, &catalog); err != nil {
		t.Fatalf("%s: %v", catalogPath, err)
	}
	if len(catalog.Actions) == 0 {
		t.Fatalf("%s defines no actions", catalogPath)
	}
	table, err := route.Default(route.Upstreams())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range table.Routes() {
		if _, ok := catalog.Actions[r.Action]; !ok {
			t.Errorf("route %s uses action %q, which %s does not define: add it to the catalog's \"actions\" (and a scope that grants it)",
				r.Path, r.Action, catalogPath)
		}
	}
}
