package authn_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

const (
	aliceSecret = "JBSWY3DPEHPK3PXPALICE234"
	start       = "2030-06-01T12:00:15Z"
)

// cheapParams keep tests fast under -race.
func cheapParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// lines returns the logged JSON lines.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

type env struct {
	auth  *authn.Authenticator
	users *memory.UserStore
	clock *clock
	log   *syncBuffer
}

// newEnv seeds the demo users into a memory store and returns an
// Authenticator over it with a fixed clock.
func newEnv(t *testing.T, params user.Params) *env {
	t.Helper()
	start, err := time.Parse(time.RFC3339, start)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{users: memory.NewUserStore(), clock: &clock{t: start}, log: &syncBuffer{}}
	if err := demoseed.SeedUsers(t.Context(), e.users, params); err != nil {
		t.Fatal(err)
	}
	e.auth, err = authn.New(authn.Config{
		Users:  e.users,
		Logger: slog.New(slog.NewJSONHandler(e.log, nil)),
		Params: params,
		Now:    e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) code(t *testing.T, offset time.Duration) string {
	t.Helper()
	c, err := totp.GenerateCode(aliceSecret, e.clock.Now().Add(offset))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) failures(t *testing.T, username string) int {
	t.Helper()
	u, err := e.users.GetUser(t.Context(), username)
	if err != nil {
		t.Fatal(err)
	}
	return u.FailedAttempts
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	const otherCode = "code-of-another-step"
	tests := []struct {
		name        string
		creds       func(t *testing.T, e *env) authn.Credentials
		wantErr     error
		wantMethods []string
		wantFailed  int
	}{
		{
			name: "password user",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "bob", Password: "bob-demo-password"}
			},
			wantMethods: []string{"pwd"},
		},
		{
			name: "username is case-insensitive",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "BoB", Password: "bob-demo-password"}
			},
			wantMethods: []string{"pwd"},
		},
		{
			name: "code ignored for a user without TOTP",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "bob", Password: "bob-demo-password", TOTPCode: "anything"}
			},
			wantMethods: []string{"pwd"},
		},
		{
			name: "wrong password",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "bob", Password: "alice-demo-password"}
			},
			wantErr:    authn.ErrInvalidCredentials,
			wantFailed: 1,
		},
		{
			name: "code does not replace the password",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "bob", Password: "", TOTPCode: "123456"}
			},
			wantErr:    authn.ErrInvalidCredentials,
			wantFailed: 1,
		},
		{
			name: "unknown user",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "mallory", Password: "bob-demo-password"}
			},
			wantErr: authn.ErrInvalidCredentials,
		},
		{
			name: "malformed username",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "bob smith", Password: "bob-demo-password"}
			},
			wantErr: authn.ErrInvalidCredentials,
		},
		{
			name: "TOTP user with password and code",
			creds: func(t *testing.T, e *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, 0)}
			},
			wantMethods: []string{"pwd", "otp", "mfa"},
		},
		{
			name: "TOTP code typed with a space",
			creds: func(t *testing.T, e *env) authn.Credentials {
				c := e.code(t, 0)
				return authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: c[:3] + " " + c[3:]}
			},
			wantMethods: []string{"pwd", "otp", "mfa"},
		},
		{
			name: "TOTP code of the previous step (skew)",
			creds: func(t *testing.T, e *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, -30*time.Second)}
			},
			wantMethods: []string{"pwd", "otp", "mfa"},
		},
		{
			name: "TOTP user without code",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "alice-demo-password"}
			},
			wantErr: authn.ErrMFARequired,
		},
		{
			name: "TOTP user with a stale code",
			creds: func(t *testing.T, e *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, -90*time.Second)}
			},
			wantErr:    authn.ErrInvalidCredentials,
			wantFailed: 1,
		},
		{
			name: "TOTP user with a non-code",
			creds: func(*testing.T, *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: otherCode}
			},
			wantErr:    authn.ErrInvalidCredentials,
			wantFailed: 1,
		},
		{
			name: "TOTP user with right code, wrong password",
			creds: func(t *testing.T, e *env) authn.Credentials {
				return authn.Credentials{Username: "alice", Password: "bob-demo-password", TOTPCode: e.code(t, 0)}
			},
			wantErr:    authn.ErrInvalidCredentials,
			wantFailed: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cheapParams())
			c := tc.creds(t, e)
			got, err := e.auth.Authenticate(t.Context(), c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Authenticate = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if got != nil {
					t.Fatalf("Authenticate returned %+v with an error", got)
				}
				if name, nerr := user.NormalizeUsername(c.Username); nerr == nil {
					if u, gerr := e.users.GetUser(t.Context(), name); gerr == nil && u.FailedAttempts != tc.wantFailed {
						t.Fatalf("failed attempts = %d, want %d", u.FailedAttempts, tc.wantFailed)
					}
				}
				return
			}
			want, _ := user.NormalizeUsername(c.Username)
			if got.User.Username != want || !slices.Equal(got.Methods, tc.wantMethods) || !got.Time.Equal(e.clock.Now()) {
				t.Fatalf("Authenticate = %+v (user %q), want user %q methods %v", got, got.User.Username, want, tc.wantMethods)
			}
		})
	}
}

