package postgres_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pquerna/otp/totp"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

const (
	aliceTOTP = "JBSWY3DPEHPK3PXPALICE234"
	carolTOTP = "JBSWY3DPEHPK3PXPCAROL234"
)

// newUsersPool returns a pool on a fresh, migrated database.
func newUsersPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// newSealer returns a sealer under a fresh random key-encryption key.
func newSealer(t *testing.T) *postgres.KEKSealer {
	t.Helper()
	kek := make([]byte, signingkey.KEKSize)
	_, _ = rand.Read(kek)
	s, err := postgres.NewKEKSealer(kek)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newUserStore(t *testing.T) store.UserStore {
	t.Helper()
	return postgres.NewUserStore(newUsersPool(t), newSealer(t))
}

func TestUserStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunUserStore(t, newUserStore)
}

// testUser returns a valid user with the given TOTP secret (empty for none)
// whose password is username+"-password".
func testUser(t *testing.T, username, totpSecret string) *user.User {
	t.Helper()
	hash, err := user.HashPassword(username+"-password", cheapParams())
	if err != nil {
		t.Fatal(err)
	}
	return &user.User{Username: username, Tenant: "acme", Roles: []string{"billing_approver"}, PasswordHash: hash, TOTPSecret: totpSecret}
}

func cheapParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// totpColumns returns the user's stored TOTP columns.
func totpColumns(t *testing.T, pool *pgxpool.Pool, username string) (clear *string, sealed []byte) {
	t.Helper()
	if err := pool.QueryRow(t.Context(), `SELECT totp_secret, totp_secret_sealed FROM users WHERE username = $1`, username).
		Scan(&clear, &sealed); err != nil {
		t.Fatal(err)
	}
	return clear, sealed
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func wantTOTP(t *testing.T, s *postgres.UserStore, username, secret string) {
	t.Helper()
	u, err := s.GetUser(t.Context(), username)
	if err != nil {
		t.Fatalf("GetUser(%s) = %v", username, err)
	}
	if u.TOTPSecret != secret {
		t.Fatalf("GetUser(%s) TOTP secret = %q, want %q", username, u.TOTPSecret, secret)
	}
}

// wantUndecryptable asserts that GetUser fails closed: ErrUndecryptable,
// which is not ErrNotFound (that would read as an unknown user).
func wantUndecryptable(t *testing.T, s *postgres.UserStore, username string) {
	t.Helper()
	u, err := s.GetUser(t.Context(), username)
	if !errors.Is(err, postgres.ErrUndecryptable) || errors.Is(err, store.ErrNotFound) || u != nil {
		t.Fatalf("GetUser(%s) = %+v, %v; want only ErrUndecryptable", username, u, err)
	}
}

func TestUserStoreSealsTOTPSecrets(t *testing.T) {
	t.Parallel()

	t.Run("RowsHoldNoClearSecret", func(t *testing.T) {
		t.Parallel()
		pool := newUsersPool(t)
		s := postgres.NewUserStore(pool, newSealer(t))
		if err := s.CreateUser(t.Context(), testUser(t, "alice", aliceTOTP)); err != nil {
			t.Fatal(err)
		}
		if err := s.UpsertUser(t.Context(), testUser(t, "carol", carolTOTP)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateUser(t.Context(), testUser(t, "bob", "")); err != nil {
			t.Fatal(err)
		}
		for username, secret := range map[string]string{"alice": aliceTOTP, "carol": carolTOTP} {
			raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
			if err != nil {
				t.Fatal(err)
			}
			clear, sealed := totpColumns(t, pool, username)
			if clear != nil || len(sealed) == 0 || bytes.Contains(sealed, []byte(secret)) || bytes.Contains(sealed, raw) {
				t.Fatalf("%s: totp_secret = %v, totp_secret_sealed = %x: want only a sealed form that does not contain the secret", username, clear, sealed)
			}
			wantTOTP(t, s, username, secret)
		}
		if clear, sealed := totpColumns(t, pool, "bob"); clear != nil || sealed != nil {
			t.Fatalf("bob without TOTP: totp_secret = %v, totp_secret_sealed = %x, want both NULL", clear, sealed)
		}
	})

	t.Run("AnotherKEKFailsClosed", func(t *testing.T) {
		t.Parallel()
		pool := newUsersPool(t)
		s := postgres.NewUserStore(pool, newSealer(t))
		for _, u := range []*user.User{testUser(t, "alice", aliceTOTP), testUser(t, "bob", "")} {
			if err := s.CreateUser(t.Context(), u); err != nil {
				t.Fatal(err)
			}
		}
		other := postgres.NewUserStore(pool, newSealer(t))
		wantUndecryptable(t, other, "alice")
		wantTOTP(t, other, "bob", "")
		if _, err := other.GetUser(t.Context(), "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetUser(nobody) = %v, want ErrNotFound", err)
		}
	})

	t.Run("AlteredSealedValueDoesNotOpen", func(t *testing.T) {
		t.Parallel()
		tests := []struct{ name, sql string }{
			{name: "moved from another user", sql: `UPDATE users SET totp_secret_sealed = (SELECT totp_secret_sealed FROM users WHERE username = 'alice') WHERE username = 'carol'`},
			{name: "last byte flipped", sql: `UPDATE users SET totp_secret_sealed = set_byte(totp_secret_sealed, length(totp_secret_sealed) - 1, get_byte(totp_secret_sealed, length(totp_secret_sealed) - 1) # 1) WHERE username = 'carol'`},
			{name: "truncated", sql: `UPDATE users SET totp_secret_sealed = substring(totp_secret_sealed from 1 for 20) WHERE username = 'carol'`},
			{name: "empty", sql: `UPDATE users SET totp_secret_sealed = ''::bytea WHERE username = 'carol'`},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				pool := newUsersPool(t)
				s := postgres.NewUserStore(pool, newSealer(t))
				for _, u := range []*user.User{testUser(t, "alice", aliceTOTP), testUser(t, "carol", carolTOTP)} {
					if err := s.CreateUser(t.Context(), u); err != nil {
						t.Fatal(err)
					}
				}
				exec(t, pool, tc.sql)
				wantUndecryptable(t, s, "carol")
				wantTOTP(t, s, "alice", aliceTOTP)
			})
		}
	})

	t.Run("SealerFailuresFailClosed", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			open func() ([]byte, error)
		}{
			{name: "opens to nothing", open: func() ([]byte, error) { return nil, nil }},
			{name: "opens to no secret", open: func() ([]byte, error) { return []byte("not base32!"), nil }},
			{name: "error carrying ErrNotFound", open: func() ([]byte, error) { return nil, fmt.Errorf("kms: %w", store.ErrNotFound) }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				pool := newUsersPool(t)
				if err := postgres.NewUserStore(pool, newSealer(t)).CreateUser(t.Context(), testUser(t, "alice", aliceTOTP)); err != nil {
					t.Fatal(err)
				}
				wantUndecryptable(t, postgres.NewUserStore(pool, fakeSealer{open: tc.open}), "alice")
			})
		}
	})

	t.Run("LegacyClearRowReadThenResealedByUpsert", func(t *testing.T) {
		t.Parallel()
		pool := newUsersPool(t)
		s := postgres.NewUserStore(pool, newSealer(t))
		carol := testUser(t, "carol", "")
		if err := s.CreateUser(t.Context(), carol); err != nil {
			t.Fatal(err)
		}
		exec(t, pool, `UPDATE users SET totp_secret = $1 WHERE username = 'carol'`, carolTOTP) // as written before sealing
		wantTOTP(t, s, "carol", carolTOTP)

		carol.TOTPSecret = carolTOTP
		if err := s.UpsertUser(t.Context(), carol); err != nil {
			t.Fatal(err)
		}
		if clear, sealed := totpColumns(t, pool, "carol"); clear != nil || len(sealed) == 0 {
			t.Fatalf("after UpsertUser: totp_secret = %v, totp_secret_sealed = %x, want only the sealed form", clear, sealed)
		}
		wantTOTP(t, s, "carol", carolTOTP)
	})

	t.Run("ResealLegacyTOTPSecrets", func(t *testing.T) {
		t.Parallel()
		pool := newUsersPool(t)
		s := postgres.NewUserStore(pool, newSealer(t))
		for _, u := range []*user.User{testUser(t, "alice", ""), testUser(t, "carol", ""), testUser(t, "sam", "JBSWY3DPEHPK3PXPSAM23456"), testUser(t, "bob", "")} {
			if err := s.CreateUser(t.Context(), u); err != nil {
				t.Fatal(err)
			}
		}
		for username, secret := range map[string]string{"alice": aliceTOTP, "carol": carolTOTP} {
			exec(t, pool, `UPDATE users SET totp_secret = $2 WHERE username = $1`, username, secret) // as written before sealing
		}
		for run, want := range []int{2, 0} {
			n, err := s.ResealLegacyTOTPSecrets(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("run %d resealed %d, want %d", run+1, n, want)
			}
			var left int
			if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE totp_secret IS NOT NULL`).Scan(&left); err != nil {
				t.Fatal(err)
			}
			if left != 0 {
				t.Fatalf("run %d left %d clear-text secrets", run+1, left)
			}
			wantTOTP(t, s, "alice", aliceTOTP)
			wantTOTP(t, s, "carol", carolTOTP)
			wantTOTP(t, s, "sam", "JBSWY3DPEHPK3PXPSAM23456")
			wantTOTP(t, s, "bob", "")
		}
	})

	t.Run("OneFormPerRow", func(t *testing.T) {
		t.Parallel()
		pool := newUsersPool(t)
		s := postgres.NewUserStore(pool, newSealer(t))
		if err := s.CreateUser(t.Context(), testUser(t, "alice", aliceTOTP)); err != nil {
			t.Fatal(err)
		}
		_, err := pool.Exec(t.Context(), `UPDATE users SET totp_secret = $1 WHERE username = 'alice'`, aliceTOTP)
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.ConstraintName != "users_totp_secret_one_form" {
			t.Fatalf("setting both forms = %v, want a users_totp_secret_one_form violation", err)
		}
	})
}

// TestAnotherKEKFailsLogin runs authn over a store whose KEK is not the one
// that sealed alice's secret: the login must fail as an internal error,
// never succeed on the password alone.
func TestAnotherKEKFailsLogin(t *testing.T) {
	t.Parallel()
	pool := newUsersPool(t)
	if err := postgres.NewUserStore(pool, newSealer(t)).CreateUser(t.Context(), testUser(t, "alice", aliceTOTP)); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 6, 1, 12, 0, 15, 0, time.UTC)
	auth, err := authn.New(authn.Config{
		Users:  postgres.NewUserStore(pool, newSealer(t)),
		Logger: slog.New(slog.DiscardHandler),
		Params: cheapParams(),
		Now:    func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	code, err := totp.GenerateCode(aliceTOTP, now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		login func() (*authn.Authentication, error)
	}{
		{name: "password only", login: func() (*authn.Authentication, error) {
			return auth.Authenticate(t.Context(), authn.Credentials{Username: "alice", Password: "alice-password"})
		}},
		{name: "password and code", login: func() (*authn.Authentication, error) {
			return auth.Authenticate(t.Context(), authn.Credentials{Username: "alice", Password: "alice-password", TOTPCode: code})
		}},
		{name: "second step", login: func() (*authn.Authentication, error) {
			return auth.CompleteMFA(t.Context(), "alice", now, code)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.login()
			if got != nil || !errors.Is(err, postgres.ErrUndecryptable) ||
				errors.Is(err, authn.ErrInvalidCredentials) || errors.Is(err, authn.ErrMFARequired) {
				t.Fatalf("login = %+v, %v; want an internal ErrUndecryptable failure", got, err)
			}
		})
	}
}

// fakeSealer seals like nothing and opens with open.
type fakeSealer struct{ open func() ([]byte, error) }

func (fakeSealer) Seal(plaintext, _ []byte) ([]byte, error) { return plaintext, nil }

func (f fakeSealer) Open(_, _ []byte) ([]byte, error) { return f.open() }
