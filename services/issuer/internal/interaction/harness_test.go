package interaction_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
	"github.com/gatehouse/gatehouse/services/issuer/internal/scopecatalog"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// Demo seed (DESIGN.md).
const (
	aliceSecret   = "JBSWY3DPEHPK3PXPALICE234"
	alicePassword = "alice-demo-password"
	bobPassword   = "bob-demo-password"
	redirectURI   = "http://127.0.0.1:5555/callback"
	catalogPath   = "../../../../policies/gatehouse/data.json"
)

// testLockout locks after 3 failures, to keep the lockout test short.
func testLockout() user.LockoutPolicy {
	return user.LockoutPolicy{Threshold: 3, Base: time.Minute, Max: time.Minute}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

type auditEvent struct {
	Type  string
	Attrs map[string]string
}

type recorder struct {
	mu        sync.Mutex
	events    []auditEvent
	withdrawn []consent.Consent
	revokeErr error
}

func (r *recorder) audit(_ context.Context, typ string, attrs map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, auditEvent{Type: typ, Attrs: maps.Clone(attrs)})
}

func (r *recorder) onWithdrawn(_ context.Context, c consent.Consent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdrawn = append(r.withdrawn, c)
	return r.revokeErr
}

func (r *recorder) Events(typ string) []auditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []auditEvent
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) Withdrawn() []consent.Consent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]consent.Consent(nil), r.withdrawn...)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// harness is an issuer with the interaction pages and a stand-in for the
// authorization endpoint that uses Begin, Resume and FindConsent the way
// the real one does, answering with JSON instead of redirecting to the
// client.
type harness struct {
	t        *testing.T
	m        *interaction.Manager
	srv      *httptest.Server
	clock    *clock
	users    *memory.UserStore
	sessions *memory.BrowserSessionStore
	pending  *memory.InteractionStore
	consents *memory.ConsentStore
	rec      *recorder
	log      *syncBuffer
	// lookups counts the authenticator's user lookups: each password or
	// code it checks for a well-formed username starts with one.
	lookups *atomic.Int64
}

// countingUsers is a user store that counts GetUser calls.
type countingUsers struct {
	store.UserStore
	lookups *atomic.Int64
}

func (c countingUsers) GetUser(ctx context.Context, username string) (*user.User, error) {
	c.lookups.Add(1)
	return c.UserStore.GetUser(ctx, username)
}

