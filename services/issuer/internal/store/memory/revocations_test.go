package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestRevocationLogContract(t *testing.T) {
	t.Parallel()
	storetest.RunRevocationLog(t, func(*testing.T) store.RevocationLog { return memory.NewRevocationLog() })
}

func TestRevocationLogsAreDistinct(t *testing.T) {
	t.Parallel()
	a, err := memory.NewRevocationLog().After(t.Context(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := memory.NewRevocationLog().After(t.Context(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a.Head.LogID == b.Head.LogID {
		t.Fatalf("two memory logs share the id %q: a restarted issuer would look like the same log", a.Head.LogID)
	}
}
