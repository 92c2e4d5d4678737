// Package authn authenticates end users against the user store: password
// (argon2id), then TOTP for users enrolled in it, with per-account lockout
// after repeated failures. It is the one place that decides whether a login
// succeeds; the login and MFA pages (with the authorization-code flow) call
// it and render its errors.
//
// Every failure that could tell an attacker whether an account exists (an
// unknown username, a wrong password, a wrong or replayed code) is the same
// ErrInvalidCredentials, and an unknown username costs the same password
// hash as a known one. Every outcome is logged as one structured line
// without the password or code.
package authn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// Errors returned by Authenticate and CompleteMFA; match them with
// errors.Is. Any other error is an internal failure (store unreachable,
// corrupt hash) and also means the login failed.
var (
	// ErrInvalidCredentials means the username, password or TOTP code is
	// wrong; which one is deliberately not said.
	ErrInvalidCredentials = errors.New("invalid username, password or code")
	// ErrLocked means the account is locked after repeated failures; the
	// error is a *LockedError that says until when.
	ErrLocked = errors.New("account temporarily locked")
	// ErrMFARequired means the password was right and the user must now
	// present a TOTP code; the error is an *MFARequiredError.
	ErrMFARequired = errors.New("second factor required")
	// ErrMFAExpired means CompleteMFA was called too long after the
	// password was verified; the login must start again.
	ErrMFAExpired = errors.New("second factor not completed in time")
)

// LockedError is ErrLocked with the end of the lockout, for a Retry-After
// or a "try again in N minutes" message.
type LockedError struct {
	// Until is when the account unlocks.
	Until time.Time
}

