package interaction

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/scopecatalog"
)

//go:embed templates/*.html templates/style.css
var templateFiles embed.FS

// view is what a page template sees; each page uses some of it.
type view struct {
	Title  string
	Error  string // shown in the error summary (role="alert")
	Notice string // shown as a status message
	CSRF   string

	Interaction  string
	Next         string
	ClientName   string
	RequireLogin bool
	RequireMFA   bool

	Subject      string
	Tenant       string
	Scopes       []scopecatalog.Entry
	ConsentUntil time.Time
	Consents     []consentView

	Message  string
	LinkHref string // a fixed relative path on the issuer
	LinkText string
}

// consentView is one row of the account page.
type consentView struct {
	ID         string
	ClientID   string
	ClientName string
	Scopes     []scopecatalog.Entry
	GrantedAt  time.Time
	ExpiresAt  time.Time
}

// parsePages parses every page and returns them with the CSP source that
// allows the inline stylesheet (its SHA-256).
func parsePages() (map[string]*template.Template, string, error) {
	css, err := templateFiles.ReadFile("templates/style.css")
	if err != nil {
		return nil, "", fmt.Errorf("interaction: %w", err)
	}
	style := strings.TrimSpace(string(css))
	sum := sha256.Sum256([]byte(style))
	funcs := template.FuncMap{
		"css":  func() template.CSS { return template.CSS(style) }, //nolint:gosec // G203: our own embedded stylesheet.
		"date": func(t time.Time) string { return t.UTC().Format("2 January 2006, 15:04 UTC") },
		"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	}
	// Each page is templates/<name>.html inside templates/layout.html.
	pages := make(map[string]*template.Template)
	for _, name := range []string{"login", "mfa", "consent", "account", "message"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, "", fmt.Errorf("interaction: page %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'", nil
}

// setSecurityHeaders sets the headers every response of the pages carries.
// extraFormAction is added to form-action (see formActionSource).
func setSecurityHeaders(h http.Header, styleHash, extraFormAction string) {
	formAction := "'self'"
	if extraFormAction != "" {
		formAction += " " + extraFormAction
	}
	h.Set("Content-Security-Policy", "default-src 'none'; style-src "+styleHash+
		"; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: under no-referrer browsers send
	// "Origin: null" even on same-origin form posts, which the CSRF origin
	// check must refuse. Other sites (the client's redirect URI) still get
	// no referrer, so no interaction id leaks to them.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// secured wraps a page handler so that every answer, redirects and errors
// included, carries the security headers.
func (m *Manager) secured(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header(), m.styleHash, "")
		h(w, r)
	})
}

// render writes page with v. For a page of interaction p (nil for none),
// form-action also allows the origin of p's redirect URI: Chrome and
// Safari apply form-action to every redirect that follows a form
// submission, and the login and consent forms end, through ResumePath, in
// a redirect to the client.
func (m *Manager) render(w http.ResponseWriter, r *http.Request, status int, page string, v view, p *Pending) {
	var buf bytes.Buffer
	if err := m.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		m.logger.ErrorContext(r.Context(), "rendering page failed", slog.String("page", page), slog.String("error", err.Error()))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	extra := ""
	if p != nil {
		redirect := p.RedirectURI
		if redirect == "" {
			redirect = p.Query.Get("redirect_uri")
		}
		extra = formActionSource(redirect)
	}
	setSecurityHeaders(w.Header(), m.styleHash, extra)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// message renders a page with a title, a sentence and an optional link.
func (m *Manager) message(w http.ResponseWriter, r *http.Request, status int, title, text string, p *Pending, linkHref, linkText string) {
	v := view{Title: title, Message: text, LinkHref: linkHref, LinkText: linkText}
	if status >= 400 {
		v.Error, v.Message = text, ""
	}
	m.render(w, r, status, "message", v, p)
}

// formActionSource returns the CSP source expression that matches redirect
// URI raw: its origin for http(s) with a host CSP can name, else its
// scheme (IPv6 literals and native-app schemes have no host-source form).
// It returns "" for anything unusable, which allows nothing extra. raw was
// validated by the authorization endpoint against the client's
// registration; this only keeps the header well-formed.
func formActionSource(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !validScheme(u.Scheme) {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "javascript", "data", "blob", "filesystem", "about", "vbscript":
		return ""
	case "http", "https":
		host, port := u.Hostname(), u.Port()
		if host == "" || !cspHost(host) || strings.Trim(port, "0123456789") != "" {
			return scheme + ":"
		}
		if port != "" {
			return scheme + "://" + host + ":" + port
		}
		return scheme + "://" + host
	}
	return scheme + ":"
}

func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		other := '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
		if !letter && (i == 0 || !other) {
			return false
		}
	}
	return true
}

func cspHost(h string) bool {
	for i := range len(h) {
		c := h[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}
