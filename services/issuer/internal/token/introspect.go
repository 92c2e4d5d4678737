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
// introspection_endpoint_auth_methods_supported): the token endpoint's,
// confidential clients only.
func IntrospectionAuthMethods() []string { return AuthMethods() }

// Why an access token is inactive; logged, never shown to the caller.
var (
	errTokenMalformed = errors.New("token is not a JWS in compact form")
	errTokenUnknown   = errors.New("no token session: never issued here, revoked, or deleted")
	errTokenExpired   = errors.New("token has expired")
	errTokenInvalid   = errors.New("token does not verify against its session")
)

// accessTokenIntrospector is the fosite.TokenIntrospector for the issuer's
// JWT access tokens. Unlike fosite's stateless JWT validator it requires the
// token's stored session, so a revoked token (its session deleted) is
// inactive even though its signature still verifies; unlike fosite's core
// validator it never reaches for refresh tokens, which do not exist yet.
type accessTokenIntrospector struct {
	strategy oauth2.AccessTokenStrategy
	storage  oauth2.AccessTokenStorage
}

var _ fosite.TokenIntrospector = (*accessTokenIntrospector)(nil)

// introspectionFactory is a compose.Factory for accessTokenIntrospector.
func introspectionFactory(_ fosite.Configurator, storage, strategy any) any {
	st, _ := storage.(oauth2.AccessTokenStorage)
	sg, _ := strategy.(oauth2.AccessTokenStrategy)
	return &accessTokenIntrospector{strategy: sg, storage: st}
}

// IntrospectToken implements fosite.TokenIntrospector. The token is active
// when its session is stored, the session has not expired, and the JWT
// verifies (signature, exp, nbf, iat). It merges the stored request into ar.
// Any other outcome is fosite.ErrInactiveToken wrapping the reason, or
// fosite.ErrServerError when the store fails.
func (i *accessTokenIntrospector) IntrospectToken(ctx context.Context, token string, _ fosite.TokenUse, ar fosite.AccessRequester, _ []string) (fosite.TokenUse, error) {
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
	provider fosite.OAuth2Provider
	auth     *authenticator
	logger   *slog.Logger
}

// NewIntrospectionEndpoint returns the introspection endpoint for cfg.
func NewIntrospectionEndpoint(cfg Config) (*IntrospectionEndpoint, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return &IntrospectionEndpoint{
		provider: newProvider(cfg),
		auth:     &authenticator{clients: cfg.Store, hasher: cfg.Hasher},
		logger:   cfg.Logger,
	}, nil
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
	caller, err := e.auth.authenticate(ctx, r, r.PostForm)
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

	// The hint only orders the search (RFC 7662 §2.1); there is one token
	// type today.
	_, ar, err := e.provider.IntrospectToken(ctx, raw, fosite.TokenUse(r.PostForm.Get("token_type_hint")), new(oauth2.JWTSession))
	if err != nil {
		if rfcErr := fosite.ErrorToRFC6749Error(err); rfcErr.CodeField >= http.StatusInternalServerError {
			e.reject(ctx, w, r, rfcErr)
			return
		}
		e.audit(ctx, caller, nil, outcomeInactive, reason(err))
		writeIntrospection(w, introspection{})
		return
	}
	if !mayIntrospect(caller, ar) {
		e.audit(ctx, caller, ar, outcomeNotPermitted, "token neither issued to the caller nor addressed to one of its audiences")
		writeIntrospection(w, introspection{})
		return
	}
	resp, err := describe(ar)
	if err != nil {
		e.reject(ctx, w, r, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
		return
	}
	e.audit(ctx, caller, ar, outcomeActive, "")
	writeIntrospection(w, resp)
}

// mayIntrospect reports whether caller may learn about the token behind ar:
// it was issued to caller, or it is addressed to an audience caller is
// registered for.
func mayIntrospect(caller fosite.Client, ar fosite.AccessRequester) bool {
	if ar.GetClient().GetID() == caller.GetID() {
		return true
	}
	return slices.ContainsFunc(ar.GetGrantedAudience(), func(aud string) bool {
		return slices.Contains(caller.GetAudience(), aud)
	})
}

// describe builds the active response from the stored claims: exactly the
// claims the token was signed with.
func describe(ar fosite.AccessRequester) (introspection, error) {
	sess, ok := ar.GetSession().(*oauth2.JWTSession)
	if !ok || sess.JWTClaims == nil {
		return introspection{}, fmt.Errorf("token: stored session is %T without claims", ar.GetSession())
	}
	c := sess.JWTClaims
	tenant, _ := c.Extra["tenant"].(string)
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
		if sess, ok := ar.GetSession().(*oauth2.JWTSession); ok && sess.JWTClaims != nil {
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
