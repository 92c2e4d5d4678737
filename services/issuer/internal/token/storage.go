package token

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Store is everything the token endpoints persist: clients, access token
// sessions, grant records (codes, PKCE and OIDC requests, refresh tokens)
// and the jtis of used client assertions. *memory.Store and
// *postgres.Store are ones.
type Store interface {
	store.Store
	store.GrantStore
	store.ClientAssertionStore
}

// Storage adapts a Store to the storage interfaces of fosite's handlers.
// Every revocation it performs (a reused authorization code or refresh
// token ends its whole grant) is reported to the Observer, which feeds the
// revocation feed and the audit log.
type Storage struct {
	store    Store
	observer Observer
	// consentActive, when set, reports whether the consent a grant rests
	// on still stands; a refresh token whose consent was withdrawn or has
	// lapsed is treated as revoked, even if revoking it failed at the time.
	consentActive func(ctx context.Context, consentID string) (bool, error)
}

var (
	_ fosite.Storage                     = (*Storage)(nil)
	_ oauth2.CoreStorage                 = (*Storage)(nil)
	_ oauth2.TokenRevocationStorage      = (*Storage)(nil)
	_ pkce.PKCERequestStorage            = (*Storage)(nil)
	_ openid.OpenIDConnectRequestStorage = (*Storage)(nil)
)

// NewStorage returns fosite storage backed by s, reporting revocations to o.
func NewStorage(s Store, o Observer) *Storage { return &Storage{store: s, observer: o} }

// GetClient implements fosite.ClientManager.
func (s *Storage) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound.WithWrap(err).WithDebug(err.Error())
	}
	if err != nil {
		// A store outage, which client authentication answers with 503.
		return nil, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	return c, nil
}

// ClientAssertionJWTValid implements fosite.ClientManager. The check and
// the record happen together, atomically, in SetClientAssertionJWT, so two
// concurrent uses of one assertion cannot both pass; here every jti passes.
func (s *Storage) ClientAssertionJWTValid(context.Context, string) error { return nil }

// SetClientAssertionJWT implements fosite.ClientManager: it records jti
// until exp and refuses a jti already used (a replayed assertion).
func (s *Storage) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	err := s.store.UseClientAssertion(ctx, jti, exp)
	if errors.Is(err, store.ErrConflict) {
		// RFC 7523 §3.2: a replayed assertion is invalid_client.
		return fosite.ErrInvalidClient.WithHint("The client assertion was already used: its jti may be used only once.")
	}
	if err != nil {
		return fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	return nil
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
	if err != nil {
		return nil, notFound(err)
	}
	c, err := s.GetClient(ctx, rec.ClientID)
	if err != nil {
		return nil, err
	}
	return rec.Requester(c, session)
}

// DeleteAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Storage) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return notFound(s.store.DeleteTokenSession(ctx, signature))
}

// CreateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage.
func (s *Storage) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createGrant(ctx, tokensession.KindAuthorizeCode, signature, "", r, fosite.AuthorizeCode)
}

// GetAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage. A used
// code comes back with fosite.ErrInvalidatedAuthorizeCode and its request,
// so that fosite revokes every token issued from it.
func (s *Storage) GetAuthorizeCodeSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, active, err := s.getGrant(ctx, tokensession.KindAuthorizeCode, signature, session)
	if err != nil {
		return nil, err
	}
	if !active {
		return r, fosite.ErrInvalidatedAuthorizeCode
	}
	return r, nil
}

// InvalidateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage. Of
// two concurrent exchanges of one code exactly one gets here first; the
// other finds the code used, which is code reuse: the grant is revoked.
func (s *Storage) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	err := s.store.DeactivateGrant(ctx, tokensession.KindAuthorizeCode, signature)
	if errors.Is(err, store.ErrInactive) {
		if g, getErr := s.store.GetGrant(ctx, tokensession.KindAuthorizeCode, signature); getErr == nil {
			if revErr := s.revokeRequest(ctx, g.RequestID, RevocationReasonCodeReuse); revErr != nil {
				return errors.Join(err, revErr)
			}
		}
		return fmt.Errorf("%w: authorization code used concurrently", err)
	}
	return notFound(err)
}

// CreatePKCERequestSession implements pkce.PKCERequestStorage.
func (s *Storage) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createGrant(ctx, tokensession.KindPKCE, signature, "", r, fosite.AuthorizeCode)
}

