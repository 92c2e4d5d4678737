package interaction

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// Messages shown on failed logins. They never say which of the username,
// password or code was wrong, nor whether the account exists.
const (
	msgInvalidCredentials = "Invalid username, password or code. Check them and try again."
	msgLocked             = "Too many failed attempts. Try again later."
	msgMFAExpired         = "Signing in took too long. Enter your username and password again."
)

// nextAccount names the only page a login without a client returns to
// (PathAccountConsents). A login's return target is always this fixed
// path, never a URL from the request.
const nextAccount = "account"

// Mount registers the pages on mux.
func (m *Manager) Mount(mux *http.ServeMux) {
	mux.Handle("GET "+PathLogin, m.secured(m.getLogin))
	mux.Handle("POST "+PathLogin, m.secured(m.postLogin))
	mux.Handle("GET "+PathMFA, m.secured(m.getMFA))
	mux.Handle("POST "+PathMFA, m.secured(m.postMFA))
	mux.Handle("GET "+PathConsent, m.secured(m.getConsent))
	mux.Handle("POST "+PathConsent, m.secured(m.postConsent))
	mux.Handle("GET "+PathAccountConsents, m.secured(m.getAccount))
	mux.Handle("POST "+PathWithdraw, m.secured(m.postWithdraw))
	mux.Handle("POST "+PathLogout, m.secured(m.postLogout))
}

// getLogin shows the login form, for interaction ?interaction= or, without
// one, for the account pages.
func (m *Manager) getLogin(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Sign in"}
	var p *Pending
	if id := r.URL.Query().Get("interaction"); id != "" {
		pending, err := m.interactionFor(r.Context(), r, id)
		if err != nil {
			m.interactionError(w, r, err)
			return
		}
		p = &pending
		v.Interaction = pending.ID
		if pending.ClientID != "" {
			v.ClientName = m.displayName(r.Context(), pending.ClientID)
		}
		v.RequireLogin, v.RequireMFA = pending.RequireLogin, pending.RequireMFA
	} else {
		v.Next = nextAccount
	}
	v.CSRF = csrfToken(m.ensureBrowser(w, r))
	m.render(w, r, http.StatusOK, "login", v, p)
}

// postLogin checks the password; a TOTP user continues on the MFA page. A
// source out of attempts gets 429 and the form again, unchecked.
func (m *Manager) postLogin(w http.ResponseWriter, r *http.Request) {
	if !m.checkPost(w, r) {
		return
	}
	ctx := r.Context()
	var p *Pending
	if id := r.PostForm.Get("interaction"); id != "" {
		pending, err := m.interactionFor(ctx, r, id)
		if err != nil {
			m.interactionError(w, r, err)
			return
		}
		p = &pending
	}
	src := sourceOf(r.RemoteAddr)
	if msg, ok := m.admit(w, r, src, p, stepPassword); !ok {
		m.renderLogin(w, r, http.StatusTooManyRequests, p, msg)
		return
	}
	auth, err := m.auth.Authenticate(ctx, authn.Credentials{
		Username: r.PostForm.Get("username"),
		Password: r.PostForm.Get("password"),
	})
	if mfa, ok := errors.AsType[*authn.MFARequiredError](err); ok {
		m.throttle.refund(src, m.now()) // the password was right
		m.startMFA(w, r, p, mfa)
		return
	}
	if err != nil {
		m.loginFailed(w, r, p, "", err)
		return
	}
	m.throttle.refund(src, m.now())
	m.loggedIn(w, r, p, auth)
}

