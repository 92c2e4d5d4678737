// Package authorize is the issuer's authorization endpoint (RFC 6749 §3.1,
// OpenID Connect Core §3.1.2): the authorization-code flow with PKCE, on
// fosite. It decides what a request still needs (a login, a fresh login
// for prompt=login or max_age, a second factor for acr_values=mfa, the
// user's consent), parks the request with the browser pages of package
// interaction until the user has done it, and then issues the code with
// the claims the tokens will carry: sub, tenant, roles, acr, amr and
// auth_time.
package authorize

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// Paths of the endpoint.
const (
	// Path is the authorization endpoint.
	Path = "/oauth2/authorize"
	// ResumePath is where the browser pages send the user back once the
	// parked request's login or consent is done.
	ResumePath = "/oauth2/authorize/resume"
)

// maxStateLen bounds the state parameter; it comes back in a URL.
const maxStateLen = 512

// minNonceLen is the shortest nonce accepted: fosite refuses a shorter one
// at the token endpoint, after the code is spent, so it is refused here.
const minNonceLen = 8

// validS256Challenge reports whether c is an unpadded base64url SHA-256
// (RFC 7636 §4.2).
func validS256Challenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

// PromptValues returns the prompt values the endpoint honours.
func PromptValues() []string { return []string{"none", "login", "consent"} }

// ACRValues returns the acr values the issuer can satisfy.
func ACRValues() []string { return []string{browsersession.ACRPassword, browsersession.ACRMFA} }

// Browser is what the endpoint needs of the login and consent pages
// (*interaction.Manager).
type Browser interface {
	// Session is the signed-in session of the browser behind r, or nil.
	Session(ctx context.Context, r *http.Request) (*browsersession.Session, error)
	// Begin parks p and sends the browser to the login page (needLogin) or
	// to the consent page.
	Begin(w http.ResponseWriter, r *http.Request, p browsersession.Pending, needLogin bool) error
	// Resume returns the parked request id, once, with the browser's session.
	Resume(ctx context.Context, r *http.Request, id string) (browsersession.Pending, *browsersession.Session, error)
	// FindConsent returns the subject's active consent for the client
	// covering scopes, or an error wrapping store.ErrNotFound.
	FindConsent(ctx context.Context, subject, clientID string, scopes []string) (consent.Consent, error)
}

// Users looks up the signed-in user's tenant and roles.
type Users interface {
	GetUser(ctx context.Context, username string) (*user.User, error)
}

// Endpoint serves Path and ResumePath.
type Endpoint struct {
	provider *token.Provider
	browser  Browser
	users    Users
	logger   *slog.Logger
	now      func() time.Time
}

// New returns the authorization endpoint.
func New(p *token.Provider, b Browser, u Users, logger *slog.Logger) *Endpoint {
	return &Endpoint{provider: p, browser: b, users: u, logger: logger, now: time.Now}
}

// Mount adds the endpoint's routes to mux.
func (e *Endpoint) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Path, e.authorize)
	mux.HandleFunc("POST "+Path, e.authorize)
	mux.HandleFunc("GET "+ResumePath, e.resume)
}

// progress is what the current interaction has already established.
type progress struct {
	// requestedAt is when the request (or its current interaction) began:
	// prompt=login and max_age are measured against it.
	requestedAt time.Time
	// loginDone: the login the request needed happened in this interaction.
	loginDone bool
	// consentID: the consent the user just granted in this interaction.
	consentID string
}

// authorize handles a fresh authorization request.
func (e *Endpoint) authorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := checkParameters(r); err != nil {
		e.fail(ctx, w, nil, err)
		return
	}
	ar, err := e.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		e.fail(ctx, w, ar, err)
		return
	}
	if r.Form.Get("redirect_uri") == "" {
		// OAuth 2.1 §4.1.1: always required, so no code is ever sent to a
		// default the client did not name in this request.
		e.fail(ctx, w, nil, fosite.ErrInvalidRequest.WithHint("The redirect_uri parameter is required."))
		return
	}
	if u := ar.GetRedirectURI(); u.User != nil || u.Fragment != "" {
		// fosite's loopback rule ignores user info; exact matching does not.
		e.fail(ctx, w, nil, fosite.ErrInvalidRequest.WithHint("The redirect_uri does not match a registered one."))
		return
	}
	if err := checkRequest(ar); err != nil {
		e.fail(ctx, w, ar, err)
		return
	}
	sess, err := e.browser.Session(ctx, r)
	if err != nil {
		e.fail(ctx, w, ar, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
		return
	}
	e.decide(w, r, ar, sess, progress{requestedAt: e.now().UTC()})
}

