package user

import (
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// TOTP parameters (RFC 6238 with the defaults every authenticator app
// supports): HMAC-SHA1, 6 digits, 30-second steps, and one step of clock
// skew accepted either side of the current one.
const (
	TOTPPeriod = 30 * time.Second
	TOTPDigits = 6
	TOTPSkew   = 1
)

// MinTOTPSecretLen is the shortest TOTP secret accepted, in decoded bytes
// (80 bits). New enrolments should use 20 bytes (160 bits) as RFC 4226
// recommends; the demo secrets of DESIGN.md are 15 bytes.
const MinTOTPSecretLen = 10

// TOTP errors.
var (
	// ErrTOTPInvalid means the code matches no time step in the window.
	ErrTOTPInvalid = errors.New("TOTP code is invalid")
	// ErrTOTPReplayed means the code is valid but its time step is not
	// later than the last accepted one: it (or a newer code) was used.
	ErrTOTPReplayed = errors.New("TOTP code was already used")
	// ErrTOTPSecret means a TOTP secret is not usable base32.
	ErrTOTPSecret = errors.New("invalid TOTP secret")
)

// totpSecretEncoding is how secrets are stored: RFC 4648 base32, upper
// case, no padding (the form authenticator apps show and otpauth URIs use).
var totpSecretEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// ValidateTOTPSecret reports whether secret is unpadded upper-case base32
// of at least MinTOTPSecretLen bytes.
func ValidateTOTPSecret(secret string) error {
	raw, err := totpSecretEncoding.DecodeString(secret)
	if err != nil || totpSecretEncoding.EncodeToString(raw) != secret {
		return fmt.Errorf("%w: not unpadded upper-case base32", ErrTOTPSecret)
	}
	if len(raw) < MinTOTPSecretLen {
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrTOTPSecret, len(raw), MinTOTPSecretLen)
	}
	return nil
}

// TOTPStep returns the RFC 6238 time step (counter) that t falls in.
func TOTPStep(t time.Time) int64 { return t.Unix() / int64(TOTPPeriod/time.Second) }

// VerifyTOTP checks code against secret at now and returns the time step it
// matched. A code is accepted for the current step or TOTPSkew steps either
// side, and only if that step is later than lastStep (the step of the last
// code accepted for this user, zero if none), so a code is never accepted
// twice (RFC 6238 section 5.2). Every candidate is computed and compared in
// constant time, whatever matches. The caller must then store the returned
// step with a compare-and-set, so two concurrent uses of one code cannot
// both succeed.
func VerifyTOTP(secret, code string, now time.Time, lastStep int64) (int64, error) {
	if err := ValidateTOTPSecret(secret); err != nil {
		return 0, err
	}
	if len(code) != TOTPDigits {
		return 0, ErrTOTPInvalid
	}
	current := TOTPStep(now)
	var matched int64 = -1
	for step := current - TOTPSkew; step <= current+TOTPSkew; step++ {
		if step < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(step), hotp.ValidateOpts{
			Digits:    otp.DigitsSix,
			Algorithm: otp.AlgorithmSHA1,
		})
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrTOTPSecret, err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			matched = step // steps ascend, so the latest match wins
		}
	}
	switch {
	case matched < 0:
		return 0, ErrTOTPInvalid
	case matched <= lastStep:
		return 0, ErrTOTPReplayed
	}
	return matched, nil
}

// NormalizeTOTPCode returns code without surrounding or grouping spaces, as
// typed from an authenticator app that shows "123 456".
func NormalizeTOTPCode(code string) string {
	return strings.ReplaceAll(strings.TrimSpace(code), " ", "")
}