// startMFA parks the verified password in the interaction (a new one for
// an account login) and sends the browser to the MFA page.
func (m *Manager) startMFA(w http.ResponseWriter, r *http.Request, p *Pending, mfa *authn.MFARequiredError) {
	ctx := r.Context()
	if p == nil {
		// A login without a client: the state still lives server-side, in
		// an interaction bound to this browser. Created only once a
		// password was verified, so anonymous requests create nothing.
		secret, _ := cookieSecret(r, m.browserCookie) // checkPost ensured it
		now := m.now()
		pending := Pending{
			ID:                 randomToken(),
			Browser:            hashHex(secret),
			Next:               nextAccount,
			CreatedAt:          now,
			ExpiresAt:          now.Add(m.interactionLifetime),
			MFAUsername:        mfa.Username,
			PasswordVerifiedAt: mfa.PasswordVerifiedAt,
		}
		if err := m.interactions.CreateInteraction(ctx, pending); err != nil {
			m.fail(w, r, err)
			return
		}
		p = &pending
	} else {
		p.MFAUsername, p.PasswordVerifiedAt = mfa.Username, mfa.PasswordVerifiedAt
		if !m.update(w, r, p) {
			return
		}
	}
	seeOther(w, r, PathMFA+"?interaction="+url.QueryEscape(p.ID))
}

// getMFA shows the TOTP form of an interaction whose password step passed.
func (m *Manager) getMFA(w http.ResponseWriter, r *http.Request) {
	p, err := m.interactionFor(r.Context(), r, r.URL.Query().Get("interaction"))
	if err != nil {
		m.interactionError(w, r, err)
		return
	}
	if p.MFAUsername == "" {
		seeOther(w, r, loginURL(p))
		return
	}
	m.renderMFA(w, r, http.StatusOK, p, "")
}

func (m *Manager) renderMFA(w http.ResponseWriter, r *http.Request, status int, p Pending, msg string) {
	v := view{Title: "Enter your verification code", Error: msg, Interaction: p.ID, CSRF: csrfToken(m.ensureBrowser(w, r))}
	if p.ClientID != "" {
		v.ClientName = m.displayName(r.Context(), p.ClientID)
	}
	m.render(w, r, status, "mfa", v, &p)
}

// postMFA checks the TOTP code against the login parked in the interaction,
// throttled like postLogin.
func (m *Manager) postMFA(w http.ResponseWriter, r *http.Request) {
	if !m.checkPost(w, r) {
		return
	}
	ctx := r.Context()
	p, err := m.interactionFor(ctx, r, r.PostForm.Get("interaction"))
	if err != nil {
		m.interactionError(w, r, err)
		return
	}
	if p.MFAUsername == "" {
		seeOther(w, r, loginURL(p))
		return
	}
	src := sourceOf(r.RemoteAddr)
	if msg, ok := m.admit(w, r, src, &p, stepCode); !ok {
		// The password step stands: the user retries the code later.
		m.renderMFA(w, r, http.StatusTooManyRequests, p, msg)
		return
	}
	auth, err := m.auth.CompleteMFA(ctx, p.MFAUsername, p.PasswordVerifiedAt, r.PostForm.Get("code"))
	if err != nil {
		m.loginFailed(w, r, &p, p.MFAUsername, err)
		return
	}
	m.throttle.refund(src, m.now())
	m.loggedIn(w, r, &p, auth)
}

// loginFailed answers a failed password or code step. subject is the user
// whose password was verified (MFA step), else "".
func (m *Manager) loginFailed(w http.ResponseWriter, r *http.Request, p *Pending, subject string, err error) {
	var reason, msg string
	status := http.StatusUnauthorized
	switch {
	case errors.Is(err, authn.ErrLocked):
		reason, msg, status = "locked", msgLocked, http.StatusTooManyRequests
	case errors.Is(err, authn.ErrMFAExpired):
		reason, msg = "mfa_expired", msgMFAExpired
	case errors.Is(err, authn.ErrInvalidCredentials):
		reason, msg = "invalid_credentials", msgInvalidCredentials
	default:
		m.auditLogin(r.Context(), AuditLoginFailed, p, map[string]string{"reason": "error", "subject": subject})
		m.fail(w, r, err)
		return
	}
	m.auditLogin(r.Context(), AuditLoginFailed, p, map[string]string{"reason": reason, "subject": subject})
	if subject != "" && reason == "invalid_credentials" {
		m.renderMFA(w, r, status, *p, msg)
		return
	}
	if p != nil && p.MFAUsername != "" {
		// A lockout or an expired step ends the password step too.
		p.MFAUsername, p.PasswordVerifiedAt = "", time.Time{}
		if !m.update(w, r, p) {
			return
		}
	}
	m.renderLogin(w, r, status, p, msg)
}

