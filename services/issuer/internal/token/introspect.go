package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

// IntrospectionPath is where the token introspection endpoint (RFC 7662) is
// mounted.
const IntrospectionPath = "/oauth2/introspect"

// IntrospectionAuthMethods returns the client authentication methods the
// introspection endpoint accepts (published as
// introspection_endpoint_auth_methods_supported): confidential clients only.
func IntrospectionAuthMethods() []string { return ConfidentialAuthMethods() }

// Why an access token is inactive; logged, never shown to the caller.
var (
	errTokenMalformed = errors.New("token is not a JWS in compact form")
	errTokenUnknown   = errors.New("no token session: never issued here, revoked, or deleted")
	errTokenExpired   = errors.New("token has expired")
	errTokenInvalid   = errors.New("token does not verify against its session")
	errTokenRevoked   = errors.New("refresh token was rotated or revoked")
)

// introspector is the fosite.TokenIntrospector for the issuer's tokens.
// For a JWT access token it requires the token's stored session (unlike
// fosite's stateless JWT validator), so a revoked token is inactive even
// though its signature still verifies. A refresh token is active while its
// record is active (not rotated, not revoked) and unexpired.
type introspector struct {
	strategy oauth2.CoreStrategy
	storage  oauth2.CoreStorage
}

var _ fosite.TokenIntrospector = (*introspector)(nil)

// introspectionFactory is a compose.Factory for introspector.
func introspectionFactory(_ fosite.Configurator, storage, strategy any) any {
	st, _ := storage.(oauth2.CoreStorage)
	sg, _ := strategy.(oauth2.CoreStrategy)
	return &introspector{strategy: sg, storage: st}
}

// IntrospectToken implements fosite.TokenIntrospector: the token as the
// hinted type first, then as the other. It merges the stored request into
// ar. Any other outcome is fosite.ErrInactiveToken wrapping the reason, or
// fosite.ErrServerError when the store fails.
func (i *introspector) IntrospectToken(ctx context.Context, token string, hint fosite.TokenUse, ar fosite.AccessRequester, _ []string) (fosite.TokenUse, error) {
	first, second := i.access, i.refresh
	if hint == fosite.RefreshToken {
		first, second = i.refresh, i.access
	}
	use, err := first(ctx, token, ar)
	if errors.Is(err, errTokenUnknown) || errors.Is(err, errTokenMalformed) {
		return second(ctx, token, ar)
	}
	return use, err
}

