package user_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// testParams are cheap argon2id parameters so tests stay fast under -race.
func testParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

func TestNormalizeUsername(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "lowercase", in: "alice", want: "alice"},
		{name: "uppercase folded", in: "Alice", want: "alice"},
		{name: "punctuation allowed", in: "first.last_2-x", want: "first.last_2-x"},
		{name: "64 characters", in: strings.Repeat("a", 64), want: strings.Repeat("a", 64)},
		{name: "65 characters", in: strings.Repeat("a", 65), wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "space", in: "alice smith", wantErr: true},
		{name: "surrounding space", in: " alice", wantErr: true},
		{name: "at sign", in: "alice@acme", wantErr: true},
		{name: "Kelvin sign lowercases to k", in: "\u212Aarl", wantErr: true},
		{name: "non-ASCII letter", in: "zoë", wantErr: true},
		{name: "NUL byte", in: "alice\x00", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := user.NormalizeUsername(tc.in)
			if tc.wantErr {
				if !errors.Is(err, user.ErrInvalidUsername) {
					t.Fatalf("NormalizeUsername(%q) = %q, %v; want ErrInvalidUsername", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeUsername(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func validUser(t *testing.T) *user.User {
	t.Helper()
	hash, err := user.HashPassword("alice-demo-password", testParams())
	if err != nil {
		t.Fatal(err)
	}
	return &user.User{
		Username:     "alice",
		Tenant:       "acme",
		Roles:        []string{"billing_approver"},
		PasswordHash: hash,
		TOTPSecret:   "JBSWY3DPEHPK3PXPALICE234",
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*user.User)
		wantErr bool
	}{
		{name: "valid", mutate: func(*user.User) {}},
		{name: "valid without TOTP or roles", mutate: func(u *user.User) { u.TOTPSecret, u.Roles = "", nil }},
		{name: "username not normalized", mutate: func(u *user.User) { u.Username = "Alice" }, wantErr: true},
		{name: "username invalid", mutate: func(u *user.User) { u.Username = "al ice" }, wantErr: true},
		{name: "no tenant", mutate: func(u *user.User) { u.Tenant = "" }, wantErr: true},
		{name: "empty role", mutate: func(u *user.User) { u.Roles = []string{""} }, wantErr: true},
		{name: "password in clear", mutate: func(u *user.User) { u.PasswordHash = "alice-demo-password" }, wantErr: true},
		{name: "no password hash", mutate: func(u *user.User) { u.PasswordHash = "" }, wantErr: true},
		{name: "TOTP secret lowercase", mutate: func(u *user.User) { u.TOTPSecret = strings.ToLower(u.TOTPSecret) }, wantErr: true},
		{name: "TOTP secret too short", mutate: func(u *user.User) { u.TOTPSecret = "JBSWY3DP" }, wantErr: true},
		{name: "negative failures", mutate: func(u *user.User) { u.FailedAttempts = -1 }, wantErr: true},
		{name: "negative TOTP step", mutate: func(u *user.User) { u.TOTPLastStep = -1 }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := validUser(t)
			tc.mutate(u)
			err := u.Validate()
			if tc.wantErr != (err != nil) {
				t.Fatalf("Validate = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, user.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestValidateNewRunsUsernameChecks(t *testing.T) {
	t.Parallel()
	clientIDs := map[string]bool{"reporting-job": true}
	notAClient := func(_ context.Context, name string) error {
		if clientIDs[name] {
			return fmt.Errorf("%w: it is an OAuth 2.0 client id", user.ErrUsernameReserved)
		}
		return nil
	}
	u := validUser(t)
	if err := user.ValidateNew(t.Context(), u, notAClient); err != nil {
		t.Fatalf("ValidateNew(alice) = %v", err)
	}
	u.Username = "reporting-job"
	if err := user.ValidateNew(t.Context(), u, notAClient); !errors.Is(err, user.ErrUsernameReserved) {
		t.Fatalf("ValidateNew(reporting-job) = %v, want ErrUsernameReserved", err)
	}
	u.Username = "Bad Name"
	called := false
	spy := func(context.Context, string) error { called = true; return nil }
	if err := user.ValidateNew(t.Context(), u, spy); !errors.Is(err, user.ErrInvalid) || called {
		t.Fatalf("ValidateNew(invalid) = %v (check called: %v), want ErrInvalid before any check", err, called)
	}
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	u := validUser(t)
	c := u.Clone()
	c.Roles[0] = "admin"
	if u.Roles[0] != "billing_approver" {
		t.Fatal("Clone shares the roles slice")
	}
}

func TestLockedAt(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	u := &user.User{LockedUntil: now.Add(time.Minute)}
	if !u.LockedAt(now) || u.LockedAt(now.Add(time.Minute)) || (&user.User{}).LockedAt(now) {
		t.Fatal("LockedAt must be true strictly before LockedUntil only")
	}
}
