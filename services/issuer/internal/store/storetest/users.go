package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// cheapParams keep the suite fast; the store never looks inside a hash
// beyond checking that it parses.
func cheapParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// RunUserStore runs the store.UserStore contract suite; newStore returns a
// fresh, empty store for each subtest.
func RunUserStore(t *testing.T, newStore func(t *testing.T) store.UserStore) {
	t.Helper()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("GetUserUnknown", func(t *testing.T) {
		t.Parallel()
		if _, err := newStore(t).GetUser(t.Context(), "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetUser = %v, want ErrNotFound", err)
		}
	})
	t.Run("CreateUserRoundTrip", func(t *testing.T) {
		t.Parallel()
		tests := []struct{ name, totpSecret string }{
			{name: "with TOTP", totpSecret: "JBSWY3DPEHPK3PXPALICE234"},
			{name: "without TOTP"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				want := newUser(t, "alice", tc.totpSecret)
				want.Roles = []string{"billing_approver", "auditor"}
				want.FailedAttempts, want.TOTPLastStep, want.LockedUntil = 2, 5, at
				if err := s.CreateUser(t.Context(), want); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetUser(t.Context(), want.Username)
				if err != nil {
					t.Fatal(err)
				}
				assertUser(t, got, want)
				if got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
					t.Fatalf("timestamps not set: created %v, updated %v", got.CreatedAt, got.UpdatedAt)
				}
			})
		}
	})
	t.Run("CreateUserConflict", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second CreateUser = %v, want ErrConflict", err)
		}
	})
	t.Run("CreateUserRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			mutate func(*user.User)
		}{
			{name: "not normalized", mutate: func(u *user.User) { u.Username = "Alice" }},
			{name: "no tenant", mutate: func(u *user.User) { u.Tenant = "" }},
			{name: "clear-text password", mutate: func(u *user.User) { u.PasswordHash = "alice-demo-password" }},
			{name: "bad TOTP secret", mutate: func(u *user.User) { u.TOTPSecret = "not base32!" }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				u := newUser(t, "alice", "")
				tc.mutate(u)
				if err := s.CreateUser(t.Context(), u); !errors.Is(err, user.ErrInvalid) {
					t.Fatalf("CreateUser = %v, want ErrInvalid", err)
				}
				if err := s.UpsertUser(t.Context(), u); !errors.Is(err, user.ErrInvalid) {
					t.Fatalf("UpsertUser = %v, want ErrInvalid", err)
				}
				if _, err := s.GetUser(t.Context(), u.Username); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetUser after rejected create = %v, want ErrNotFound", err)
				}
			})
		}
	})
	t.Run("UpsertUserReplacesProfileKeepsLoginState", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := newUser(t, "carol", "JBSWY3DPEHPK3PXPCAROL234")
		if err := s.UpsertUser(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordLoginFailure(t.Context(), "carol", at, user.DefaultLockout()); err != nil {
			t.Fatal(err)
		}
		if err := s.AdvanceTOTPStep(t.Context(), "carol", 42); err != nil {
			t.Fatal(err)
		}
		second := newUser(t, "carol", "")
		second.Tenant = "globex"
		second.Roles = []string{"billing_viewer", "auditor"}
		if err := s.UpsertUser(t.Context(), second); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUser(t.Context(), "carol")
		if err != nil {
			t.Fatal(err)
		}
		want := second.Clone()
		want.FailedAttempts, want.TOTPLastStep = 1, 42
		assertUser(t, got, want)
	})
	t.Run("GetUserReturnsCopy", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "")); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUser(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		got.Roles[0] = "admin"
		got.FailedAttempts = 99
		again, err := s.GetUser(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if again.Roles[0] != "billing_approver" || again.FailedAttempts != 0 {
			t.Fatalf("store shares memory with callers: %+v", again)
		}
	})
	t.Run("SetPasswordHash", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "")); err != nil {
			t.Fatal(err)
		}
		hash := hashOf(t, "a-brand-new-password")
		if err := s.SetPasswordHash(t.Context(), "alice", hash); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUser(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if got.PasswordHash != hash {
			t.Fatalf("hash = %q, want %q", got.PasswordHash, hash)
		}
		if err := s.SetPasswordHash(t.Context(), "alice", "plain"); !errors.Is(err, user.ErrInvalid) {
			t.Fatalf("SetPasswordHash(malformed) = %v, want ErrInvalid", err)
		}
		if err := s.SetPasswordHash(t.Context(), "nobody", hash); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("SetPasswordHash(unknown) = %v, want ErrNotFound", err)
		}
	})
	t.Run("RecordLoginFailureFollowsPolicy", func(t *testing.T) {
		t.Parallel()
		policies := []struct {
			name   string
			policy user.LockoutPolicy
		}{
			{name: "default", policy: user.DefaultLockout()},
			{name: "custom", policy: user.LockoutPolicy{Threshold: 2, Base: 90 * time.Second, Max: 10 * time.Minute}},
		}
		for _, p := range policies {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				if err := s.CreateUser(t.Context(), newUser(t, "bob", "")); err != nil {
					t.Fatal(err)
				}
				for n := 1; n <= 12; n++ {
					now := at.Add(time.Duration(n) * time.Hour)
					state, err := s.RecordLoginFailure(t.Context(), "bob", now, p.policy)
					if err != nil {
						t.Fatal(err)
					}
					var wantUntil time.Time
					if d := p.policy.Duration(n); d > 0 {
						wantUntil = now.Add(d)
					}
					if state.FailedAttempts != n || !state.LockedUntil.Equal(wantUntil) {
						t.Fatalf("failure %d: state = %+v, want %d failures locked until %v", n, state, n, wantUntil)
					}
					got, err := s.GetUser(t.Context(), "bob")
					if err != nil {
						t.Fatal(err)
					}
					if got.FailedAttempts != n || !got.LockedUntil.Equal(wantUntil) {
						t.Fatalf("failure %d: stored %d failures locked until %v", n, got.FailedAttempts, got.LockedUntil)
					}
				}
			})
		}
	})
	t.Run("RecordLoginSuccessResets", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "bob", "")); err != nil {
			t.Fatal(err)
		}
		for range 6 {
			if _, err := s.RecordLoginFailure(t.Context(), "bob", at, user.DefaultLockout()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordLoginSuccess(t.Context(), "bob"); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUser(t.Context(), "bob")
		if err != nil {
			t.Fatal(err)
		}
		if got.FailedAttempts != 0 || !got.LockedUntil.IsZero() {
			t.Fatalf("after success: %d failures, locked until %v", got.FailedAttempts, got.LockedUntil)
		}
	})
	t.Run("LoginStateOfUnknownUser", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if _, err := s.RecordLoginFailure(t.Context(), "nobody", at, user.DefaultLockout()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("RecordLoginFailure = %v, want ErrNotFound", err)
		}
		if err := s.RecordLoginSuccess(t.Context(), "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("RecordLoginSuccess = %v, want ErrNotFound", err)
		}
		if err := s.AdvanceTOTPStep(t.Context(), "nobody", 1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("AdvanceTOTPStep = %v, want ErrNotFound", err)
		}
	})
	t.Run("ConcurrentFailuresAreAllCounted", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "bob", "")); err != nil {
			t.Fatal(err)
		}
		const n = 20
		counts := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				state, err := s.RecordLoginFailure(t.Context(), "bob", at, user.DefaultLockout())
				if err != nil {
					t.Error(err)
					return
				}
				counts[i] = state.FailedAttempts
			})
		}
		wg.Wait()
		slices.Sort(counts)
		for i, c := range counts {
			if c != i+1 {
				t.Fatalf("failure counts seen = %v, want 1..%d each once (a lost update)", counts, n)
			}
		}
		got, err := s.GetUser(t.Context(), "bob")
		if err != nil {
			t.Fatal(err)
		}
		if got.FailedAttempts != n {
			t.Fatalf("stored %d failures, want %d", got.FailedAttempts, n)
		}
	})
	t.Run("AdvanceTOTPStepOnlyForward", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "JBSWY3DPEHPK3PXPALICE234")); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			step int64
			want error
		}{
			{step: 100, want: nil},
			{step: 100, want: store.ErrConflict},
			{step: 99, want: store.ErrConflict},
			{step: 101, want: nil},
		}
		for _, st := range steps {
			if err := s.AdvanceTOTPStep(t.Context(), "alice", st.step); !errors.Is(err, st.want) {
				t.Fatalf("AdvanceTOTPStep(%d) = %v, want %v", st.step, err, st.want)
			}
		}
		got, err := s.GetUser(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if got.TOTPLastStep != 101 {
			t.Fatalf("last step = %d, want 101", got.TOTPLastStep)
		}
	})
	t.Run("ConcurrentUsesOfOneStepOneWins", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateUser(t.Context(), newUser(t, "alice", "JBSWY3DPEHPK3PXPALICE234")); err != nil {
			t.Fatal(err)
		}
		const n = 10
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.AdvanceTOTPStep(t.Context(), "alice", 7) })
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("AdvanceTOTPStep = %v, want nil or ErrConflict", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d concurrent uses of one step succeeded, want exactly 1", wins)
		}
	})
}

// newUser returns a valid user named username with the given TOTP secret
// (empty for none).
func newUser(t *testing.T, username, totpSecret string) *user.User {
	t.Helper()
	return &user.User{
		Username:     username,
		Tenant:       "acme",
		Roles:        []string{"billing_approver"},
		PasswordHash: hashOf(t, username+"-demo-password"),
		TOTPSecret:   totpSecret,
	}
}

func hashOf(t *testing.T, password string) string {
	t.Helper()
	hash, err := user.HashPassword(password, cheapParams())
	if err != nil {
		t.Fatal(err)
	}
	return hash
}

// assertUser compares everything but the store-set timestamps.
func assertUser(t *testing.T, got, want *user.User) {
	t.Helper()
	if got.Username != want.Username || got.Tenant != want.Tenant || !slices.Equal(got.Roles, want.Roles) ||
		got.PasswordHash != want.PasswordHash || got.TOTPSecret != want.TOTPSecret ||
		got.TOTPLastStep != want.TOTPLastStep || got.FailedAttempts != want.FailedAttempts ||
		!got.LockedUntil.Equal(want.LockedUntil) {
		t.Fatalf("user = %+v,\nwant %+v", got, want)
	}
}
