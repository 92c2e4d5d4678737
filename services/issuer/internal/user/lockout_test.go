package user_test

import (
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

func TestDefaultLockoutProgression(t *testing.T) {
	t.Parallel()
	p := user.DefaultLockout()
	want := map[int]time.Duration{
		0: 0, 1: 0, 4: 0,
		5: time.Minute, 6: 2 * time.Minute, 7: 4 * time.Minute, 8: 8 * time.Minute,
		9: 15 * time.Minute, 10: 15 * time.Minute, 1000: 15 * time.Minute,
	}
	for failures, d := range want {
		if got := p.Duration(failures); got != d {
			t.Errorf("Duration(%d) = %v, want %v", failures, got, d)
		}
	}
}

func TestLockoutPolicyValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		policy  user.LockoutPolicy
		wantErr bool
	}{
		{name: "default", policy: user.DefaultLockout()},
		{name: "zero threshold", policy: user.LockoutPolicy{Base: time.Minute, Max: time.Minute}, wantErr: true},
		{name: "zero base", policy: user.LockoutPolicy{Threshold: 5, Max: time.Minute}, wantErr: true},
		{name: "max below base", policy: user.LockoutPolicy{Threshold: 5, Base: time.Hour, Max: time.Minute}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.policy.Validate(); tc.wantErr != (err != nil) {
				t.Fatalf("Validate = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}
