package enforce

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
)

// Identity headers the gateway sets upstream after verifying a token. The
// gateway strips any client-supplied copies; services still verify the token
// themselves and deny when these disagree with it.
const (
	HeaderSubject   = "X-Gatehouse-Subject"
	HeaderTenant    = "X-Gatehouse-Tenant"
	HeaderClientID  = "X-Gatehouse-Client-Id"
	HeaderRequestID = "X-Request-Id"
)

// IdentityHeaders returns every identity header, for stripping.
func IdentityHeaders() []string { return []string{HeaderSubject, HeaderTenant, HeaderClientID} }

// NewRequestID returns a fresh random request id: 32 hex characters.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidRequestID reports whether s may name a request in logs and PDP
// requests: 1 to 64 characters of [A-Za-z0-9_-].
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// RemoteIP returns the IP of a "host:port" peer address (addr itself when it
// has no port).
func RemoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// BearerToken extracts the token of a single "Authorization: Bearer" header.
// More than one Authorization header, another scheme, or an empty token is
// reported as absent.
func BearerToken(h http.Header) (string, bool) {
	values := h.Values("Authorization")
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type claimsKey struct{}

// WithClaims returns ctx carrying verified claims.
func WithClaims(ctx context.Context, c *accesstoken.Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFrom returns the verified claims in ctx, if any.
func ClaimsFrom(ctx context.Context) (*accesstoken.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*accesstoken.Claims)
	return c, ok
}

// Verifier verifies a raw access token.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// Authenticator is a Connect interceptor for services behind the gateway: it
// verifies the bearer token itself (never trusting the gateway blindly),
// requires the gateway's identity headers to match the token, and puts the
// claims into the handler's context.
type Authenticator struct {
	verifier       Verifier
	logger         *slog.Logger
	requireHeaders bool
}

// NewAuthenticator returns an Authenticator. With requireGatewayHeaders the
// identity headers must be present (the service is reachable only through
// the gateway); without, they are checked only when present.
func NewAuthenticator(v Verifier, logger *slog.Logger, requireGatewayHeaders bool) *Authenticator {
	return &Authenticator{verifier: v, logger: logger, requireHeaders: requireGatewayHeaders}
}

// Authenticate verifies the request headers and returns the claims.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header) (*accesstoken.Claims, error) {
	raw, ok := BearerToken(h)
	if !ok {
		return nil, Unauthenticated(ctx, reason.MissingToken)
	}
	claims, err := a.verifier.Verify(ctx, raw)
	if errors.Is(err, accesstoken.ErrKeysUnavailable) {
		a.logger.ErrorContext(ctx, "cannot verify tokens: issuer keys unavailable", slog.Any("error", err))
		return nil, Unavailable(ctx, reason.IssuerUnavailable)
	}
	if err != nil {
		a.logger.InfoContext(ctx, "token rejected", slog.Any("error", err))
		return nil, Unauthenticated(ctx, reason.InvalidToken)
	}
	want := map[string]string{HeaderSubject: claims.Subject, HeaderTenant: claims.Tenant, HeaderClientID: claims.ClientID}
	for name, claim := range want {
		got := h.Values(name)
		if len(got) == 0 && !a.requireHeaders {
			continue
		}
		if len(got) != 1 || got[0] != claim {
			a.logger.WarnContext(ctx, "identity header does not match token", slog.String("header", name), slog.String("subject", claims.Subject))
			return nil, Error(ctx, connect.CodePermissionDenied, reason.IdentityMismatch, "identity headers do not match the token")
		}
	}
	return claims, nil
}

// WrapUnary implements connect.Interceptor.
func (a *Authenticator) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		claims, err := a.Authenticate(ctx, req.Header())
		if err != nil {
			return nil, err
		}
		return next(WithClaims(ctx, claims), req)
	}
}

// WrapStreamingClient implements connect.Interceptor (clients pass through).
func (a *Authenticator) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (a *Authenticator) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		claims, err := a.Authenticate(ctx, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(WithClaims(ctx, claims), conn)
	}
}