// refresh introspects token as a refresh token.
func (i *introspector) refresh(ctx context.Context, token string, ar fosite.AccessRequester) (fosite.TokenUse, error) {
	sig := i.strategy.RefreshTokenSignature(ctx, token)
	if sig == "" {
		return "", inactive(errTokenMalformed)
	}
	stored, err := i.storage.GetRefreshTokenSession(ctx, sig, ar.GetSession())
	switch {
	case errors.Is(err, fosite.ErrNotFound):
		return "", inactive(errTokenUnknown)
	case errors.Is(err, fosite.ErrInactiveToken):
		return "", inactive(errTokenRevoked)
	case err != nil:
		return "", fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	if err := i.strategy.ValidateRefreshToken(ctx, stored, token); err != nil {
		return "", inactive(fmt.Errorf("%w: %w", errTokenInvalid, err))
	}
	ar.Merge(stored)
	return fosite.RefreshToken, nil
}

// access introspects token as a JWT access token: active when its session
// is stored, the session has not expired, and the JWT verifies
// (signature, exp, nbf, iat).
func (i *introspector) access(ctx context.Context, token string, ar fosite.AccessRequester) (fosite.TokenUse, error) {
	if strings.Count(token, ".") != 2 {
		return "", inactive(errTokenMalformed)
	}
	sig := i.strategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		return "", inactive(errTokenMalformed)
	}
	stored, err := i.storage.GetAccessTokenSession(ctx, sig, ar.GetSession())
	if errors.Is(err, fosite.ErrNotFound) {
		return "", inactive(errTokenUnknown)
	}
	if err != nil {
		return "", fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	// exp is checked twice on purpose: here against the stored session (a
	// zero expiry counts as expired), and inside ValidateAccessToken against
	// the JWT's own claim.
	if exp := stored.GetSession().GetExpiresAt(fosite.AccessToken); !time.Now().Before(exp) {
		return "", inactive(errTokenExpired)
	}
	if err := i.strategy.ValidateAccessToken(ctx, stored, token); err != nil {
		return "", inactive(fmt.Errorf("%w: %w", errTokenInvalid, err))
	}
	ar.Merge(stored)
	return fosite.AccessToken, nil
}

func inactive(reason error) error {
	return fosite.ErrInactiveToken.WithWrap(reason).WithDebug(reason.Error())
}

// IntrospectionEndpoint serves POST /oauth2/introspect (RFC 7662).
//
// The caller authenticates as a confidential client exactly as at the token
// endpoint. It may introspect a token that was issued to it, or whose
// audience includes one of the caller's registered audiences (a resource
// server checking a token presented to it). Every other token, and every
// unknown, revoked, expired, malformed or forged one, is reported as
// {"active": false} and nothing more.
type IntrospectionEndpoint struct {
	provider *Provider
	logger   *slog.Logger
}

// NewIntrospectionEndpoint returns the introspection endpoint of p.
func NewIntrospectionEndpoint(p *Provider) *IntrospectionEndpoint {
	return &IntrospectionEndpoint{provider: p, logger: p.cfg.Logger}
}

// introspection is the RFC 7662 §2.2 response. An inactive token has only
// "active": false.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	NotBefore int64    `json:"nbf,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
	Tenant    string   `json:"tenant,omitempty"`
	// Act is an exchanged token's actor (RFC 8693 §4.1), earlier actors
	// nested.
	Act map[string]any `json:"act,omitempty"`
}

// tokenTypeBearer is the token_type of an active access token, spelled as
// RFC 6750 registers it (token_type values compare case-insensitively).
const tokenTypeBearer = "Bearer"

// Audit outcomes of an introspection.
const (
	outcomeActive       = "active"
	outcomeInactive     = "inactive"
	outcomeNotPermitted = "not_permitted"
)

// ServeHTTP answers an introspection request. Malformed requests and failed
// client authentication get an RFC 6749 §5.2 error; every authenticated,
// well-formed request gets 200 with the introspection response.
func (e *IntrospectionEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.reject(ctx, w, r, withStatus(fosite.ErrInvalidRequest.WithHint("The introspection endpoint accepts POST only."), http.StatusMethodNotAllowed))
		return
	}
	if err := readForm(w, r); err != nil {
		e.reject(ctx, w, r, err)
		return
	}
	caller, err := e.provider.auth.authenticate(ctx, r, r.PostForm)
	if err != nil {
		e.reject(ctx, w, r, err)
		return
	}
	if caller.IsPublic() {
		e.reject(ctx, w, r, fosite.ErrInvalidClient.WithHint("Only confidential clients may introspect tokens.").WithDebug("public client"))
		return
	}
	raw := r.PostForm.Get("token")
	if raw == "" {
		e.reject(ctx, w, r, fosite.ErrInvalidRequest.WithHint("The token parameter is required."))
		return
	}

	// The hint only orders the search (RFC 7662 §2.1).
	use, ar, err := e.provider.IntrospectToken(ctx, raw, fosite.TokenUse(r.PostForm.Get("token_type_hint")), NewSession())
	if err != nil {
		if rfcErr := fosite.ErrorToRFC6749Error(err); rfcErr.CodeField >= http.StatusInternalServerError {
			e.reject(ctx, w, r, rfcErr)
			return
		}
		e.audit(ctx, caller, nil, outcomeInactive, reason(err))
		writeIntrospection(w, introspection{})
		return
	}
	if !mayIntrospect(caller, use, ar) {
		e.audit(ctx, caller, ar, outcomeNotPermitted, "token neither issued to the caller nor addressed to one of its audiences")
		writeIntrospection(w, introspection{})
		return
	}
	resp, err := describe(use, ar)
	if err != nil {
		e.reject(ctx, w, r, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
		return
	}
	e.audit(ctx, caller, ar, outcomeActive, "")
	writeIntrospection(w, resp)
}

