package postgres_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestGrantStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunGrantStore(t, func(t *testing.T) storetest.GrantBackend { return newStore(t) })
}
