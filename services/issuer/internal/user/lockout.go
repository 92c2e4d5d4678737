package user

import (
	"errors"
	"time"
)

// LockoutPolicy says how long an account stays locked after consecutive
// failed logins: from the Threshold-th failure on, each failure locks the
// account for Base, doubling with every further failure up to Max. A
// successful login resets the count. Stores apply it atomically when they
// record a failure (store.UserStore.RecordLoginFailure).
type LockoutPolicy struct {
	// Threshold is the number of consecutive failures that first locks.
	Threshold int
	// Base is the first lockout's duration.
	Base time.Duration
	// Max caps the lockout's duration.
	Max time.Duration
}

// DefaultLockout locks after 5 consecutive failures for 1 minute, then 2,
// 4, 8 and at most 15 minutes per further failure: slow enough to make
// online guessing useless (a few hundred guesses a day), short enough that
// an attacker cannot lock a user out for long.
func DefaultLockout() LockoutPolicy {
	return LockoutPolicy{Threshold: 5, Base: time.Minute, Max: 15 * time.Minute}
}

// Validate reports whether p is usable.
func (p LockoutPolicy) Validate() error {
	if p.Threshold < 1 || p.Base <= 0 || p.Max < p.Base {
		return errors.New("lockout policy: need threshold >= 1 and 0 < base <= max")
	}
	return nil
}

// Duration returns how long the account is locked after its failures-th
// consecutive failure: zero below the threshold.
func (p LockoutPolicy) Duration(failures int) time.Duration {
	if failures < p.Threshold {
		return 0
	}
	d := p.Base
	for i := p.Threshold; i < failures && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// LoginState is the throttling state of an account after a store recorded
// a failure.
type LoginState struct {
	// FailedAttempts counts consecutive failures, this one included.
	FailedAttempts int
	// LockedUntil is the end of the lockout; zero if the account is not locked.
	LockedUntil time.Time
}
