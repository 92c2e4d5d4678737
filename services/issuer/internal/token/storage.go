package token

import (
	"context"
	"errors"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Storage adapts a store.Store to the storage fosite's composed provider
// needs: fosite.Storage (client lookup) and oauth2.AccessTokenStorage (the
// client_credentials handler records every token it issues).
type Storage struct {
	store store.Store
}

var (
	_ fosite.Storage            = (*Storage)(nil)
	_ oauth2.AccessTokenStorage = (*Storage)(nil)
)

// NewStorage returns fosite storage backed by s.
func NewStorage(s store.Store) *Storage { return &Storage{store: s} }

// GetClient implements fosite.ClientManager.
func (s *Storage) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound.WithWrap(err).WithDebug(err.Error())
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// errNoClientAssertions backs the client-assertion methods fosite.Storage
// requires: this issuer authenticates clients with secrets only, and its
// authentication strategy refuses assertions before fosite could ask.
var errNoClientAssertions = errors.New("token: client assertions are not accepted")

// ClientAssertionJWTValid implements fosite.ClientManager. It fails closed:
// no assertion jti is ever valid here.
func (s *Storage) ClientAssertionJWTValid(context.Context, string) error {
	return fosite.ErrJTIKnown.WithWrap(errNoClientAssertions).WithDebug(errNoClientAssertions.Error())
}

// SetClientAssertionJWT implements fosite.ClientManager; see
// ClientAssertionJWTValid.
func (s *Storage) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return errNoClientAssertions
}

// CreateAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Storage) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	rec, err := tokensession.FromRequester(signature, r)
	if err != nil {
		return err
	}
	return s.store.CreateTokenSession(ctx, rec)
}

// GetAccessTokenSession implements oauth2.AccessTokenStorage: it rebuilds
// the request the token was issued for, decoding its session into session.
func (s *Storage) GetAccessTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	rec, err := s.store.GetTokenSession(ctx, signature)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound.WithWrap(err).WithDebug(err.Error())
	}
	if err != nil {
		return nil, err
	}
	c, err := s.GetClient(ctx, rec.ClientID)
	if err != nil {
		return nil, err
	}
	return rec.Requester(c, session)
}

// DeleteAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Storage) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	err := s.store.DeleteTokenSession(ctx, signature)
	if errors.Is(err, store.ErrNotFound) {
		return fosite.ErrNotFound.WithWrap(err).WithDebug(err.Error())
	}
	return err
}