// GetPKCERequestSession implements pkce.PKCERequestStorage. The stored
// session is decoded into a fresh one: fosite passes the token request's
// live session, which the code grant has already set up.
func (s *Storage) GetPKCERequestSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	r, _, err := s.getGrant(ctx, tokensession.KindPKCE, signature, NewSession())
	return r, err
}

// DeletePKCERequestSession implements pkce.PKCERequestStorage.
func (s *Storage) DeletePKCERequestSession(ctx context.Context, signature string) error {
	return notFound(s.store.DeleteGrant(ctx, tokensession.KindPKCE, signature))
}

// CreateOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
func (s *Storage) CreateOpenIDConnectSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createGrant(ctx, tokensession.KindOIDC, signature, "", r, fosite.AuthorizeCode)
}

// GetOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
// The stored session is decoded into a fresh one, not into r's: r's
// session already holds the access token just signed (its jti and iat).
func (s *Storage) GetOpenIDConnectSession(ctx context.Context, signature string, _ fosite.Requester) (fosite.Requester, error) {
	out, _, err := s.getGrant(ctx, tokensession.KindOIDC, signature, NewSession())
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, openid.ErrNoSessionFound
	}
	return out, err
}

// DeleteOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
func (s *Storage) DeleteOpenIDConnectSession(ctx context.Context, signature string) error {
	return notFound(s.store.DeleteGrant(ctx, tokensession.KindOIDC, signature))
}

// CreateRefreshTokenSession implements oauth2.RefreshTokenStorage. The
// first refresh token of a grant fixes the family's end; every rotated one
// expires by then at the latest (fosite would give each a full lifetime).
func (s *Storage) CreateRefreshTokenSession(ctx context.Context, signature, accessSignature string, r fosite.Requester) error {
	if sess, ok := r.GetSession().(*Session); ok {
		exp := sess.GetExpiresAt(fosite.RefreshToken)
		if sess.FamilyExpiresAt.IsZero() {
			sess.FamilyExpiresAt = exp
		} else if exp.After(sess.FamilyExpiresAt) {
			sess.SetExpiresAt(fosite.RefreshToken, sess.FamilyExpiresAt)
		}
	}
	return s.createGrant(ctx, tokensession.KindRefreshToken, signature, accessSignature, r, fosite.RefreshToken)
}

// GetRefreshTokenSession implements oauth2.RefreshTokenStorage. A rotated
// or revoked refresh token comes back with fosite.ErrInactiveToken and its
// request, which is how fosite detects reuse and revokes the family.
func (s *Storage) GetRefreshTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	r, active, err := s.getGrant(ctx, tokensession.KindRefreshToken, signature, session)
	if err != nil {
		return nil, err
	}
	if !active {
		return r, fosite.ErrInactiveToken
	}
	if sess, ok := r.GetSession().(*Session); ok && sess.ConsentID != "" && s.consentActive != nil {
		ok, err := s.consentActive(ctx, sess.ConsentID)
		if err != nil {
			return nil, err
		}
		if !ok {
			// Inactive: fosite then revokes the whole family.
			return r, fosite.ErrInactiveToken
		}
	}
	return r, nil
}

// DeleteRefreshTokenSession implements oauth2.RefreshTokenStorage.
func (s *Storage) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	return notFound(s.store.DeleteGrant(ctx, tokensession.KindRefreshToken, signature))
}

// RotateRefreshToken implements oauth2.RefreshTokenStorage: the presented
// refresh token becomes inactive, atomically. Of two concurrent refreshes
// with one token only one rotates it; the other is reuse and revokes the
// family.
func (s *Storage) RotateRefreshToken(ctx context.Context, requestID, signature string) error {
	err := s.store.DeactivateGrant(ctx, tokensession.KindRefreshToken, signature)
	if errors.Is(err, store.ErrInactive) {
		if revErr := s.revokeRequest(ctx, requestID, RevocationReasonRefreshReuse); revErr != nil {
			return errors.Join(fosite.ErrInactiveToken, revErr)
		}
		return fosite.ErrInactiveToken
	}
	return notFound(err)
}

// RevokeRefreshToken implements oauth2.TokenRevocationStorage: the whole
// grant (refresh family and its access tokens) ends.
func (s *Storage) RevokeRefreshToken(ctx context.Context, requestID string) error {
	return s.revokeRequest(ctx, requestID, RevocationReasonReuse)
}

// RevokeAccessToken implements oauth2.TokenRevocationStorage: as
// RevokeRefreshToken (fosite calls both in turn; the second finds nothing
// left).
func (s *Storage) RevokeAccessToken(ctx context.Context, requestID string) error {
	return s.revokeRequest(ctx, requestID, RevocationReasonReuse)
}