// renderLogin shows the login form of interaction p (nil: the account
// login) with error msg.
func (m *Manager) renderLogin(w http.ResponseWriter, r *http.Request, status int, p *Pending, msg string) {
	v := view{Title: "Sign in", Error: msg, CSRF: csrfToken(m.ensureBrowser(w, r))}
	if p != nil && p.Next == "" {
		v.Interaction = p.ID
		v.ClientName = m.displayName(r.Context(), p.ClientID)
		v.RequireLogin, v.RequireMFA = p.RequireLogin, p.RequireMFA
	} else {
		v.Next = nextAccount
	}
	m.render(w, r, status, "login", v, p)
}

// loggedIn finishes a successful login: a fresh session, then back to the
// authorization endpoint (or to the account page).
func (m *Manager) loggedIn(w http.ResponseWriter, r *http.Request, p *Pending, auth *authn.Authentication) {
	ctx := r.Context()
	acr := browsersession.ACRPassword
	if slices.Contains(auth.Methods, authn.MethodOTP) {
		acr = browsersession.ACRMFA
	}
	if p != nil && p.RequireMFA && acr != browsersession.ACRMFA {
		// Only users enrolled in TOTP can satisfy acr_values=mfa. No
		// session: the login did not give what the request asked for.
		p.Failure = browsersession.FailureMFANotEnrolled
		if !m.update(w, r, p) {
			return
		}
		m.auditLogin(ctx, AuditLoginFailed, p, map[string]string{"reason": browsersession.FailureMFANotEnrolled, "subject": auth.User.Username})
		name := m.displayName(ctx, p.ClientID)
		m.message(w, r, http.StatusForbidden, "A second factor is required",
			name+" requires you to sign in with a code from an authenticator app, and your account has none set up. "+
				"Ask your administrator to set one up, then try again.",
			p, resumeURL(p.ID), "Return to "+name)
		return
	}
	sess, err := m.startSession(w, r, auth, acr)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	m.auditLogin(ctx, AuditLoginSucceeded, p, map[string]string{
		"subject": sess.Subject, "tenant": sess.Tenant, "acr": sess.ACR, "amr": strings.Join(sess.AMR, " "),
	})
	if p == nil || p.Next != "" {
		if p != nil {
			if err := m.interactions.DeleteInteraction(ctx, p.ID, p.Version); err != nil && !errors.Is(err, store.ErrNotFound) {
				m.logger.WarnContext(ctx, "deleting account login interaction failed", slog.String("error", err.Error()))
			}
		}
		seeOther(w, r, PathAccountConsents)
		return
	}
	p.Subject, p.LoginAt, p.Failure = sess.Subject, auth.Time, ""
	p.MFAUsername, p.PasswordVerifiedAt = "", time.Time{}
	if !m.update(w, r, p) {
		return
	}
	seeOther(w, r, resumeURL(p.ID))
}