// Error implements error.
func (e *LockedError) Error() string {
	return fmt.Sprintf("%v until %s", ErrLocked, e.Until.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// MFARequiredError is ErrMFARequired with what the second step needs. The
// login page keeps both fields in server-side session state (never in a
// form field the browser could change) and passes them to CompleteMFA.
type MFARequiredError struct {
	// Username is the normalized username whose password was verified.
	Username string
	// PasswordVerifiedAt is when the password was verified.
	PasswordVerifiedAt time.Time
}

// Error implements error.
func (e *MFARequiredError) Error() string { return ErrMFARequired.Error() }

// Is makes errors.Is(err, ErrMFARequired) true.
func (e *MFARequiredError) Is(target error) bool { return target == ErrMFARequired }

// Authentication method references (RFC 8176) for the amr claim.
const (
	MethodPassword = "pwd"
	MethodOTP      = "otp"
	MethodMFA      = "mfa"
)

// MFAWindow is how long after the password step the TOTP step may complete.
const MFAWindow = 5 * time.Minute

// Credentials are what a user typed on the login page.
type Credentials struct {
	// Username as typed; it is normalized before lookup.
	Username string
	// Password as typed.
	Password string
	// TOTPCode as typed; ignored for users without a second factor.
	TOTPCode string
}

// Authentication is a successful login, with what the ID token's sub, amr
// and auth_time claims need.
type Authentication struct {
	// User is the authenticated user as stored.
	User *user.User
	// Methods are the RFC 8176 amr values: pwd, plus otp and mfa when a TOTP
	// code was verified.
	Methods []string
	// Time is when the authentication completed (auth_time).
	Time time.Time
}

// Config configures an Authenticator.
type Config struct {
	// Users is the user store; required.
	Users store.UserStore
	// Logger receives one audit line per login attempt; required.
	Logger *slog.Logger
	// Params are the argon2id parameters for new hashes: a stored hash with
	// other parameters is replaced after a successful login. Zero means
	// user.DefaultParams().
	Params user.Params
	// Lockout is the lockout policy; zero means user.DefaultLockout().
	Lockout user.LockoutPolicy
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxConcurrentHashes bounds the password hashes computed at once (each
	// holds Params.Memory), so a burst of logins queues instead of
	// exhausting memory. Zero means runtime.GOMAXPROCS(0).
	MaxConcurrentHashes int
}

// Authenticator runs logins. It is safe for concurrent use.
type Authenticator struct {
	users   store.UserStore
	logger  *slog.Logger
	params  user.Params
	lockout user.LockoutPolicy
	now     func() time.Time
	hashes  chan struct{}
	// dummyHash is verified for unknown usernames so that they cost the
	// same time as a wrong password.
	dummyHash string
}

// New returns an Authenticator. It computes one password hash (to answer
// unknown usernames in the same time as known ones), so it takes as long as
// a login.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Users == nil || cfg.Logger == nil {
		return nil, errors.New("authn: Users and Logger are required")
	}
	a := &Authenticator{
		users:   cfg.Users,
		logger:  cfg.Logger,
		params:  cfg.Params,
		lockout: cfg.Lockout,
		now:     cfg.Now,
	}
	if a.params == (user.Params{}) {
		a.params = user.DefaultParams()
	}
	if a.lockout == (user.LockoutPolicy{}) {
		a.lockout = user.DefaultLockout()
	}
	if err := a.lockout.Validate(); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	if a.now == nil {
		a.now = time.Now
	}
	n := cfg.MaxConcurrentHashes
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	a.hashes = make(chan struct{}, n)
	random := make([]byte, 32)
	_, _ = rand.Read(random) // crypto/rand.Read never fails (it crashes the program instead).
	dummy, err := user.HashPassword(base64.RawStdEncoding.EncodeToString(random), a.params)
	if err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	a.dummyHash = dummy
	return a, nil
}

// Audit vocabulary: outcome and reason of each login line.
const (
	outcomeSuccess     = "success"
	outcomeFailure     = "failure"
	outcomeLocked      = "locked"
	outcomeMFARequired = "mfa_required"
	outcomeError       = "error"

	reasonUnknownUser   = "unknown_user"
	reasonWrongPassword = "wrong_password"
	reasonMissingTOTP   = "missing_totp"
	reasonWrongTOTP     = "wrong_totp"
	reasonReplayedTOTP  = "replayed_totp"
	reasonMFAExpired    = "mfa_expired"
	reasonInternal      = "internal"
)

// Authenticate checks c: the account must exist and not be locked, the
// password must match and, for users enrolled in TOTP, the code must be
// valid and unused. A TOTP user without a code gets an *MFARequiredError
// (complete with CompleteMFA); a code sent for a user without TOTP is
// ignored. Failures count towards the lockout; success resets the count.
func (a *Authenticator) Authenticate(ctx context.Context, c Credentials) (*Authentication, error) {
	now := a.now()
	u, err := a.lookup(ctx, c.Username, c.Password)
	if err != nil {
		return nil, err
	}
	if err := a.checkLock(ctx, u, now); err != nil {
		return nil, err
	}
	if err := a.verifyPassword(ctx, u.PasswordHash, c.Password); err != nil {
		if errors.Is(err, user.ErrPasswordMismatch) {
			return nil, a.fail(ctx, u, now, reasonWrongPassword)
		}
		a.audit(ctx, slog.LevelError, u.Username, outcomeError, reasonInternal, slog.String("error", err.Error()))
		return nil, fmt.Errorf("authn: verify password of %q: %w", u.Username, err)
	}
	a.rehash(ctx, u, c.Password)
	if !u.HasTOTP() {
		return a.succeed(ctx, u, now, MethodPassword)
	}
	code := user.NormalizeTOTPCode(c.TOTPCode)
	if code == "" {
		a.audit(ctx, slog.LevelInfo, u.Username, outcomeMFARequired, reasonMissingTOTP)
		return nil, &MFARequiredError{Username: u.Username, PasswordVerifiedAt: now}
	}
	return a.secondFactor(ctx, u, now, code)
}

// CompleteMFA is the second step of a login whose Authenticate returned an
// *MFARequiredError: username and passwordVerifiedAt must come from that
// error, kept in server-side session state. Calling it for a user whose
// password was not verified would skip the password: never do that. It
// fails with ErrMFAExpired after MFAWindow.
func (a *Authenticator) CompleteMFA(ctx context.Context, username string, passwordVerifiedAt time.Time, code string) (*Authentication, error) {
	now := a.now()
	if now.Before(passwordVerifiedAt) || now.Sub(passwordVerifiedAt) > MFAWindow {
		a.audit(ctx, slog.LevelWarn, username, outcomeFailure, reasonMFAExpired)
		return nil, ErrMFAExpired
	}
	u, err := a.users.GetUser(ctx, username)
	if err != nil {
		a.audit(ctx, slog.LevelError, username, outcomeError, reasonInternal, slog.String("error", err.Error()))
		return nil, fmt.Errorf("authn: %w", err)
	}
	if err := a.checkLock(ctx, u, now); err != nil {
		return nil, err
	}
	if !u.HasTOTP() {
		// The enrolment was removed between the steps: start again.
		return nil, a.fail(ctx, u, now, reasonWrongTOTP)
	}
	return a.secondFactor(ctx, u, now, user.NormalizeTOTPCode(code))
}

// lookup finds the user, or spends a dummy hash and returns
// ErrInvalidCredentials when there is none.
func (a *Authenticator) lookup(ctx context.Context, typed, password string) (*user.User, error) {
	username, err := user.NormalizeUsername(typed)
	if err == nil {
		var u *user.User
		u, err = a.users.GetUser(ctx, username)
		if err == nil {
			return u, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			a.audit(ctx, slog.LevelError, username, outcomeError, reasonInternal, slog.String("error", err.Error()))
			return nil, fmt.Errorf("authn: %w", err)
		}
	}
	// Same cost as a wrong password, so timing does not tell the two apart.
	// The typed name is not logged: people type passwords into it.
	_ = a.verifyPassword(ctx, a.dummyHash, password)
	a.audit(ctx, slog.LevelWarn, "", outcomeFailure, reasonUnknownUser)
	return nil, ErrInvalidCredentials
}

func (a *Authenticator) checkLock(ctx context.Context, u *user.User, now time.Time) error {
	if !u.LockedAt(now) {
		return nil
	}
	a.audit(ctx, slog.LevelWarn, u.Username, outcomeLocked, "",
		slog.Int("failed_attempts", u.FailedAttempts), slog.Time("locked_until", u.LockedUntil))
	return &LockedError{Until: u.LockedUntil}
}

func (a *Authenticator) secondFactor(ctx context.Context, u *user.User, now time.Time, code string) (*Authentication, error) {
	step, err := user.VerifyTOTP(u.TOTPSecret, code, now, u.TOTPLastStep)
	switch {
	case errors.Is(err, user.ErrTOTPInvalid):
		return nil, a.fail(ctx, u, now, reasonWrongTOTP)
	case errors.Is(err, user.ErrTOTPReplayed):
		return nil, a.fail(ctx, u, now, reasonReplayedTOTP)
	case err != nil:
		a.audit(ctx, slog.LevelError, u.Username, outcomeError, reasonInternal, slog.String("error", err.Error()))
		return nil, fmt.Errorf("authn: TOTP of %q: %w", u.Username, err)
	}
	// Compare-and-set: a concurrent login with the same code loses here.
	if err := a.users.AdvanceTOTPStep(ctx, u.Username, step); errors.Is(err, store.ErrConflict) {
		return nil, a.fail(ctx, u, now, reasonReplayedTOTP)
	} else if err != nil {
		a.audit(ctx, slog.LevelError, u.Username, outcomeError, reasonInternal, slog.String("error", err.Error()))
		return nil, fmt.Errorf("authn: %w", err)
	}
	u.TOTPLastStep = step
	return a.succeed(ctx, u, now, MethodPassword, MethodOTP, MethodMFA)
}

// fail records a failure against u and returns ErrInvalidCredentials.
func (a *Authenticator) fail(ctx context.Context, u *user.User, now time.Time, reason string) error {
	state, err := a.users.RecordLoginFailure(ctx, u.Username, now, a.lockout)
	if err != nil {
		a.audit(ctx, slog.LevelError, u.Username, outcomeFailure, reason, slog.String("error", err.Error()))
		return fmt.Errorf("%w (recording the failure: %w)", ErrInvalidCredentials, err)
	}
	attrs := []slog.Attr{slog.Int("failed_attempts", state.FailedAttempts)}
	if state.LockedUntil.After(now) {
		attrs = append(attrs, slog.Time("locked_until", state.LockedUntil))
	}
	a.audit(ctx, slog.LevelWarn, u.Username, outcomeFailure, reason, attrs...)
	return ErrInvalidCredentials
}

func (a *Authenticator) succeed(ctx context.Context, u *user.User, now time.Time, methods ...string) (*Authentication, error) {
	if u.FailedAttempts != 0 || !u.LockedUntil.IsZero() {
		if err := a.users.RecordLoginSuccess(ctx, u.Username); err != nil {
			a.audit(ctx, slog.LevelError, u.Username, outcomeError, reasonInternal, slog.String("error", err.Error()))
			return nil, fmt.Errorf("authn: %w", err)
		}
		u.FailedAttempts, u.LockedUntil = 0, time.Time{}
	}
	a.audit(ctx, slog.LevelInfo, u.Username, outcomeSuccess, "", slog.Any("amr", methods))
	return &Authentication{User: u, Methods: methods, Time: now}, nil
}

// rehash replaces a hash computed under other parameters than a.params,
// now that the password is known to be right. Failing to do so is logged,
// not fatal: the old hash still verifies.
func (a *Authenticator) rehash(ctx context.Context, u *user.User, password string) {
	if !user.NeedsRehash(u.PasswordHash, a.params) {
		return
	}
	if err := a.acquire(ctx); err != nil {
		return
	}
	hash, err := user.HashPassword(password, a.params)
	a.release()
	if err == nil {
		err = a.users.SetPasswordHash(ctx, u.Username, hash)
	}
	if err != nil {
		a.logger.WarnContext(ctx, "password rehash failed", slog.String("username", u.Username), slog.String("error", err.Error()))
		return
	}
	u.PasswordHash = hash
}

// verifyPassword runs user.VerifyPassword under the concurrency bound.
func (a *Authenticator) verifyPassword(ctx context.Context, hash, password string) error {
	if err := a.acquire(ctx); err != nil {
		return err
	}
	defer a.release()
	return user.VerifyPassword(hash, password)
}

func (a *Authenticator) acquire(ctx context.Context) error {
	select {
	case a.hashes <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("authn: waiting to hash: %w", context.Cause(ctx))
	}
}

func (a *Authenticator) release() { <-a.hashes }

// audit writes one login line. It never receives the password or code.
func (a *Authenticator) audit(ctx context.Context, level slog.Level, username, outcome, reason string, extra ...slog.Attr) {
	attrs := make([]slog.Attr, 0, 4+len(extra))
	attrs = append(attrs, slog.String("event", "user.login"), slog.String("outcome", outcome))
	if username != "" {
		attrs = append(attrs, slog.String("username", username))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	attrs = append(attrs, extra...)
	a.logger.LogAttrs(ctx, level, "user login", attrs...)
}