// TestNoUserEnumeration: an unknown username and a wrong password give the
// same error, and both pay for a password hash.
func TestNoUserEnumeration(t *testing.T) {
	t.Parallel()
	// Costly enough that a skipped hash would show, cheap enough for -race.
	e := newEnv(t, user.Params{Memory: 16 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	attempt := func(username string) (time.Duration, error) {
		begin := time.Now()
		_, err := e.auth.Authenticate(t.Context(), authn.Credentials{Username: username, Password: "wrong-password-123"})
		return time.Since(begin), err
	}
	unknown, wrong := time.Hour, time.Hour
	for range 3 {
		du, errUnknown := attempt("mallory")
		dw, errWrong := attempt("bob")
		if !errors.Is(errUnknown, authn.ErrInvalidCredentials) || errUnknown.Error() != errWrong.Error() {
			t.Fatalf("unknown user: %v; wrong password: %v; want the same ErrInvalidCredentials", errUnknown, errWrong)
		}
		unknown, wrong = min(unknown, du), min(wrong, dw)
	}
	if unknown < wrong/3 {
		t.Fatalf("unknown user answered in %v, wrong password in %v: the unknown path skips the hash", unknown, wrong)
	}
}

func TestLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	ctx := t.Context()
	wrong := authn.Credentials{Username: "bob", Password: "not-bobs-password"}
	right := authn.Credentials{Username: "bob", Password: "bob-demo-password"}

	for i := 1; i <= 4; i++ {
		if _, err := e.auth.Authenticate(ctx, wrong); !errors.Is(err, authn.ErrInvalidCredentials) {
			t.Fatalf("failure %d = %v, want ErrInvalidCredentials", i, err)
		}
	}
	if _, err := e.auth.Authenticate(ctx, wrong); !errors.Is(err, authn.ErrInvalidCredentials) {
		t.Fatalf("fifth failure = %v, want ErrInvalidCredentials", err)
	}
	steps := []struct {
		name      string
		lockedFor time.Duration
	}{
		{name: "after 5 failures", lockedFor: time.Minute},
		{name: "after 6 failures", lockedFor: 2 * time.Minute},
		{name: "after 7 failures", lockedFor: 4 * time.Minute},
		{name: "after 8 failures", lockedFor: 8 * time.Minute},
		{name: "after 9 failures", lockedFor: 15 * time.Minute},
		{name: "after 10 failures", lockedFor: 15 * time.Minute},
	}
	for i, st := range steps {
		// Locked: even the right password is refused, checked before the
		// password, and the refusal does not count as a failure.
		before := e.failures(t, "bob")
		_, err := e.auth.Authenticate(ctx, right)
		var locked *authn.LockedError
		if !errors.As(err, &locked) || !errors.Is(err, authn.ErrLocked) {
			t.Fatalf("%s: right password = %v, want ErrLocked", st.name, err)
		}
		if want := e.clock.Now().Add(st.lockedFor); !locked.Until.Equal(want) {
			t.Fatalf("%s: locked until %v, want %v", st.name, locked.Until, want)
		}
		if _, err := e.auth.Authenticate(ctx, wrong); !errors.Is(err, authn.ErrLocked) {
			t.Fatalf("%s: wrong password while locked = %v, want ErrLocked", st.name, err)
		}
		if got := e.failures(t, "bob"); got != before {
			t.Fatalf("%s: attempts while locked counted: %d -> %d", st.name, before, got)
		}
		e.clock.Advance(st.lockedFor)
		if i < len(steps)-1 {
			if _, err := e.auth.Authenticate(ctx, wrong); !errors.Is(err, authn.ErrInvalidCredentials) {
				t.Fatalf("%s: failure after the lockout = %v, want ErrInvalidCredentials", st.name, err)
			}
		}
	}
	// The lockout is over: the right password works and resets the count.
	if _, err := e.auth.Authenticate(ctx, right); err != nil {
		t.Fatalf("right password after the lockout = %v", err)
	}
	if got := e.failures(t, "bob"); got != 0 {
		t.Fatalf("failed attempts after success = %d, want 0", got)
	}
	for i := 1; i <= 4; i++ {
		if _, err := e.auth.Authenticate(ctx, wrong); !errors.Is(err, authn.ErrInvalidCredentials) {
			t.Fatalf("failure %d after reset = %v, want ErrInvalidCredentials (not locked)", i, err)
		}
	}
	if _, err := e.auth.Authenticate(ctx, right); err != nil {
		t.Fatalf("right password after 4 new failures = %v", err)
	}
}

func TestTOTPFailuresCountTowardsLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	for range 5 {
		_, err := e.auth.Authenticate(t.Context(), authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: "000000"})
		if !errors.Is(err, authn.ErrInvalidCredentials) {
			t.Fatalf("wrong code = %v, want ErrInvalidCredentials", err)
		}
	}
	_, err := e.auth.Authenticate(t.Context(), authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, 0)})
	if !errors.Is(err, authn.ErrLocked) {
		t.Fatalf("right code after 5 wrong ones = %v, want ErrLocked", err)
	}
}

func TestTOTPReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	creds := authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, 0)}
	if _, err := e.auth.Authenticate(t.Context(), creds); err != nil {
		t.Fatalf("first use = %v", err)
	}
	e.clock.Advance(10 * time.Second)
	if _, err := e.auth.Authenticate(t.Context(), creds); !errors.Is(err, authn.ErrInvalidCredentials) {
		t.Fatalf("replayed code = %v, want ErrInvalidCredentials", err)
	}
	if got := e.failures(t, "alice"); got != 1 {
		t.Fatalf("failed attempts after replay = %d, want 1", got)
	}
	lines := e.log.lines(t)
	if last := lines[len(lines)-1]; last["reason"] != "replayed_totp" || last["outcome"] != "failure" {
		t.Fatalf("last audit line = %v, want a replayed_totp failure", last)
	}
	e.clock.Advance(30 * time.Second)
	creds.TOTPCode = e.code(t, 0)
	if _, err := e.auth.Authenticate(t.Context(), creds); err != nil {
		t.Fatalf("next step's code = %v", err)
	}
}

// TestConcurrentUseOfOneCode: of several logins racing with the same code,
// exactly one succeeds.
func TestConcurrentUseOfOneCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	creds := authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: e.code(t, 0)}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = e.auth.Authenticate(t.Context(), creds) })
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, authn.ErrInvalidCredentials) && !errors.Is(err, authn.ErrLocked):
			// Losers fail, and once five have, the rest find the account locked.
			t.Fatalf("Authenticate = %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d logins succeeded with one code, want 1", wins)
	}
}

func TestConcurrentFailuresAreCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	const n = 4 // below the threshold, so no attempt is refused as locked
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := e.auth.Authenticate(t.Context(), authn.Credentials{Username: "bob", Password: "wrong-password-123"})
			if !errors.Is(err, authn.ErrInvalidCredentials) {
				t.Errorf("Authenticate = %v", err)
			}
		})
	}
	wg.Wait()
	if got := e.failures(t, "bob"); got != n {
		t.Fatalf("failed attempts = %d, want %d", got, n)
	}
}

func TestCompleteMFA(t *testing.T) {
	t.Parallel()
	first := func(t *testing.T, e *env) *authn.MFARequiredError {
		t.Helper()
		_, err := e.auth.Authenticate(t.Context(), authn.Credentials{Username: "Alice", Password: "alice-demo-password"})
		var mfa *authn.MFARequiredError
		if !errors.As(err, &mfa) || mfa.Username != "alice" || !mfa.PasswordVerifiedAt.Equal(e.clock.Now()) {
			t.Fatalf("password step = %v, want *MFARequiredError for alice now", err)
		}
		return mfa
	}
	t.Run("right code", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cheapParams())
		mfa := first(t, e)
		e.clock.Advance(20 * time.Second)
		got, err := e.auth.CompleteMFA(t.Context(), mfa.Username, mfa.PasswordVerifiedAt, e.code(t, 0))
		if err != nil || !slices.Equal(got.Methods, []string{"pwd", "otp", "mfa"}) || got.User.Username != "alice" {
			t.Fatalf("CompleteMFA = %+v, %v", got, err)
		}
	})
	t.Run("wrong code counts", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cheapParams())
		mfa := first(t, e)
		if _, err := e.auth.CompleteMFA(t.Context(), mfa.Username, mfa.PasswordVerifiedAt, "000000"); !errors.Is(err, authn.ErrInvalidCredentials) {
			t.Fatalf("CompleteMFA = %v, want ErrInvalidCredentials", err)
		}
		if got := e.failures(t, "alice"); got != 1 {
			t.Fatalf("failed attempts = %d, want 1", got)
		}
	})
	t.Run("too late", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cheapParams())
		mfa := first(t, e)
		e.clock.Advance(authn.MFAWindow + time.Second)
		if _, err := e.auth.CompleteMFA(t.Context(), mfa.Username, mfa.PasswordVerifiedAt, e.code(t, 0)); !errors.Is(err, authn.ErrMFAExpired) {
			t.Fatalf("CompleteMFA = %v, want ErrMFAExpired", err)
		}
	})
	t.Run("locked meanwhile", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cheapParams())
		mfa := first(t, e)
		for range 5 {
			_, _ = e.auth.Authenticate(t.Context(), authn.Credentials{Username: "alice", Password: "wrong-password-123"})
		}
		if _, err := e.auth.CompleteMFA(t.Context(), mfa.Username, mfa.PasswordVerifiedAt, e.code(t, 0)); !errors.Is(err, authn.ErrLocked) {
			t.Fatalf("CompleteMFA = %v, want ErrLocked", err)
		}
	})
}

func TestRehashOnLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams()) // users hashed under cheapParams
	raised := cheapParams()
	raised.Time = 2
	auth, err := authn.New(authn.Config{Users: e.users, Logger: slog.New(slog.DiscardHandler), Params: raised, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Authenticate(t.Context(), authn.Credentials{Username: "bob", Password: "bob-demo-password"}); err != nil {
		t.Fatal(err)
	}
	u, err := e.users.GetUser(t.Context(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := user.ParseParams(u.PasswordHash); err != nil || got != raised {
		t.Fatalf("stored parameters = %+v, %v; want %+v", got, err, raised)
	}
	if err := user.VerifyPassword(u.PasswordHash, "bob-demo-password"); err != nil {
		t.Fatalf("rehashed password does not verify: %v", err)
	}
}

// TestAuditLog: one line per attempt with username, outcome and reason,
// and never a password, a code or a name typed for an unknown account.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cheapParams())
	code := e.code(t, 0)
	attempts := []struct {
		creds                     authn.Credentials
		username, outcome, reason string
	}{
		{authn.Credentials{Username: "bob", Password: "bob-demo-password"}, "bob", "success", ""},
		{authn.Credentials{Username: "bob", Password: "secret-guess-1"}, "bob", "failure", "wrong_password"},
		{authn.Credentials{Username: "hunter2hunter2", Password: "secret-guess-2"}, "", "failure", "unknown_user"},
		{authn.Credentials{Username: "alice", Password: "alice-demo-password"}, "alice", "mfa_required", "missing_totp"},
		{authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: "999999"}, "alice", "failure", "wrong_totp"},
		{authn.Credentials{Username: "alice", Password: "alice-demo-password", TOTPCode: code}, "alice", "success", ""},
	}
	for _, a := range attempts {
		_, _ = e.auth.Authenticate(t.Context(), a.creds)
	}
	lines := e.log.lines(t)
	if len(lines) != len(attempts) {
		t.Fatalf("%d audit lines for %d attempts:\n%s", len(lines), len(attempts), e.log.String())
	}
	for i, a := range attempts {
		l := lines[i]
		username, _ := l["username"].(string)
		reason, _ := l["reason"].(string)
		if l["event"] != "user.login" || username != a.username || l["outcome"] != a.outcome || reason != a.reason {
			t.Errorf("line %d = %v, want username %q outcome %q reason %q", i, l, a.username, a.outcome, a.reason)
		}
	}
	for _, secret := range []string{"demo-password", "secret-guess", "hunter2", "999999", code} {
		if strings.Contains(e.log.String(), secret) {
			t.Errorf("audit log contains %q:\n%s", secret, e.log.String())
		}
	}
}

func TestNewRequiresStoreAndLogger(t *testing.T) {
	t.Parallel()
	if _, err := authn.New(authn.Config{Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("New without a store succeeded")
	}
	if _, err := authn.New(authn.Config{Users: memory.NewUserStore()}); err == nil {
		t.Fatal("New without a logger succeeded")
	}
	bad := authn.Config{Users: memory.NewUserStore(), Logger: slog.New(slog.DiscardHandler), Params: cheapParams(),
		Lockout: user.LockoutPolicy{Threshold: 0, Base: time.Minute, Max: time.Minute}}
	if _, err := authn.New(bad); err == nil {
		t.Fatal("New with an invalid lockout policy succeeded")
	}
}