// startSession replaces r's session, if any, with a new one for auth: a new
// cookie value on every login, so a session id planted before the login
// is worthless after it.
func (m *Manager) startSession(w http.ResponseWriter, r *http.Request, auth *authn.Authentication, acr string) (*Session, error) {
	ctx := r.Context()
	if old, ok := cookieSecret(r, m.sessionCookie); ok {
		if err := m.sessions.DeleteBrowserSession(ctx, hashHex(old)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	now := m.now()
	secret := randomToken()
	s := Session{
		ID:            hashHex(secret),
		Subject:       auth.User.Username,
		Tenant:        auth.User.Tenant,
		AuthTime:      auth.Time,
		AMR:           slices.Clone(auth.Methods),
		ACR:           acr,
		ExpiresAt:     now.Add(m.sessionLifetime),
		IdleExpiresAt: minTime(now.Add(m.sessionIdle), now.Add(m.sessionLifetime)),
	}
	if err := m.sessions.CreateBrowserSession(ctx, s); err != nil {
		return nil, err
	}
	m.setCookie(w, m.sessionCookie, secret)
	return &s, nil
}

// getConsent shows what the client asks for.
func (m *Manager) getConsent(w http.ResponseWriter, r *http.Request) {
	p, sess, ok := m.consentState(w, r, r.URL.Query().Get("interaction"))
	if !ok {
		return
	}
	m.renderConsent(w, r, http.StatusOK, p, sess, "")
}

func (m *Manager) renderConsent(w http.ResponseWriter, r *http.Request, status int, p Pending, sess *Session, msg string) {
	m.render(w, r, status, "consent", view{
		Title:        "Allow access to your account?",
		Error:        msg,
		CSRF:         csrfToken(m.ensureBrowser(w, r)),
		Interaction:  p.ID,
		ClientName:   m.displayName(r.Context(), p.ClientID),
		Subject:      sess.Subject,
		Tenant:       sess.Tenant,
		Scopes:       m.catalog.DescribeAll(p.Scopes),
		ConsentUntil: m.now().Add(m.consentLifetime),
	}, &p)
}

// postConsent records the user's answer and returns to the authorization
// endpoint.
func (m *Manager) postConsent(w http.ResponseWriter, r *http.Request) {
	if !m.checkPost(w, r) {
		return
	}
	p, sess, ok := m.consentState(w, r, r.PostForm.Get("interaction"))
	if !ok {
		return
	}
	ctx := r.Context()
	attrs := map[string]string{"subject": sess.Subject, "tenant": sess.Tenant, "client_id": p.ClientID, "scope": strings.Join(p.Scopes, " ")}
	switch r.PostForm.Get("decision") {
	case "allow":
		now := m.now()
		c := consent.Consent{
			ID:        randomToken(),
			Subject:   sess.Subject,
			Tenant:    sess.Tenant,
			ClientID:  p.ClientID,
			Scopes:    consent.NormalizeScopes(p.Scopes),
			GrantedAt: now,
			ExpiresAt: now.Add(m.consentLifetime),
		}
		if err := m.consents.GrantConsent(ctx, c); err != nil {
			m.fail(w, r, err)
			return
		}
		attrs["consent_id"], attrs["expires_at"] = c.ID, c.ExpiresAt.UTC().Format(time.RFC3339)
		m.audit(ctx, AuditConsentGranted, attrs)
		p.ConsentGranted, p.ConsentID = true, c.ID
	case "deny":
		m.audit(ctx, AuditConsentDenied, attrs)
		p.ConsentDenied = true
	default:
		m.renderConsent(w, r, http.StatusBadRequest, p, sess, "Choose Allow or Deny.")
		return
	}
	p.Subject = sess.Subject
	if !m.update(w, r, &p) {
		return
	}
	seeOther(w, r, resumeURL(p.ID))
}

// consentState loads interaction id for the consent page with the
// browser's session, or answers the request itself and returns false.
func (m *Manager) consentState(w http.ResponseWriter, r *http.Request, id string) (Pending, *Session, bool) {
	ctx := r.Context()
	p, err := m.interactionFor(ctx, r, id)
	if err == nil && p.Next != "" {
		err = ErrInteractionNotFound
	}
	if err != nil {
		m.interactionError(w, r, err)
		return Pending{}, nil, false
	}
	sess, err := m.Session(ctx, r)
	if err != nil {
		m.fail(w, r, err)
		return Pending{}, nil, false
	}
	switch {
	case sess == nil:
		seeOther(w, r, loginURL(p))
		return Pending{}, nil, false
	case p.Subject != "" && p.Subject != sess.Subject:
		m.message(w, r, http.StatusConflict, "You are signed in as someone else",
			"This request was started by another user of this browser. Go back to the application and start again.", nil, "", "")
		return Pending{}, nil, false
	case p.ConsentGranted || p.ConsentDenied || p.Failure != "":
		// Already answered (a second submission): nothing more to record.
		seeOther(w, r, resumeURL(p.ID))
		return Pending{}, nil, false
	}
	return p, sess, true
}

// getAccount lists the signed-in user's active consents.
func (m *Manager) getAccount(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sess, ok := m.accountSession(w, r)
	if !ok {
		return
	}
	list, err := m.consents.ListConsentsBySubject(ctx, sess.Subject)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	now := m.now()
	names := make(map[string]string)
	var rows []consentView
	for _, c := range list {
		if !c.ActiveAt(now) {
			continue
		}
		name, ok := names[c.ClientID]
		if !ok {
			name = m.displayName(ctx, c.ClientID)
			names[c.ClientID] = name
		}
		rows = append(rows, consentView{
			ID: c.ID, ClientID: c.ClientID, ClientName: name,
			Scopes: m.catalog.DescribeAll(c.Scopes), GrantedAt: c.GrantedAt, ExpiresAt: c.ExpiresAt,
		})
	}
	v := view{
		Title:    "Your app permissions",
		CSRF:     csrfToken(m.ensureBrowser(w, r)),
		Subject:  sess.Subject,
		Tenant:   sess.Tenant,
		Consents: rows,
	}
	if r.URL.Query().Get("withdrawn") != "" {
		v.Notice = "The permission was withdrawn and the application's tokens were revoked."
	}
	m.render(w, r, http.StatusOK, "account", v, nil)
}

// postWithdraw withdraws one of the signed-in user's consents and revokes
// the tokens resting on it.
func (m *Manager) postWithdraw(w http.ResponseWriter, r *http.Request) {
	if !m.checkPost(w, r) {
		return
	}
	ctx := r.Context()
	sess, ok := m.accountSession(w, r)
	if !ok {
		return
	}
	id := r.PostForm.Get("consent_id")
	if id == "" || len(id) > consent.MaxIDLen {
		m.noSuchConsent(w, r)
		return
	}
	c, err := m.consents.WithdrawConsent(ctx, sess.Subject, id, m.now())
	if errors.Is(err, store.ErrNotFound) {
		m.noSuchConsent(w, r)
		return
	}
	if err != nil {
		m.fail(w, r, err)
		return
	}
	attrs := map[string]string{
		"consent_id": c.ID, "subject": c.Subject, "tenant": c.Tenant, "client_id": c.ClientID,
		"scope": strings.Join(c.Scopes, " "), "revocation": "ok",
	}
	if err := m.onWithdrawn(ctx, c); err != nil {
		attrs["revocation"] = "failed"
		m.audit(ctx, AuditConsentWithdrawn, attrs)
		m.logger.ErrorContext(ctx, "revoking the tokens of a withdrawn consent failed",
			slog.String("consent_id", c.ID), slog.String("client_id", c.ClientID), slog.String("error", err.Error()))
		m.message(w, r, http.StatusInternalServerError, "Tokens could not be revoked",
			"The permission is withdrawn, but revoking the tokens the application already holds failed. The failure was logged; contact your administrator.",
			nil, PathAccountConsents, "Back to your app permissions")
		return
	}
	m.audit(ctx, AuditConsentWithdrawn, attrs)
	seeOther(w, r, PathAccountConsents+"?withdrawn=1")
}

func (m *Manager) noSuchConsent(w http.ResponseWriter, r *http.Request) {
	m.message(w, r, http.StatusNotFound, "No such permission",
		"That permission does not exist or was already withdrawn.", nil, PathAccountConsents, "Back to your app permissions")
}

// accountSession returns the browser's session, or sends the browser to
// the login page (which returns to the account page) and returns false.
func (m *Manager) accountSession(w http.ResponseWriter, r *http.Request) (*Session, bool) {
	sess, err := m.Session(r.Context(), r)
	if err != nil {
		m.fail(w, r, err)
		return nil, false
	}
	if sess == nil {
		seeOther(w, r, PathLogin+"?next="+nextAccount)
		return nil, false
	}
	return sess, true
}

// postLogout ends the browser's session.
func (m *Manager) postLogout(w http.ResponseWriter, r *http.Request) {
	if !m.checkPost(w, r) {
		return
	}
	ctx := r.Context()
	sess, err := m.Session(ctx, r)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	if sess != nil {
		if m.onSignedOut != nil {
			if err := m.onSignedOut(ctx, *sess); err != nil {
				m.fail(w, r, err)
				return
			}
		}
		if err := m.sessions.DeleteBrowserSession(ctx, sess.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.fail(w, r, err)
			return
		}
		m.audit(ctx, AuditLogout, map[string]string{"subject": sess.Subject})
	}
	m.setCookie(w, m.sessionCookie, "")
	m.message(w, r, http.StatusOK, "You are signed out", "You have signed out of Gatehouse in this browser. Applications you signed in to from it have lost their access and will ask you to sign in again.", nil, PathLogin, "Sign in again")
}

// update stores p's outcome (compare-and-set) or answers the request
// itself and returns false.
func (m *Manager) update(w http.ResponseWriter, r *http.Request, p *Pending) bool {
	v, err := m.interactions.UpdateInteraction(r.Context(), *p)
	if err != nil {
		m.interactionError(w, r, err)
		return false
	}
	p.Version = v
	return true
}

// interactionError answers a request whose interaction is unusable.
func (m *Manager) interactionError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInteractionNotFound), errors.Is(err, store.ErrNotFound):
		m.message(w, r, http.StatusBadRequest, "This sign-in request is no longer valid",
			"It has expired, was already used, or was started in another browser. Go back to the application and start again.", nil, "", "")
	case errors.Is(err, store.ErrConflict):
		m.message(w, r, http.StatusConflict, "This sign-in request changed",
			"It was answered in another window or tab. Go back to the application and start again.", nil, "", "")
	default:
		m.fail(w, r, err)
	}
}

