package interaction

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// maxFormBytes bounds a POST body: the largest form is a login.
const maxFormBytes = 16 << 10

// secretLen is the length of a cookie secret from randomToken.
const secretLen = 43

// csrfLabel separates the CSRF token from any other value derived from the
// browser secret.
const csrfLabel = "gatehouse/interaction/csrf/v1"

// cookieSecret returns r's cookie name if it is shaped like a secret from
// randomToken; anything else counts as no cookie.
func cookieSecret(r *http.Request, name string) (string, bool) {
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) != secretLen {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(c.Value); err != nil {
		return "", false
	}
	return c.Value, true
}

// ensureBrowser returns r's browser secret, first setting a new one on w
// when r has none. The browser secret binds interactions to the browser and
// keys its CSRF tokens; it is not a credential on its own.
func (m *Manager) ensureBrowser(w http.ResponseWriter, r *http.Request) string {
	if secret, ok := cookieSecret(r, m.browserCookie); ok {
		return secret
	}
	secret := randomToken()
	m.setCookie(w, m.browserCookie, secret)
	// Later reads of r in this request see the new cookie. This is the
	// request's copy: it is never sent, so it has no attributes.
	r.AddCookie(&http.Cookie{Name: m.browserCookie, Value: secret}) //nolint:gosec // G124: request-side copy, see above.
	return secret
}

// setCookie sets a browser-session cookie (no Max-Age: it ends when the
// browser does; the server enforces its own lifetimes). An empty value
// deletes the cookie.
func (m *Manager) setCookie(w http.ResponseWriter, name, value string) {
	c := &http.Cookie{ //nolint:gosec // G124: Secure is off only for the plain-HTTP localhost demo (Config.SecureCookies).
		Name:     name,
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		Secure:   m.secure,
		SameSite: http.SameSiteLaxMode,
	}
	if value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// csrfToken derives the CSRF token of a browser: HMAC-SHA256 keyed by the
// browser secret. Only this site can read the secret (an HttpOnly cookie
// a page cannot script, sent only to this site), so only its pages carry a
// valid token; no server key is needed, and every replica agrees.
func csrfToken(browserSecret string) string {
	mac := hmac.New(sha256.New, []byte(browserSecret))
	mac.Write([]byte(csrfLabel))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkPost vets a form POST before anything else looks at it: same-origin
// (Sec-Fetch-Site and Origin, where the browser sends them), a bounded
// body, and a CSRF token that matches the browser cookie. On failure it
// writes the answer (403 for CSRF) and returns false; nothing has changed.
func (m *Manager) checkPost(w http.ResponseWriter, r *http.Request) bool {
	if !sameOrigin(r) {
		m.forbidden(w, r)
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		m.message(w, r, status, "The form could not be read", "Go back, reload the page and try again.", nil, "", "")
		return false
	}
	secret, ok := cookieSecret(r, m.browserCookie)
	token := r.PostForm.Get("csrf_token")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(csrfToken(secret))) != 1 {
		m.forbidden(w, r)
		return false
	}
	return true
}

// sameOrigin reports whether r may come from this site's own pages: a
// Sec-Fetch-Site other than same-origin, or an Origin whose host is not the
// request's, means another site's page sent it. Either header may be
// missing (older browsers, non-browser clients); the CSRF token still
// applies.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // includes "null"
	}
	return strings.EqualFold(u.Host, r.Host)
}

func (m *Manager) forbidden(w http.ResponseWriter, r *http.Request) {
	m.logger.InfoContext(r.Context(), "form rejected: cross-site, or CSRF token missing or stale", slog.String("path", r.URL.Path))
	m.message(w, r, http.StatusForbidden, "This form cannot be accepted",
		"It has expired or did not come from this site. Go back, reload the page and try again. Cookies must be enabled.", nil, "", "")
}
