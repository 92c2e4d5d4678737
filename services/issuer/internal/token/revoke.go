package token

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// RevocationPath is where the token revocation endpoint (RFC 7009) is
// mounted.
const RevocationPath = "/oauth2/revoke"

// RevocationAuthMethods returns the client authentication methods the
// revocation endpoint accepts (published as
// revocation_endpoint_auth_methods_supported): the token endpoint's, none
// included, as public clients may revoke their own tokens (RFC 7009 §2.1,
// §5).
func RevocationAuthMethods() []string { return AuthMethods() }

// Audit outcomes of a revocation.
const (
	outcomeRevoked      = "revoked"
	outcomeUnknownToken = "unknown_token"
	outcomeOtherClient  = "refused_other_client"
)

// revoker is the fosite.RevocationHandler for the issuer's tokens. An
// access token's session is deleted, so introspection reports it inactive
// and the revocation feed tells gateways to refuse its jti; a refresh token
// ends its whole grant (RFC 7009 §2.1: the access tokens of the same grant
// go too).
type revoker struct {
	strategy oauth2.CoreStrategy
	storage  *Storage
	logger   *slog.Logger
}

var _ fosite.RevocationHandler = (*revoker)(nil)

// revocationFactory returns a compose.Factory for revoker over storage,
// writing its log lines to logger.
func revocationFactory(logger *slog.Logger, storage *Storage) compose.Factory {
	return func(_ fosite.Configurator, _, strategy any) any {
		sg, _ := strategy.(oauth2.CoreStrategy)
		return &revoker{strategy: sg, storage: storage, logger: logger}
	}
}

// RevokeToken implements fosite.RevocationHandler. The hint only orders
// the search (RFC 7009 §2.1). An unknown, malformed or already revoked
// token is not an error (§2.2). A token issued to another client is refused
// with unauthorized_client and left alone. A store failure is
// temporarily_unavailable (§2.2.1): the caller must assume the token is
// still valid and retry.
func (v *revoker) RevokeToken(ctx context.Context, token string, hint fosite.TokenType, caller fosite.Client) error {
	if token == "" {
		return fosite.ErrInvalidRequest.WithHint("The token parameter is required.")
	}
	order := []fosite.TokenType{fosite.AccessToken, fosite.RefreshToken}
	if hint == fosite.RefreshToken {
		order = []fosite.TokenType{fosite.RefreshToken, fosite.AccessToken}
	}
	for _, tt := range order {
		var done bool
		var err error
		if tt == fosite.AccessToken {
			done, err = v.revokeAccess(ctx, token, caller)
		} else {
			done, err = v.revokeRefresh(ctx, token, caller)
		}
		if err != nil || done {
			return err
		}
	}
	v.audit(ctx, caller, "", "", "", outcomeUnknownToken)
	return nil
}

// revokeAccess revokes token as an access token; done is false when no
// access token session has its signature.
func (v *revoker) revokeAccess(ctx context.Context, token string, caller fosite.Client) (bool, error) {
	sig := v.strategy.AccessTokenSignature(ctx, token)
	if sig == "" || strings.Count(token, ".") != 2 {
		return false, nil
	}
	rec, err := v.storage.store.GetTokenSession(ctx, sig)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	if rec.ClientID != caller.GetID() {
		v.audit(ctx, caller, fosite.AccessToken, rec.JTI, rec.ClientID, outcomeOtherClient)
		return false, fosite.ErrUnauthorizedClient.WithHint("The token was not issued to this client.").WithDebugf("token belongs to client %q", rec.ClientID)
	}
	// Published before the session is deleted: were it the other way
	// round, a failed publication (the database restarting) would answer
	// 503, the client's retry would find no session and answer 200, and
	// the revocation would never reach a gateway. This way a retry
	// publishes again until the whole revocation has succeeded once; a
	// revocation may be published twice, never lost.
	if err := v.storage.observer.Revoked(ctx, Revocation{
		Kind: RevocationToken, ID: rec.JTI, Reason: RevocationReasonRequested,
		ClientID: rec.ClientID, Subject: rec.Subject,
		Tokens: []tokensession.Record{rec}, RevokedAt: time.Now().UTC(),
	}); err != nil {
		return false, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	// Not found here means a concurrent revocation won: still revoked.
	if err := v.storage.store.DeleteTokenSession(ctx, sig); err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	v.audit(ctx, caller, fosite.AccessToken, rec.JTI, rec.ClientID, outcomeRevoked)
	return true, nil
}

// revokeRefresh revokes the grant of token as a refresh token; done is
// false when no refresh token has its signature.
func (v *revoker) revokeRefresh(ctx context.Context, token string, caller fosite.Client) (bool, error) {
	sig := v.strategy.RefreshTokenSignature(ctx, token)
	if sig == "" {
		return false, nil
	}
	g, err := v.storage.store.GetGrant(ctx, tokensession.KindRefreshToken, sig)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	if g.ClientID != caller.GetID() {
		v.audit(ctx, caller, fosite.RefreshToken, g.RequestID, g.ClientID, outcomeOtherClient)
		return false, fosite.ErrUnauthorizedClient.WithHint("The token was not issued to this client.").WithDebugf("token belongs to client %q", g.ClientID)
	}
	if err := v.storage.RevokeGrant(ctx, g.RequestID, RevocationReasonRequested); err != nil {
		return false, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	v.audit(ctx, caller, fosite.RefreshToken, g.RequestID, g.ClientID, outcomeRevoked)
	return true, nil
}

// audit writes the one log line of a revocation that reached the handler:
// the access token's jti or the refresh token's grant id. Never the token.
func (v *revoker) audit(ctx context.Context, caller fosite.Client, tt fosite.TokenType, id, owner, outcome string) {
	attrs := []slog.Attr{
		slog.String("client_id", caller.GetID()),
		slog.String("outcome", outcome),
	}
	switch {
	case id == "":
	case tt == fosite.AccessToken:
		attrs = append(attrs, slog.String("token_type", string(tt)), slog.String("jti", id), slog.String("token_client_id", owner))
	default:
		attrs = append(attrs, slog.String("token_type", string(tt)), slog.String("grant_id", id), slog.String("token_client_id", owner))
	}
	v.logger.LogAttrs(ctx, slog.LevelInfo, "token revocation", attrs...)
}

// RevocationEndpoint serves POST /oauth2/revoke (RFC 7009).
type RevocationEndpoint struct {
	provider *Provider
	logger   *slog.Logger
}

// NewRevocationEndpoint returns the revocation endpoint of p.
func NewRevocationEndpoint(p *Provider) *RevocationEndpoint {
	return &RevocationEndpoint{provider: p, logger: p.cfg.Logger}
}

// ServeHTTP answers a revocation request: 200 with an empty body once the
// token is revoked or if it was unknown, an RFC 6749 §5.2 error otherwise.
// A rejected request revokes nothing.
func (e *RevocationEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.reject(ctx, w, r, withStatus(fosite.ErrInvalidRequest.WithHint("The revocation endpoint accepts POST only."), http.StatusMethodNotAllowed))
		return
	}
	if err := readForm(w, r); err != nil {
		e.reject(ctx, w, r, err)
		return
	}
	// Authenticates the client (the token endpoint's rules), then runs
	// revoker. fosite's WriteRevocationResponse is not used: it
	// answers 200 to unauthorized_client and to store failures.
	if err := e.provider.NewRevocationRequest(ctx, r); err != nil {
		e.reject(ctx, w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusOK)
}

func (e *RevocationEndpoint) reject(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) {
	writeRejection(ctx, w, r, e.provider, e.logger, "token revocation rejected", err)
}
