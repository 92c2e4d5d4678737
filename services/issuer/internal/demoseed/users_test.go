package demoseed_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

func cheapParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// TestSeedUsersMatchesDesign pins the seeded accounts to DESIGN.md's table.
func TestSeedUsersMatchesDesign(t *testing.T) {
	t.Parallel()
	users := memory.NewUserStore()
	if err := demoseed.SeedUsers(t.Context(), users, cheapParams()); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		username, tenant, role, password, totpSecret string
	}{
		{"alice", "acme", "billing_approver", "alice-demo-password", "JBSWY3DPEHPK3PXPALICE234"},
		{"bob", "acme", "billing_viewer", "bob-demo-password", ""},
		{"carol", "globex", "billing_approver", "carol-demo-password", "JBSWY3DPEHPK3PXPCAROL234"},
		{"sam", "acme", "support_agent", "sam-demo-password", "JBSWY3DPEHPK3PXPSAM23456"},
	}
	for _, w := range want {
		t.Run(w.username, func(t *testing.T) {
			t.Parallel()
			u, err := users.GetUser(t.Context(), w.username)
			if err != nil {
				t.Fatal(err)
			}
			if u.Tenant != w.tenant || !slices.Equal(u.Roles, []string{w.role}) || u.TOTPSecret != w.totpSecret {
				t.Fatalf("user = %+v", u)
			}
			if err := user.VerifyPassword(u.PasswordHash, w.password); err != nil {
				t.Fatalf("demo password does not verify: %v", err)
			}
			if p, err := user.ParseParams(u.PasswordHash); err != nil || p != cheapParams() {
				t.Fatalf("hash parameters = %+v, %v", p, err)
			}
		})
	}
}

func TestSeedUsersIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	users := memory.NewUserStore()
	if err := demoseed.SeedUsers(ctx, users, cheapParams()); err != nil {
		t.Fatal(err)
	}
	before, err := users.GetUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.RecordLoginFailure(ctx, "alice", time.Now(), user.DefaultLockout()); err != nil {
		t.Fatal(err)
	}
	if err := demoseed.SeedUsers(ctx, users, cheapParams()); err != nil {
		t.Fatalf("second seed: %v", err)
	}
	after, err := users.GetUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if after.PasswordHash != before.PasswordHash {
		t.Fatal("reseeding rehashed a password that still verified")
	}
	if after.FailedAttempts != 1 {
		t.Fatalf("reseeding reset login state: %d failures, want 1", after.FailedAttempts)
	}

	// Raised parameters: the next seed rehashes.
	raised := cheapParams()
	raised.Time = 2
	if err := demoseed.SeedUsers(ctx, users, raised); err != nil {
		t.Fatal(err)
	}
	rehashed, err := users.GetUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := user.ParseParams(rehashed.PasswordHash); err != nil || p != raised {
		t.Fatalf("after raising parameters: %+v, %v", p, err)
	}
}

func TestSeedUsersRunsUsernameChecks(t *testing.T) {
	t.Parallel()
	refuseSam := func(_ context.Context, name string) error {
		if name == "sam" {
			return fmt.Errorf("%w: a client has this id", user.ErrUsernameReserved)
		}
		return nil
	}
	err := demoseed.SeedUsers(t.Context(), memory.NewUserStore(), cheapParams(), refuseSam)
	if !errors.Is(err, user.ErrUsernameReserved) {
		t.Fatalf("SeedUsers = %v, want ErrUsernameReserved", err)
	}
}