func cheapParams() user.Params {
	return user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

func newHarness(t *testing.T, configure ...func(*interaction.Config)) *harness {
	t.Helper()
	start := time.Date(2030, 6, 1, 12, 0, 15, 0, time.UTC)
	h := &harness{
		t:        t,
		clock:    &clock{t: start},
		users:    memory.NewUserStore(),
		sessions: memory.NewBrowserSessionStore(),
		pending:  memory.NewInteractionStore(),
		consents: memory.NewConsentStore(),
		rec:      &recorder{},
		log:      &syncBuffer{},
		lookups:  &atomic.Int64{},
	}
	if err := demoseed.SeedUsers(t.Context(), h.users, cheapParams()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(h.log, nil))
	auth, err := authn.New(authn.Config{
		Users: countingUsers{UserStore: h.users, lookups: h.lookups}, Logger: logger, Params: cheapParams(), Lockout: testLockout(), Now: h.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	catalog, err := scopecatalog.Load(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := interaction.Config{
		Sessions:      h.sessions,
		Interactions:  h.pending,
		Consents:      h.consents,
		Authenticator: auth,
		Catalog:       catalog,
		ClientName: func(_ context.Context, id string) (string, error) {
			if id == "invoice-web" {
				return "Invoice Web", nil
			}
			return id, nil
		},
		OnConsentWithdrawn: h.rec.onWithdrawn,
		Audit:              h.rec.audit,
		Logger:             logger,
		Now:                h.clock.Now,
	}
	for _, c := range configure {
		c(&cfg)
	}
	h.m, err = interaction.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.m.Mount(mux)
	mux.HandleFunc("GET /oauth2/authorize", h.authorize)
	mux.HandleFunc("GET "+interaction.ResumePath, h.resume)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// result is what the stand-in authorization endpoint answers.
type result struct {
	Outcome   string   `json:"outcome"` // "code", "access_denied" or "access_denied:<failure>"
	Subject   string   `json:"subject"`
	ACR       string   `json:"acr"`
	AMR       []string `json:"amr"`
	ConsentID string   `json:"consent_id"`
	State     string   `json:"state"`
	Fresh     bool     `json:"fresh_login"`
}

func (h *harness) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := interaction.Pending{
		Query:        q,
		ClientID:     q.Get("client_id"),
		RedirectURI:  q.Get("redirect_uri"),
		Scopes:       strings.Fields(q.Get("scope")),
		RequireLogin: q.Get("prompt") == "login",
		RequireMFA:   q.Get("acr_values") == "mfa",
	}
	sess, err := h.m.Session(r.Context(), r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	needLogin := sess == nil || p.RequireLogin || p.RequireMFA && sess.ACR != "mfa"
	if !needLogin {
		if c, err := h.m.FindConsent(r.Context(), sess.Subject, p.ClientID, p.Scopes); err == nil {
			h.answer(w, "code", p, sess, c.ID)
			return
		}
	}
	if err := h.m.Begin(w, r, p, needLogin); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

func (h *harness) resume(w http.ResponseWriter, r *http.Request) {
	p, sess, err := h.m.Resume(r.Context(), r, r.URL.Query().Get("interaction"))
	switch {
	case err != nil:
		http.Error(w, "resume: "+err.Error(), http.StatusBadRequest)
	case p.Failure != "":
		h.answer(w, "access_denied:"+p.Failure, p, sess, "")
	case p.ConsentDenied:
		h.answer(w, "access_denied", p, sess, "")
	case sess == nil:
		if err := h.m.Begin(w, r, p, true); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	case p.ConsentGranted:
		h.answer(w, "code", p, sess, p.ConsentID)
	default:
		if c, err := h.m.FindConsent(r.Context(), sess.Subject, p.ClientID, p.Scopes); err == nil {
			h.answer(w, "code", p, sess, c.ID)
			return
		}
		if err := h.m.Begin(w, r, p, false); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}
}

func (h *harness) answer(w http.ResponseWriter, outcome string, p interaction.Pending, sess *interaction.Session, consentID string) {
	res := result{Outcome: outcome, ConsentID: consentID, State: p.Query.Get("state"), Fresh: !p.LoginAt.IsZero()}
	if sess != nil {
		res.Subject, res.ACR, res.AMR = sess.Subject, sess.ACR, sess.AMR
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// authorizePath is an authorization request of invoice-web.
func authorizePath(scope string, extra ...string) string {
	q := url.Values{
		"client_id":     {"invoice-web"},
		"response_type": {"code"},
		"redirect_uri":  {redirectURI},
		"scope":         {scope},
		"state":         {"state-1"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "/oauth2/authorize?" + q.Encode()
}

// totpCode is alice's code at the harness clock.
func (h *harness) totpCode(t *testing.T) string {
	t.Helper()
	c, err := totp.GenerateCode(aliceSecret, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// browser is one user agent: its own cookie jar.
type browser struct {
	t      *testing.T
	h      *harness
	client *http.Client // follows redirects
	manual *http.Client // does not
}

func (h *harness) newBrowser(t *testing.T) *browser {
	t.Helper()
	return h.newBrowserWith(t, nil)
}

// newBrowserAt is a browser whose requests reach the server from peer
// address remoteAddr ("host:port"): they are served in-process with
// r.RemoteAddr set, since a test server only ever sees the loopback.
func (h *harness) newBrowserAt(t *testing.T, remoteAddr string) *browser {
	t.Helper()
	return h.newBrowserWith(t, peerTransport{handler: h.srv.Config.Handler, remoteAddr: remoteAddr})
}

func (h *harness) newBrowserWith(t *testing.T, transport http.RoundTripper) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{
		t:      t,
		h:      h,
		client: &http.Client{Jar: jar, Transport: transport},
		manual: &http.Client{Jar: jar, Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// peerTransport serves requests with handler in-process, as if they came
// from remoteAddr.
type peerTransport struct {
	handler    http.Handler
	remoteAddr string
}

func (p peerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body io.Reader = http.NoBody
	if req.Body != nil {
		defer req.Body.Close()
		body = req.Body
	}
	in := httptest.NewRequestWithContext(req.Context(), req.Method, req.URL.String(), body)
	in.Header = req.Header.Clone()
	in.RemoteAddr = p.remoteAddr
	rec := httptest.NewRecorder()
	p.handler.ServeHTTP(rec, in)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// page is a response as the test sees it.
type page struct {
	Status int
	Header http.Header
	Body   string
	URL    *url.URL // after redirects
}

func (b *browser) do(c *http.Client, req *http.Request) page {
	b.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{Status: resp.StatusCode, Header: resp.Header, Body: string(body), URL: resp.Request.URL}
}

// get fetches path, following redirects.
func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, b.h.srv.URL+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(b.client, req)
}

// getManual fetches path without following redirects.
func (b *browser) getManual(path string) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, b.h.srv.URL+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(b.manual, req)
}

// post submits form to path, following redirects; header pairs are added.
func (b *browser) post(path string, form url.Values, header ...string) page {
	b.t.Helper()
	return b.postWith(b.client, path, form, header...)
}

// postManual submits form to path without following redirects.
func (b *browser) postManual(path string, form url.Values, header ...string) page {
	b.t.Helper()
	return b.postWith(b.manual, path, form, header...)
}

func (b *browser) postWith(c *http.Client, path string, form url.Values, header ...string) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, b.h.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(c, req)
}

var (
	csrfRE        = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)
	interactionRE = regexp.MustCompile(`name="interaction" value="([^"]*)"`)
)

func field(t *testing.T, re *regexp.Regexp, p page) string {
	t.Helper()
	m := re.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no %s in page %s (status %d):\n%s", re, p.URL, p.Status, p.Body)
	}
	return m[1]
}

// formOf returns the hidden fields of p's form plus extra pairs.
func formOf(t *testing.T, p page, extra ...string) url.Values {
	t.Helper()
	f := url.Values{"csrf_token": {field(t, csrfRE, p)}}
	if m := interactionRE.FindStringSubmatch(p.Body); m != nil {
		f.Set("interaction", m[1])
	}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Set(extra[i], extra[i+1])
	}
	return f
}

// result decodes the stand-in authorization endpoint's answer.
func (p page) result(t *testing.T) result {
	t.Helper()
	if p.Status != http.StatusOK || p.URL.Path != "/oauth2/authorize" && p.URL.Path != interaction.ResumePath {
		t.Fatalf("expected the authorization endpoint's answer, got %d at %s:\n%s", p.Status, p.URL, p.Body)
	}
	var r result
	if err := json.Unmarshal([]byte(p.Body), &r); err != nil {
		t.Fatalf("answer %q: %v", p.Body, err)
	}
	return r
}

// mustStatus fails unless p has status want.
func (p page) mustStatus(t *testing.T, want int) page {
	t.Helper()
	if p.Status != want {
		t.Fatalf("%s: status %d, want %d:\n%s", p.URL, p.Status, want, p.Body)
	}
	return p
}

// mustBeAt fails unless p was served at path.
func (p page) mustBeAt(t *testing.T, path string) page {
	t.Helper()
	if p.URL.Path != path {
		t.Fatalf("at %s (status %d), want %s:\n%s", p.URL, p.Status, path, p.Body)
	}
	return p
}

// signIn runs an authorization request through the login (and, for alice,
// MFA) step and returns the page after it.
func (b *browser) signIn(username, password, authorize string) page {
	b.t.Helper()
	login := b.get(authorize).mustStatus(b.t, http.StatusOK).mustBeAt(b.t, interaction.PathLogin)
	next := b.post(interaction.PathLogin, formOf(b.t, login, "username", username, "password", password))
	if next.URL.Path == interaction.PathMFA {
		next = b.post(interaction.PathMFA, formOf(b.t, next, "code", b.h.totpCode(b.t)))
	}
	return next
}

// signedIn reports whether the browser has a session (the account page
// answers instead of redirecting to the login page).
func (b *browser) signedIn() bool {
	b.t.Helper()
	p := b.getManual(interaction.PathAccountConsents)
	return p.Status == http.StatusOK
}

var errNoCookie = errors.New("no cookie")

// hashOf is how the server keys a cookie secret.
func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// cookie returns the browser's cookie name.
func (b *browser) cookie(name string) (string, error) {
	u, err := url.Parse(b.h.srv.URL)
	if err != nil {
		return "", err
	}
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value, nil
		}
	}
	return "", errNoCookie
}