// RevokeGrant ends the grant requestID for reason and reports it.
func (s *Storage) RevokeGrant(ctx context.Context, requestID, reason string) error {
	return s.revokeRequest(ctx, requestID, reason)
}

func (s *Storage) revokeRequest(ctx context.Context, requestID, reason string) error {
	// fosite revokes a reused grant with two calls (refresh, then access
	// tokens, or the other way round); the second finds the grant revoked
	// and reports nothing (below). The grant type names the reuse.
	if scope := scopeFrom(ctx); scope != nil && reason == RevocationReasonReuse {
		switch scope.grantType {
		case "refresh_token":
			reason = RevocationReasonRefreshReuse
		case "authorization_code":
			reason = RevocationReasonCodeReuse
		}
	}
	// A grant revoked before with no access token left (fosite's second
	// call, or a replayed token of a dead family) is not reported again:
	// no replay can flood the feed or the audit log.
	already, err := s.store.RequestRevoked(ctx, requestID)
	if err != nil {
		return fmt.Errorf("token: revoke grant: %w", err)
	}
	// The grant ends first (no token can be issued from it any more), its
	// access tokens are published, and only then are their sessions
	// deleted. Were they deleted first, a failed publication would leave
	// them to nobody: the retry (or fosite's second call, or a replay)
	// would find the grant revoked and nothing to report, and no gateway
	// would ever refuse them. This way a retry publishes them again.
	err = store.RevokeAndPublish(ctx, s.store, []string{requestID}, func(ctx context.Context, tokens []tokensession.Record) error {
		if already && len(tokens) == 0 {
			return nil
		}
		return s.observer.Revoked(ctx, Revocation{
			Kind:      RevocationRefreshFamily,
			ID:        requestID,
			Reason:    reason,
			Tokens:    tokens,
			RevokedAt: time.Now().UTC(),
		})
	})
	if err != nil {
		return fmt.Errorf("token: revoke grant: %w", err)
	}
	return nil
}

func (s *Storage) createGrant(ctx context.Context, kind tokensession.GrantKind, signature, accessSignature string, r fosite.Requester, tt fosite.TokenType) error {
	data, err := tokensession.EncodeRequest(r)
	if err != nil {
		return err
	}
	g := tokensession.Grant{
		Kind:            kind,
		Signature:       signature,
		RequestID:       r.GetID(),
		ClientID:        r.GetClient().GetID(),
		Subject:         r.GetSession().GetSubject(),
		AccessSignature: accessSignature,
		Active:          true,
		RequestedAt:     r.GetRequestedAt().UTC(),
		ExpiresAt:       r.GetSession().GetExpiresAt(tt).UTC(),
		Request:         data,
	}
	if sess, ok := r.GetSession().(*Session); ok {
		g.ConsentID = sess.ConsentID
		g.SessionID = sess.BrowserSessionID
	}
	return s.store.CreateGrant(ctx, g)
}

// getGrant returns the request stored under (kind, signature), whether it
// is active, or fosite.ErrNotFound.
func (s *Storage) getGrant(ctx context.Context, kind tokensession.GrantKind, signature string, session fosite.Session) (fosite.Requester, bool, error) {
	g, err := s.store.GetGrant(ctx, kind, signature)
	if err != nil {
		return nil, false, notFound(err)
	}
	if !g.ExpiresAt.IsZero() && time.Now().After(g.ExpiresAt) {
		return nil, false, fosite.ErrNotFound.WithDebug("grant record expired")
	}
	c, err := s.GetClient(ctx, g.ClientID)
	if err != nil {
		return nil, false, err
	}
	r, err := tokensession.DecodeRequest(g.Request, c, session)
	if err != nil {
		return nil, false, err
	}
	return r, g.Active, nil
}

// notFound turns store.ErrNotFound into fosite.ErrNotFound, which fosite's
// handlers test for; other errors pass unchanged.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fosite.ErrNotFound.WithWrap(err).WithDebug(err.Error())
	}
	return err
}

// requestScope is what the storage learns of the token request it serves:
// its grant type, which names the reason of a reuse revocation.
type requestScope struct {
	grantType string
}

type scopeKey struct{}

// withRequestScope returns ctx carrying the scope of a token request of
// grantType.
func withRequestScope(ctx context.Context, grantType string) context.Context {
	return context.WithValue(ctx, scopeKey{}, &requestScope{grantType: grantType})
}

func scopeFrom(ctx context.Context) *requestScope {
	s, _ := ctx.Value(scopeKey{}).(*requestScope)
	return s
}
