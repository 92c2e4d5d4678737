package demoseed

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// SeedUsers upserts the demo users of DESIGN.md (see Users) into users,
// with their passwords hashed by argon2id under params and their TOTP
// secrets. It is idempotent: a user whose stored hash already verifies the
// demo password under params keeps it, and login state (failures, lockout,
// last TOTP step) is never reset. checks vet each username (the application
// passes one that refuses OAuth 2.0 client ids; see user.UsernameCheck).
func SeedUsers(ctx context.Context, users store.UserStore, params user.Params, checks ...user.UsernameCheck) error {
	for _, d := range Users() {
		if err := user.CheckPasswordPolicy(d.Password); err != nil {
			return fmt.Errorf("demoseed: user %s: %w", d.Username, err)
		}
		hash, err := demoHash(ctx, users, d, params)
		if err != nil {
			return err
		}
		u := &user.User{
			Username:     d.Username,
			Tenant:       d.Tenant,
			Roles:        d.Roles,
			PasswordHash: hash,
			TOTPSecret:   d.TOTPSecret,
		}
		if err := user.ValidateNew(ctx, u, checks...); err != nil {
			return fmt.Errorf("demoseed: %w", err)
		}
		if err := users.UpsertUser(ctx, u); err != nil {
			return fmt.Errorf("demoseed: %w", err)
		}
	}
	return nil
}

// demoHash returns the stored hash of d when it verifies d's password under
// params, and a fresh hash otherwise.
func demoHash(ctx context.Context, users store.UserStore, d User, params user.Params) (string, error) {
	existing, err := users.GetUser(ctx, d.Username)
	if errors.Is(err, store.ErrUndecryptable) {
		// A demo restart with a new ephemeral key-encryption key: the
		// stored TOTP secret cannot open; the upsert reseals it.
		err = store.ErrNotFound
	}
	switch {
	case err == nil:
		if !user.NeedsRehash(existing.PasswordHash, params) && user.VerifyPassword(existing.PasswordHash, d.Password) == nil {
			return existing.PasswordHash, nil
		}
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("demoseed: %w", err)
	}
	hash, err := user.HashPassword(d.Password, params)
	if err != nil {
		return "", fmt.Errorf("demoseed: user %s: %w", d.Username, err)
	}
	return hash, nil
}
