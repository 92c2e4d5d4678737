package user_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// The demo secrets of DESIGN.md.
const (
	aliceSecret = "JBSWY3DPEHPK3PXPALICE234"
	carolSecret = "JBSWY3DPEHPK3PXPCAROL234"
	samSecret   = "JBSWY3DPEHPK3PXPSAM23456"
)

// now is a fixed instant in the middle of a 30-second step.
var now = time.Date(2030, 6, 1, 12, 0, 15, 0, time.UTC)

func code(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyTOTP(t *testing.T) {
	t.Parallel()
	step := user.TOTPStep(now)
	tests := []struct {
		name     string
		secret   string
		code     string
		lastStep int64
		wantStep int64
		wantErr  error
	}{
		{name: "current step alice", secret: aliceSecret, code: code(t, aliceSecret, now), wantStep: step},
		{name: "current step carol", secret: carolSecret, code: code(t, carolSecret, now), wantStep: step},
		{name: "current step sam", secret: samSecret, code: code(t, samSecret, now), wantStep: step},
		{name: "previous step (skew)", secret: aliceSecret, code: code(t, aliceSecret, now.Add(-30*time.Second)), wantStep: step - 1},
		{name: "next step (skew)", secret: aliceSecret, code: code(t, aliceSecret, now.Add(30*time.Second)), wantStep: step + 1},
		{name: "two steps old", secret: aliceSecret, code: code(t, aliceSecret, now.Add(-60*time.Second)), wantErr: user.ErrTOTPInvalid},
		{name: "two steps ahead", secret: aliceSecret, code: code(t, aliceSecret, now.Add(60*time.Second)), wantErr: user.ErrTOTPInvalid},
		{name: "another user's code", secret: aliceSecret, code: code(t, carolSecret, now), wantErr: user.ErrTOTPInvalid},
		{name: "empty", secret: aliceSecret, code: "", wantErr: user.ErrTOTPInvalid},
		{name: "too short", secret: aliceSecret, code: code(t, aliceSecret, now)[:5], wantErr: user.ErrTOTPInvalid},
		{name: "too long", secret: aliceSecret, code: code(t, aliceSecret, now) + "0", wantErr: user.ErrTOTPInvalid},
		{name: "replay of the same step", secret: aliceSecret, code: code(t, aliceSecret, now), lastStep: step, wantErr: user.ErrTOTPReplayed},
		{name: "older code after a newer one", secret: aliceSecret, code: code(t, aliceSecret, now.Add(-30*time.Second)), lastStep: step, wantErr: user.ErrTOTPReplayed},
		{name: "newer code after an older one", secret: aliceSecret, code: code(t, aliceSecret, now), lastStep: step - 1, wantStep: step},
		{name: "bad secret", secret: "not-base32", code: "123456", wantErr: user.ErrTOTPSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := user.VerifyTOTP(tc.secret, tc.code, now, tc.lastStep)
			if !errors.Is(err, tc.wantErr) || got != tc.wantStep {
				t.Fatalf("VerifyTOTP = %d, %v; want %d, %v", got, err, tc.wantStep, tc.wantErr)
			}
		})
	}
}

func TestVerifyTOTPAcceptsEachCodeOnce(t *testing.T) {
	t.Parallel()
	c := code(t, samSecret, now)
	step, err := user.VerifyTOTP(samSecret, c, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Still inside the window 29 seconds later, but already used.
	if _, err := user.VerifyTOTP(samSecret, c, now.Add(29*time.Second), step); !errors.Is(err, user.ErrTOTPReplayed) {
		t.Fatalf("second use = %v, want ErrTOTPReplayed", err)
	}
}

func TestValidateTOTPSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, secret string
		wantErr      bool
	}{
		{name: "alice", secret: aliceSecret},
		{name: "carol", secret: carolSecret},
		{name: "sam", secret: samSecret},
		{name: "160 bits", secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"},
		{name: "lowercase", secret: "jbswy3dpehpk3pxpalice234", wantErr: true},
		{name: "padded", secret: "JBSWY3DPEHPK3PXPALICE2==", wantErr: true},
		{name: "digit outside alphabet", secret: "JBSWY3DPEHPK3PXPALICE210", wantErr: true},
		{name: "80 bits", secret: "JBSWY3DPEHPK3PXP"},
		{name: "40 bits", secret: "JBSWY3DP", wantErr: true},
		{name: "empty", secret: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := user.ValidateTOTPSecret(tc.secret)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, user.ErrTOTPSecret)) {
				t.Fatalf("ValidateTOTPSecret(%q) = %v, wantErr %v", tc.secret, err, tc.wantErr)
			}
		})
	}
}

func TestNormalizeTOTPCode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"123456": "123456", " 123 456\n": "123456", "": ""} {
		if got := user.NormalizeTOTPCode(in); got != want {
			t.Errorf("NormalizeTOTPCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkVerifyTOTP(b *testing.B) {
	c := code(b, aliceSecret, now)
	for b.Loop() {
		if _, err := user.VerifyTOTP(aliceSecret, c, now, 0); err != nil {
			b.Fatal(err)
		}
	}
}