// resume handles the return from the login or consent page.
func (e *Endpoint) resume(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p, sess, err := e.browser.Resume(ctx, r, r.URL.Query().Get("interaction"))
	if err != nil {
		// Nothing identifies a client or a redirect URI we could trust.
		e.logger.InfoContext(ctx, "authorization resume rejected", slog.String("error", err.Error()))
		http.Error(w, "This sign-in request has expired or belongs to another browser. Go back to the application and start again.", http.StatusBadRequest)
		return
	}
	// Rebuild the original request: fosite validates it again, client and
	// redirect URI included.
	orig := r.Clone(ctx)
	orig.Method = http.MethodGet
	orig.URL = &url.URL{Path: Path, RawQuery: p.Query.Encode()}
	orig.Form, orig.PostForm, orig.Body = nil, nil, http.NoBody
	ar, err := e.provider.NewAuthorizeRequest(ctx, orig)
	if err != nil {
		e.fail(ctx, w, ar, err)
		return
	}
	if err := checkRequest(ar); err != nil {
		e.fail(ctx, w, ar, err)
		return
	}
	switch {
	case p.Failure == browsersession.FailureMFANotEnrolled:
		e.fail(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The request needs a second factor, and the user has none enrolled."))
		return
	case p.Failure != "":
		e.fail(ctx, w, ar, fosite.ErrAccessDenied.WithDebug(p.Failure))
		return
	case p.ConsentDenied:
		e.fail(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The user denied the request."))
		return
	case sess != nil && p.Subject != "" && p.Subject != sess.Subject:
		e.fail(ctx, w, ar, fosite.ErrAccessDenied.WithHint("Another user signed in while the request was waiting.").WithDebug("subject changed during the interaction"))
		return
	}
	prog := progress{requestedAt: p.CreatedAt.UTC()}
	prog.loginDone = !p.RequireLogin || (sess != nil && !p.LoginAt.IsZero() && !sess.AuthTime.Before(p.CreatedAt))
	if p.ConsentGranted {
		prog.consentID = p.ConsentID
	}
	e.decide(w, r, ar, sess, prog)
}

// decide sends the browser to whatever the request still needs, or issues
// the code.
func (e *Endpoint) decide(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, sess *browsersession.Session, prog progress) {
	ctx := r.Context()
	form := ar.GetRequestForm()
	prompt := strings.Fields(form.Get("prompt"))
	promptNone := slices.Contains(prompt, "none")
	requireMFA := slices.Contains(strings.Fields(form.Get("acr_values")), browsersession.ACRMFA)
	freshLogin := slices.Contains(prompt, "login") || maxAgeExceeded(form, sess, prog.requestedAt)

	needLogin := sess == nil || (freshLogin && !prog.loginDone) || (requireMFA && sess.ACR != browsersession.ACRMFA)
	if needLogin {
		if promptNone {
			e.fail(ctx, w, ar, fosite.ErrLoginRequired.WithHint("The user must sign in, and prompt=none forbids asking."))
			return
		}
		e.begin(w, r, ar, freshLogin, requireMFA, true)
		return
	}

	consentID := prog.consentID
	if consentID == "" {
		if slices.Contains(prompt, "consent") {
			e.begin(w, r, ar, false, false, false)
			return
		}
		c, err := e.browser.FindConsent(ctx, sess.Subject, ar.GetClient().GetID(), ar.GetRequestedScopes())
		switch {
		case errors.Is(err, store.ErrNotFound):
			if promptNone {
				e.fail(ctx, w, ar, fosite.ErrConsentRequired.WithHint("The user has not consented, and prompt=none forbids asking."))
				return
			}
			e.begin(w, r, ar, false, false, false)
			return
		case err != nil:
			e.fail(ctx, w, ar, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
			return
		}
		consentID = c.ID
	}
	e.issue(w, r, ar, sess, consentID, prog.requestedAt)
}

// begin parks the request with the browser pages. A login required by
// prompt=login, max_age or acr_values is marked so, and is measured from
// the interaction's start.
func (e *Endpoint) begin(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, freshLogin, requireMFA, needLogin bool) {
	p := browsersession.Pending{
		Query:        ar.GetRequestForm(),
		ClientID:     ar.GetClient().GetID(),
		RedirectURI:  ar.GetRedirectURI().String(),
		Scopes:       slices.Clone(ar.GetRequestedScopes()),
		RequireLogin: freshLogin,
		RequireMFA:   requireMFA,
	}
	if err := e.browser.Begin(w, r, p, needLogin); err != nil {
		e.fail(r.Context(), w, ar, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
}

// issue grants the requested scopes (all covered by the consent) and the
// client's audiences, builds the session the tokens will be made from, and
// redirects with the code.
func (e *Endpoint) issue(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, sess *browsersession.Session, consentID string, requestedAt time.Time) {
	ctx := r.Context()
	u, err := e.users.GetUser(ctx, sess.Subject)
	if errors.Is(err, store.ErrNotFound) {
		e.fail(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The signed-in user no longer exists.").WithWrap(err).WithDebug(err.Error()))
		return
	}
	if err != nil {
		e.fail(ctx, w, ar, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
		return
	}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	audiences := ar.GetRequestedAudience()
	if len(audiences) == 0 {
		audiences = ar.GetClient().GetAudience()
	}
	for _, a := range audiences {
		ar.GrantAudience(a)
	}
	if req, ok := ar.(*fosite.AuthorizeRequest); ok {
		req.RequestedAt = requestedAt
	}
	session := newSession(ar.GetClient().GetID(), u, sess, consentID, requestedAt, ar.GetGrantedScopes().Has("profile"))
	resp, err := e.provider.NewAuthorizeResponse(ctx, ar, session)
	if err != nil {
		e.fail(ctx, w, ar, err)
		return
	}
	e.logger.InfoContext(ctx, "authorization code issued",
		slog.String("client_id", ar.GetClient().GetID()),
		slog.String("sub", sess.Subject),
		slog.String("tenant", u.Tenant),
		slog.Any("scopes", []string(ar.GetGrantedScopes())),
		slog.String("acr", sess.ACR),
		slog.String("consent_id", consentID),
	)
	e.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// newSession builds the session of a user's grant: access-token claims
// (sub, client_id, tenant, roles, acr, amr, auth_time) and ID-token claims
// (sub, auth_time, acr, amr, and preferred_username with the profile scope).
func newSession(clientID string, u *user.User, sess *browsersession.Session, consentID string, requestedAt time.Time, profile bool) *token.Session {
	s := token.NewSession()
	s.Subject, s.Username = u.Username, u.Username
	authTime := sess.AuthTime.UTC().Truncate(time.Second)
	s.JWTClaims.Subject = u.Username
	s.JWTClaims.Extra = map[string]any{
		"client_id": clientID,
		"tenant":    u.Tenant,
		"roles":     slices.Clone(u.Roles),
		"acr":       sess.ACR,
		"amr":       slices.Clone(sess.AMR),
		"auth_time": authTime.Unix(),
	}
	idc := s.IDTokenClaims()
	idc.Subject = u.Username
	idc.AuthTime = authTime
	idc.RequestedAt = requestedAt.UTC().Truncate(time.Second)
	idc.AuthenticationContextClassReference = sess.ACR
	idc.AuthenticationMethodsReferences = slices.Clone(sess.AMR)
	idc.Extra = map[string]any{"tenant": u.Tenant}
	if profile {
		idc.Extra["preferred_username"] = u.Username
	}
	s.ConsentID = consentID
	s.BrowserSessionID = sess.ID
	return s
}

// maxAgeExceeded reports whether the session's login is older than the
// request's max_age allows.
func maxAgeExceeded(form url.Values, sess *browsersession.Session, requestedAt time.Time) bool {
	raw := form.Get("max_age")
	if raw == "" || sess == nil {
		return false
	}
	secs, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return true
	}
	return sess.AuthTime.Add(time.Duration(secs) * time.Second).Before(requestedAt)
}

// checkParameters refuses what fosite lets through before it parses the
// request: repeated parameters (RFC 6749 §3.1).
func checkParameters(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return fosite.ErrInvalidRequest.WithHint("The request is not a valid form.")
	}
	for name, values := range r.Form {
		if len(values) > 1 {
			return fosite.ErrInvalidRequest.WithHintf("The %q parameter must not be repeated.", truncate(name))
		}
	}
	return nil
}

// checkRequest applies the Gatehouse profile to a request fosite accepted:
// response_type code only, a state (CSRF protection for the client), a
// well-formed max_age and prompt.
func checkRequest(ar fosite.AuthorizeRequester) error {
	if !ar.GetResponseTypes().ExactOne("code") {
		return fosite.ErrUnsupportedResponseType.WithHint("Only response_type=code is supported.")
	}
	state := ar.GetState()
	if state == "" {
		return fosite.ErrInvalidState.WithHint("The state parameter is required.")
	}
	if len(state) > maxStateLen {
		return fosite.ErrInvalidState.WithHintf("The state parameter must be at most %d characters.", maxStateLen)
	}
	form := ar.GetRequestForm()
	// PKCE is checked here, before any page is shown, although fosite
	// checks it again when it issues the code.
	challenge, method := form.Get("code_challenge"), form.Get("code_challenge_method")
	switch {
	case challenge == "" && ar.GetClient().IsPublic():
		return fosite.ErrInvalidRequest.WithHint("Public clients must use PKCE: send code_challenge with code_challenge_method=S256.")
	case challenge == "" && method != "":
		return fosite.ErrInvalidRequest.WithHint("code_challenge_method without code_challenge.")
	case challenge != "" && method != "S256":
		return fosite.ErrInvalidRequest.WithHint("code_challenge_method must be S256; plain is not accepted.")
	case challenge != "" && !validS256Challenge(challenge):
		return fosite.ErrInvalidRequest.WithHint("code_challenge must be the 43-character base64url SHA-256 of the verifier.")
	}
	if nonce := form.Get("nonce"); nonce != "" && len(nonce) < minNonceLen {
		return fosite.ErrInvalidRequest.WithHintf("nonce must be at least %d characters.", minNonceLen)
	}
	if raw := form.Get("max_age"); raw != "" {
		if n, err := strconv.ParseInt(raw, 10, 64); err != nil || n < 0 {
			return fosite.ErrInvalidRequest.WithHint("max_age must be a non-negative integer of seconds.")
		}
	}
	prompt := strings.Fields(form.Get("prompt"))
	for _, p := range prompt {
		if !slices.Contains(PromptValues(), p) {
			return fosite.ErrInvalidRequest.WithHintf("prompt %q is not supported.", truncate(p))
		}
	}
	if slices.Contains(prompt, "none") && len(prompt) > 1 {
		return fosite.ErrInvalidRequest.WithHint("prompt=none cannot be combined with other values.")
	}
	return nil
}

// fail answers err in RFC 6749 §4.1.2.1 form: a redirect to the client
// when its redirect URI is known and valid, else an error page; and logs
// what only operators may see.
func (e *Endpoint) fail(ctx context.Context, w http.ResponseWriter, ar fosite.AuthorizeRequester, err error) {
	rfcErr := fosite.ErrorToRFC6749Error(err)
	level := slog.LevelInfo
	if rfcErr.CodeField >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	clientID := ""
	if ar != nil && ar.GetClient() != nil {
		clientID = ar.GetClient().GetID()
	}
	e.logger.Log(ctx, level, "authorization request rejected",
		slog.String("error", rfcErr.ErrorField),
		slog.String("hint", rfcErr.HintField),
		slog.String("debug", rfcErr.DebugField),
		slog.String("client_id", clientID),
	)
	if ar == nil {
		ar = fosite.NewAuthorizeRequest()
	}
	e.provider.WriteAuthorizeError(ctx, w, ar, rfcErr)
}

func truncate(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
