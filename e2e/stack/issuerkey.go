package stack

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The issuer's key-encryption key in the stack: where its container finds
// it, and its size (AES-256).
const (
	kekPath = "/etc/gatehouse/issuer-kek"
	kekSize = 32
)

// The seal of a stored signing key, as services/issuer/internal/signingkey
// writes it (an internal package, so it is restated here): a version byte,
// a 96-bit GCM nonce, then the PKCS #8 private key sealed under the KEK,
// with the version byte, sealAAD and the kid as additional data. Should the
// issuer change its format, IssuerSigningKey fails loudly and so does every
// test that uses it; nothing passes by accident.
const (
	sealVersion byte = 1
	sealAAD          = "gatehouse/issuer/signing-key/v1\x00"
)

// IssuerSigningKey returns the issuer's signing key that signs now, read
// from the issuer's database and opened with the stack's key-encryption
// key. It lets the attack suite make tokens that only the claims make bad
// (expired, of another issuer, for another audience): with a forged
// signature the verifier would refuse them for the signature alone, and a
// missing claim check would go unnoticed.
func (s *Stack) IssuerSigningKey(ctx context.Context) (kid string, key *ecdsa.PrivateKey, err error) {
	err = s.withIssuerDB(ctx, func(conn *pgx.Conn) error {
		var sealed []byte
		err := conn.QueryRow(ctx, `
			SELECT kid, sealed_key FROM signing_keys
			WHERE activate_at <= now() AND (retire_at IS NULL OR retire_at > now())
			ORDER BY activate_at DESC LIMIT 1`).Scan(&kid, &sealed)
		if errors.Is(err, pgx.ErrNoRows) {
			return errors.New("issuer database: no signing key is active")
		}
		if err != nil {
			return fmt.Errorf("issuer database: signing key: %w", err)
		}
		key, err = s.openSigningKey(kid, sealed)
		return err
	})
	return kid, key, err
}

// IssuerKey returns the private key of the issuer's stored signing key kid,
// whatever its state, while the issuer still stores it.
func (s *Stack) IssuerKey(ctx context.Context, kid string) (key *ecdsa.PrivateKey, err error) {
	err = s.withIssuerDB(ctx, func(conn *pgx.Conn) error {
		var sealed []byte
		err := conn.QueryRow(ctx, `SELECT sealed_key FROM signing_keys WHERE kid = $1`, kid).Scan(&sealed)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("issuer database: no signing key %s", kid)
		}
		if err != nil {
			return fmt.Errorf("issuer database: signing key %s: %w", kid, err)
		}
		key, err = s.openSigningKey(kid, sealed)
		return err
	})
	return key, err
}

// withIssuerDB runs f on a connection to the issuer's database.
func (s *Stack) withIssuerDB(ctx context.Context, f func(*pgx.Conn) error) error {
	return s.WithDB(ctx, "issuer", f)
}

// WithDB runs f on a connection to one of the stack's databases (see
// DatabaseURL), closed when f returns.
func (s *Stack) WithDB(ctx context.Context, db string, f func(*pgx.Conn) error) error {
	dsn, err := s.DatabaseURL(ctx, db)
	if err != nil {
		return err
	}
	return WithConn(ctx, dsn, f)
}

// WithConn runs f on a connection to dsn, closed when f returns.
func WithConn(ctx context.Context, dsn string, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // nothing to do about a failed close
	return f(conn)
}

// openSigningKey opens a sealed signing key (see sealVersion).
func (s *Stack) openSigningKey(kid string, sealed []byte) (*ecdsa.PrivateKey, error) {
	block, err := aes.NewCipher(s.kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(sealed) < 1+n+aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("signing key %s: not a version %d seal", kid, sealVersion)
	}
	der, err := aead.Open(nil, sealed[1:1+n], sealed[1+n:], append([]byte{sealVersion}, sealAAD+kid...))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: does not open under the stack's key-encryption key: %w", kid, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", kid, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, not an ECDSA key", kid, parsed)
	}
	return key, nil
}