// fail logs err and answers 500 without details.
func (m *Manager) fail(w http.ResponseWriter, r *http.Request, err error) {
	m.logger.ErrorContext(r.Context(), "interaction page failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	m.message(w, r, http.StatusInternalServerError, "Something went wrong",
		"The request could not be completed. Try again in a moment.", nil, "", "")
}

// displayName is the client's display name, or its id.
func (m *Manager) displayName(ctx context.Context, clientID string) string {
	if m.clientName == nil {
		return clientID
	}
	name, err := m.clientName(ctx, clientID)
	if err != nil {
		m.logger.WarnContext(ctx, "client display name unavailable", slog.String("client_id", clientID), slog.String("error", err.Error()))
		return clientID
	}
	if name == "" {
		return clientID
	}
	return name
}

// auditLogin emits a login event with the interaction's client.
func (m *Manager) auditLogin(ctx context.Context, typ string, p *Pending, attrs map[string]string) {
	if p != nil && p.ClientID != "" {
		attrs["client_id"] = p.ClientID
	}
	if attrs["subject"] == "" {
		delete(attrs, "subject")
	}
	m.audit(ctx, typ, attrs)
}

// seeOther redirects (303) to target, always a fixed path on the issuer,
// possibly with an interaction id of our own making (browsersession.ValidID)
// as query: never a URL taken from the request.
func seeOther(w http.ResponseWriter, r *http.Request, target string) {
	http.Redirect(w, r, target, http.StatusSeeOther) //nolint:gosec // G710: target is one of our fixed relative paths, see above.
}

// loginURL is the login page of p.
func loginURL(p Pending) string {
	if p.Next != "" {
		return PathLogin + "?next=" + nextAccount
	}
	return PathLogin + "?interaction=" + url.QueryEscape(p.ID)
}
