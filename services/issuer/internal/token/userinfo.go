package token

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

// UserinfoPath is where the OpenID Connect userinfo endpoint is mounted.
const UserinfoPath = "/userinfo"

// UserinfoEndpoint serves GET and POST /userinfo (OpenID Connect Core
// §5.3): the claims about the user behind an access token that carries the
// openid scope. The token comes in the Authorization header only (RFC 6750
// §2.1); a token in a query or form is refused, as it would be logged.
type UserinfoEndpoint struct {
	provider *Provider
	logger   *slog.Logger
}

// NewUserinfoEndpoint returns the userinfo endpoint of p.
func NewUserinfoEndpoint(p *Provider) *UserinfoEndpoint {
	return &UserinfoEndpoint{provider: p, logger: p.cfg.Logger}
}

// userinfo is the response: sub always, the rest by scope.
type userinfo struct {
	Subject           string `json:"sub"`
	PreferredUsername string `json:"preferred_username,omitempty"`
	Tenant            string `json:"tenant,omitempty"`
}

// ServeHTTP implements http.Handler.
func (e *UserinfoEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" || len(r.Header.Values("Authorization")) > 1 {
		e.deny(w, r, http.StatusUnauthorized, `Bearer realm="gatehouse"`, "no bearer token")
		return
	}
	use, ar, err := e.provider.IntrospectToken(ctx, raw, fosite.AccessToken, NewSession())
	if err != nil {
		if rfcErr := fosite.ErrorToRFC6749Error(err); rfcErr.CodeField >= http.StatusInternalServerError {
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		e.deny(w, r, http.StatusUnauthorized, `Bearer realm="gatehouse", error="invalid_token"`, reason(err))
		return
	}
	if use != fosite.AccessToken {
		// A refresh token is for the token endpoint only (RFC 6749 §1.5).
		e.deny(w, r, http.StatusUnauthorized, `Bearer realm="gatehouse", error="invalid_token"`, "not an access token")
		return
	}
	sess, ok := ar.GetSession().(*Session)
	if !ok || sess.JWTClaims == nil || sess.JWTClaims.Subject == "" {
		e.deny(w, r, http.StatusUnauthorized, `Bearer realm="gatehouse", error="invalid_token"`, "session without subject")
		return
	}
	if !ar.GetGrantedScopes().Has("openid") || ar.GetClient().GetID() == sess.JWTClaims.Subject {
		e.deny(w, r, http.StatusForbidden, `Bearer realm="gatehouse", error="insufficient_scope", scope="openid"`, "token without openid scope")
		return
	}
	resp := userinfo{Subject: sess.JWTClaims.Subject}
	resp.Tenant, _ = sess.JWTClaims.Extra["tenant"].(string)
	if ar.GetGrantedScopes().Has("profile") {
		resp.PreferredUsername = sess.JWTClaims.Subject
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (e *UserinfoEndpoint) deny(w http.ResponseWriter, r *http.Request, status int, challenge, detail string) {
	e.logger.InfoContext(r.Context(), "userinfo request rejected", slog.Int("status", status), slog.String("reason", detail))
	w.Header().Set("WWW-Authenticate", challenge)
	w.WriteHeader(status)
}