// mayIntrospect reports whether caller may learn about the token behind ar:
// it was issued to caller, or it is an access token addressed to an
// audience caller is registered for. A refresh token is only ever shown to
// its own client.
func mayIntrospect(caller fosite.Client, use fosite.TokenUse, ar fosite.AccessRequester) bool {
	if ar.GetClient().GetID() == caller.GetID() {
		return true
	}
	if use != fosite.AccessToken {
		return false
	}
	return slices.ContainsFunc(ar.GetGrantedAudience(), func(aud string) bool {
		return slices.Contains(caller.GetAudience(), aud)
	})
}

// describe builds the active response from the stored claims: exactly the
// claims an access token was signed with; for a refresh token, its
// grant's subject, scopes and expiry.
func describe(use fosite.TokenUse, ar fosite.AccessRequester) (introspection, error) {
	sess, ok := ar.GetSession().(*Session)
	if !ok || sess.JWTClaims == nil {
		return introspection{}, fmt.Errorf("token: stored session is %T without claims", ar.GetSession())
	}
	c := sess.JWTClaims
	tenant, _ := c.Extra["tenant"].(string)
	act, _ := c.Extra["act"].(map[string]any)
	if use == fosite.RefreshToken {
		return introspection{
			Active:    true,
			Scope:     strings.Join(ar.GetGrantedScopes(), " "),
			ClientID:  ar.GetClient().GetID(),
			Subject:   c.Subject,
			Issuer:    c.Issuer,
			ExpiresAt: sess.GetExpiresAt(fosite.RefreshToken).Unix(),
			TokenType: string(fosite.RefreshToken),
			Tenant:    tenant,
		}, nil
	}
	return introspection{
		Active:    true,
		Scope:     strings.Join(ar.GetGrantedScopes(), " "),
		ClientID:  ar.GetClient().GetID(),
		Subject:   c.Subject,
		Audience:  slices.Clone(c.Audience),
		Issuer:    c.Issuer,
		ExpiresAt: sess.GetExpiresAt(fosite.AccessToken).Unix(),
		IssuedAt:  c.IssuedAt.Unix(),
		NotBefore: c.NotBefore.Unix(),
		JTI:       c.JTI,
		TokenType: tokenTypeBearer,
		Tenant:    tenant,
		Act:       act,
	}, nil
}

func writeIntrospection(w http.ResponseWriter, resp introspection) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(resp)
}

// reason names why a token is inactive, for the log.
func reason(err error) string {
	for _, r := range []error{errTokenMalformed, errTokenUnknown, errTokenExpired, errTokenInvalid} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return fosite.ErrorToRFC6749Error(err).ErrorField
}

// audit writes the one log line of an answered introspection: who asked,
// about which token (jti and owner, when known), and the outcome. Never the
// token itself.
func (e *IntrospectionEndpoint) audit(ctx context.Context, caller fosite.Client, ar fosite.AccessRequester, outcome, detail string) {
	attrs := []slog.Attr{
		slog.String("client_id", caller.GetID()),
		slog.String("outcome", outcome),
	}
	if ar != nil {
		if sess, ok := ar.GetSession().(*Session); ok && sess.JWTClaims != nil {
			attrs = append(attrs, slog.String("jti", sess.JWTClaims.JTI))
		}
		attrs = append(attrs, slog.String("token_client_id", ar.GetClient().GetID()))
	}
	if detail != "" {
		attrs = append(attrs, slog.String("reason", detail))
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, "token introspected", attrs...)
}

func (e *IntrospectionEndpoint) reject(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) {
	writeRejection(ctx, w, r, e.provider, e.logger, "token introspection rejected", err)
}
