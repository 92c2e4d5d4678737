// Package store declares what the issuer persists: OAuth 2.0 clients and
// the session behind every issued access token. Implementations live in
// store/memory (dev only) and store/postgres; store/storetest is the one
// contract suite both pass.
package store

import (
	"context"
	"errors"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Sentinel errors every implementation returns (wrapped or not).
var (
	// ErrNotFound means no record has the given key.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a record with the same key already exists.
	ErrConflict = errors.New("store: already exists")
	// ErrUndecryptable means a record's sealed field does not open under
	// the configured key-encryption key (another key, or tampering).
	ErrUndecryptable = errors.New("store: sealed value does not decrypt")
)

// ClientStore keeps OAuth 2.0 client records.
type ClientStore interface {
	// GetClient returns the client with id, or ErrNotFound.
	GetClient(ctx context.Context, id string) (*client.Client, error)
	// UpsertClient validates c and creates or replaces the client with its ID.
	UpsertClient(ctx context.Context, c *client.Client) error
}

// TokenSessionStore keeps the session of every issued access token, keyed
// by the token's signature.
type TokenSessionStore interface {
	// CreateTokenSession stores rec; ErrConflict if its signature or jti is
	// already stored, ErrNotFound if its client does not exist.
	CreateTokenSession(ctx context.Context, rec tokensession.Record) error
	// GetTokenSession returns the record for signature, or ErrNotFound.
	GetTokenSession(ctx context.Context, signature string) (tokensession.Record, error)
	// DeleteTokenSession removes the record for signature, or returns ErrNotFound.
	DeleteTokenSession(ctx context.Context, signature string) error
}

// Store is everything the issuer persists, plus a readiness probe.
type Store interface {
	ClientStore
	TokenSessionStore
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}
