package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
)

// MaxBodyBytes bounds a token request body.
const MaxBodyBytes = 64 << 10

// repeatable lists the parameters that may appear more than once: audience
// (RFC 8693 §2.1). Every other parameter must appear at most once (RFC 6749 §3.2).
const repeatable = "audience"

// Endpoint serves POST /oauth2/token.
type Endpoint struct {
	provider fosite.OAuth2Provider
	logger   *slog.Logger
}

// NewEndpoint returns the token endpoint for cfg.
func NewEndpoint(cfg Config) (*Endpoint, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return &Endpoint{
		provider: newProvider(cfg),
		logger:   cfg.Logger,
	}, nil
}

// ServeHTTP answers a token request with a token response or an RFC 6749
// §5.2 error. A rejected request changes nothing.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.writeError(ctx, w, r, nil, withStatus(fosite.ErrInvalidRequest.WithHint("The token endpoint accepts POST only."), http.StatusMethodNotAllowed))
		return
	}
	if err := parseForm(w, r); err != nil {
		e.writeError(ctx, w, r, nil, err)
		return
	}

	session := newSession()
	ar, err := e.provider.NewAccessRequest(ctx, r, session)
	if err != nil {
		e.writeError(ctx, w, r, ar, err)
		return
	}
	resp, err := e.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		e.writeError(ctx, w, r, ar, err)
		return
	}
	// fosite counts expires_in from "now" after signing and rounds down;
	// report the lifetime the token really has.
	exp := session.GetExpiresAt(fosite.AccessToken)
	resp.SetExpiresIn(exp.Sub(session.JWTClaims.IssuedAt))

	e.logIssued(ctx, ar, session)
	e.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// parseForm reads the bounded form body and rejects what fosite would let
// through: other media types, repeated parameters and grant types the
// endpoint does not serve.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if err := readForm(w, r, repeatable); err != nil {
		return err
	}
	if grant := r.PostForm.Get("grant_type"); grant != "" && !slices.Contains(GrantTypes(), grant) {
		return fosite.ErrUnsupportedGrantType.WithDebugf("grant_type %q", truncate(grant))
	}
	return nil
}

// withStatus returns a copy of err answered with HTTP status code.
func withStatus(err *fosite.RFC6749Error, code int) *fosite.RFC6749Error {
	out := *err
	out.CodeField = code
	return &out
}

// writeError answers with err in RFC 6749 §5.2 form and logs the detail the
// client does not see (hint and debug), never a secret.
func (e *Endpoint) writeError(ctx context.Context, w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, err error) {
	rfcErr, ok := errors.AsType[*fosite.RFC6749Error](err)
	if !ok {
		rfcErr = fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	level := slog.LevelInfo
	if rfcErr.CodeField >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	e.logger.Log(ctx, level, "token request rejected",
		slog.String("error", rfcErr.ErrorField),
		slog.Int("status", rfcErr.CodeField),
		slog.String("hint", rfcErr.HintField),
		slog.String("debug", rfcErr.DebugField),
		slog.String("client_id", presentedClientID(r, ar)),
		slog.String("grant_type", truncate(r.PostForm.Get("grant_type"))),
	)
	if rfcErr.CodeField == http.StatusUnauthorized {
		// RFC 6749 §5.2 and RFC 9110 §11.6.1: a 401 names the scheme to use.
		w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
	}
	e.provider.WriteAccessError(ctx, w, ar, rfcErr)
}

// logIssued writes the audit line of an issued token: who, for which
// tenant, scopes and audience, its jti and expiry. Never the token itself.
func (e *Endpoint) logIssued(ctx context.Context, ar fosite.AccessRequester, session *oauth2.JWTSession) {
	var tenant string
	if c, ok := ar.GetClient().(*client.Client); ok {
		tenant = c.Tenant
	}
	e.logger.InfoContext(ctx, "access token issued",
		slog.String("client_id", ar.GetClient().GetID()),
		slog.String("tenant", tenant),
		slog.String("grant_type", strings.Join(ar.GetGrantTypes(), " ")),
		slog.Any("scopes", []string(ar.GetGrantedScopes())),
		slog.Any("audience", []string(ar.GetGrantedAudience())),
		slog.String("jti", session.JWTClaims.JTI),
		slog.Time("exp", session.GetExpiresAt(fosite.AccessToken)),
	)
}

// presentedClientID is the authenticated client's id, else the id the
// request claimed (truncated: it is caller input).
func presentedClientID(r *http.Request, ar fosite.AccessRequester) string {
	if ar != nil && ar.GetClient() != nil && ar.GetClient().GetID() != "" {
		return ar.GetClient().GetID()
	}
	if user, _, ok := r.BasicAuth(); ok {
		return truncate(user)
	}
	return truncate(r.PostForm.Get("client_id"))
}

func truncate(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
