package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
)

// RevocationPath is where the token revocation endpoint (RFC 7009) is
// mounted.
const RevocationPath = "/oauth2/revoke"

// AuthMethodNone is the RFC 8414 name for a public client identifying
// itself by client_id alone.
const AuthMethodNone = "none"

// RevocationAuthMethods returns the client authentication methods the
// revocation endpoint accepts (published as
// revocation_endpoint_auth_methods_supported): the token endpoint's, plus
// none for public clients, which may revoke their own tokens (RFC 7009 §2.1,
// §5).
func RevocationAuthMethods() []string { return append(AuthMethods(), AuthMethodNone) }

// Audit outcomes of a revocation.
const (
	outcomeRevoked      = "revoked"
	outcomeUnknownToken = "unknown_token"
	outcomeOtherClient  = "refused_other_client"
)

// accessTokenRevoker is the fosite.RevocationHandler for the issuer's JWT
// access tokens: it deletes the token's session, so introspection reports
// the token inactive from then on. It never reaches for refresh tokens,
// which do not exist yet (fosite's handler would).
type accessTokenRevoker struct {
	strategy oauth2.AccessTokenStrategy
	storage  oauth2.AccessTokenStorage
	logger   *slog.Logger
}

var _ fosite.RevocationHandler = (*accessTokenRevoker)(nil)

// revocationFactory returns a compose.Factory for accessTokenRevoker that
// writes its audit lines to logger.
func revocationFactory(logger *slog.Logger) compose.Factory {
	return func(_ fosite.Configurator, storage, strategy any) any {
		st, _ := storage.(oauth2.AccessTokenStorage)
		sg, _ := strategy.(oauth2.AccessTokenStrategy)
		return &accessTokenRevoker{strategy: sg, storage: st, logger: logger}
	}
}

// RevokeToken implements fosite.RevocationHandler. An unknown, malformed or
// already revoked token is not an error (RFC 7009 §2.2). A token issued to
// another client is refused with unauthorized_client and left alone
// (RFC 7009 §2.1). A store failure is temporarily_unavailable (§2.2.1): the
// caller must assume the token is still valid and retry.
func (v *accessTokenRevoker) RevokeToken(ctx context.Context, token string, _ fosite.TokenType, caller fosite.Client) error {
	if token == "" {
		return fosite.ErrInvalidRequest.WithHint("The token parameter is required.")
	}
	sig := v.strategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		v.audit(ctx, caller, "", "", outcomeUnknownToken)
		return nil
	}
	sess := new(oauth2.JWTSession)
	stored, err := v.storage.GetAccessTokenSession(ctx, sig, sess)
	if errors.Is(err, fosite.ErrNotFound) {
		v.audit(ctx, caller, "", "", outcomeUnknownToken)
		return nil
	}
	if err != nil {
		return fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	var jti string
	if sess.JWTClaims != nil {
		jti = sess.JWTClaims.JTI
	}
	owner := stored.GetClient().GetID()
	if owner != caller.GetID() {
		v.audit(ctx, caller, jti, owner, outcomeOtherClient)
		return fosite.ErrUnauthorizedClient.WithHint("The token was not issued to this client.").WithDebugf("token belongs to client %q", owner)
	}
	// Not found here means a concurrent revocation won: still revoked.
	if err := v.storage.DeleteAccessTokenSession(ctx, sig); err != nil && !errors.Is(err, fosite.ErrNotFound) {
		return fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	v.audit(ctx, caller, jti, owner, outcomeRevoked)
	return nil
}

// audit writes the one log line of a revocation that reached the handler.
// Never the token itself.
func (v *accessTokenRevoker) audit(ctx context.Context, caller fosite.Client, jti, owner, outcome string) {
	attrs := []slog.Attr{
		slog.String("client_id", caller.GetID()),
		slog.String("outcome", outcome),
	}
	if jti != "" {
		attrs = append(attrs, slog.String("jti", jti), slog.String("token_client_id", owner))
	}
	v.logger.LogAttrs(ctx, slog.LevelInfo, "token revocation", attrs...)
}

// RevocationEndpoint serves POST /oauth2/revoke (RFC 7009).
type RevocationEndpoint struct {
	provider fosite.OAuth2Provider
	logger   *slog.Logger
}

// NewRevocationEndpoint returns the revocation endpoint for cfg.
func NewRevocationEndpoint(cfg Config) (*RevocationEndpoint, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return &RevocationEndpoint{provider: newProvider(cfg), logger: cfg.Logger}, nil
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
	// accessTokenRevoker. fosite's WriteRevocationResponse is not used: it
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
