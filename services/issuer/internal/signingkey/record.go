package signingkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// State is where a key is in its life, derived from its timestamps and the
// current time:
//
//	created ──► pending ──activate_at──► active ──retire_at──► retired ──expire_at──► expired
//	            (published,              (published,           (published,            (not published,
//	             not signing)             signing)              not signing)           deleted)
type State string

// States of a key.
const (
	// StatePending: published in the JWKS, not yet signing.
	StatePending State = "pending"
	// StateActive: published, may sign.
	StateActive State = "active"
	// StateRetired: signs no more; stays published until every token it
	// signed has expired.
	StateRetired State = "retired"
	// StateExpired: no token it signed can still be valid; not published.
	StateExpired State = "expired"
)

// Record is a signing key as stored: the public key in clear (so it can be
// published even where the private key cannot be decrypted), the private
// key sealed under the KEK, and its lifecycle timestamps.
type Record struct {
	// KID is the RFC 7638 thumbprint of the public key.
	KID string
	// Algorithm is always ES256.
	Algorithm string
	// PublicJWK is the JSON of the public key as published.
	PublicJWK []byte
	// Sealed is the private key sealed by KEK.Seal.
	Sealed []byte
	// Predecessor is the kid of the newest key when this one was created,
	// "" for the first key. At most one key names a given predecessor, which
	// is what makes concurrent rotations produce exactly one new key.
	Predecessor string
	// CreatedAt is when the key was created (and published).
	CreatedAt time.Time
	// ActivateAt is when the key starts signing.
	ActivateAt time.Time
	// RetireAt is when the key stops signing; zero while it has no successor.
	RetireAt time.Time
	// ExpireAt is when the key leaves the JWKS; zero while RetireAt is.
	ExpireAt time.Time
}

// NewRecord seals k under kek and returns its record. Times are truncated
// to microseconds, the precision every store keeps.
func NewRecord(k *Key, kek *KEK, predecessor string, createdAt, activateAt time.Time) (Record, error) {
	sealed, err := kek.Seal(k)
	if err != nil {
		return Record{}, err
	}
	jwk, err := json.Marshal(k.JWK())
	if err != nil {
		return Record{}, fmt.Errorf("signingkey: marshal JWK: %w", err)
	}
	return Record{
		KID:         k.kid,
		Algorithm:   Algorithm,
		PublicJWK:   jwk,
		Sealed:      sealed,
		Predecessor: predecessor,
		CreatedAt:   Timestamp(createdAt),
		ActivateAt:  Timestamp(activateAt),
	}, nil
}

// Timestamp normalises t to what stores keep: UTC, microseconds.
func Timestamp(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// State returns r's state at now.
func (r *Record) State(now time.Time) State {
	switch {
	case now.Before(r.ActivateAt):
		return StatePending
	case r.RetireAt.IsZero() || now.Before(r.RetireAt):
		return StateActive
	case now.Before(r.ExpireAt):
		return StateRetired
	default:
		return StateExpired
	}
}

// Validate checks what every store enforces before writing r.
func (r *Record) Validate() error {
	var errs []error
	if r.KID == "" {
		errs = append(errs, errors.New("kid is empty"))
	}
	if r.Algorithm != Algorithm {
		errs = append(errs, fmt.Errorf("alg %q, want %s", r.Algorithm, Algorithm))
	}
	if len(r.PublicJWK) == 0 || !json.Valid(r.PublicJWK) {
		errs = append(errs, errors.New("public JWK is not JSON"))
	}
	if len(r.Sealed) == 0 {
		errs = append(errs, errors.New("sealed private key is empty"))
	}
	if r.KID != "" && r.KID == r.Predecessor {
		errs = append(errs, errors.New("key is its own predecessor"))
	}
	if r.CreatedAt.IsZero() || r.ActivateAt.Before(r.CreatedAt) {
		errs = append(errs, errors.New("want created_at set and activate_at not before it"))
	}
	if r.RetireAt.IsZero() != r.ExpireAt.IsZero() || r.ExpireAt.Before(r.RetireAt) {
		errs = append(errs, errors.New("want retire_at and expire_at both set (expire_at not before retire_at) or both zero"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("signingkey: invalid record %q: %w", r.KID, errors.Join(errs...))
	}
	return nil
}

// publicKey parses r's public JWK and checks that kid is its thumbprint, so
// a published key is always the one its kid names.
func (r *Record) publicKey() (jose.JSONWebKey, error) {
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(r.PublicJWK, &jwk); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("signingkey: kid %s: public JWK: %w", r.KID, err)
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	pub, isEC := jwk.Key.(*ecdsa.PublicKey)
	if err != nil || !isEC || pub.Curve != elliptic.P256() || jwk.KeyID != r.KID || base64.RawURLEncoding.EncodeToString(tp) != r.KID {
		return jose.JSONWebKey{}, fmt.Errorf("signingkey: kid %s: public JWK is not the key the kid names", r.KID)
	}
	return jwk, nil
}
