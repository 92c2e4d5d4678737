package interaction_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

func TestConsentDeny(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid invoice:read")).mustBeAt(t, interaction.PathConsent)
	res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "deny")).result(t)
	if res.Outcome != "access_denied" || res.State != "state-1" {
		t.Fatalf("answer = %+v, want access_denied", res)
	}
	if list, err := h.consents.ListConsentsBySubject(t.Context(), "bob"); err != nil || len(list) != 0 {
		t.Fatalf("consents after deny = %v, %v; want none", list, err)
	}
	if ev := h.rec.Events(interaction.AuditConsentDenied); len(ev) != 1 || ev[0].Attrs["client_id"] != "invoice-web" {
		t.Fatalf("deny audit = %+v", ev)
	}
	// Denying does not sign out: the next request goes straight to consent.
	b.get(authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
}

func TestConsentAnswerIsRecordedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
	form := formOf(t, consentPage, "decision", "allow")
	first := b.postManual(interaction.PathConsent, form).mustStatus(t, http.StatusSeeOther)
	if loc := first.Header.Get("Location"); !strings.HasPrefix(loc, interaction.ResumePath+"?interaction=") {
		t.Fatalf("Location = %q, want the relative resume path", loc)
	}
	// A double submit records nothing more and also goes on to resume.
	second := b.postManual(interaction.PathConsent, form).mustStatus(t, http.StatusSeeOther)
	if second.Header.Get("Location") != first.Header.Get("Location") {
		t.Fatalf("second submit goes to %q", second.Header.Get("Location"))
	}
	if list, _ := h.consents.ListConsentsBySubject(t.Context(), "bob"); len(list) != 1 {
		t.Fatalf("%d consents after a double submit, want 1", len(list))
	}
	// Resume is single use.
	b.get(first.Header.Get("Location")).result(t)
	if again := b.get(first.Header.Get("Location")); again.Status != http.StatusBadRequest || !strings.Contains(again.Body, "resume") {
		t.Fatalf("second resume = %d %s, want 400", again.Status, again.Body)
	}
}

func TestConsentInvalidDecision(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
	p := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "maybe")).mustStatus(t, http.StatusBadRequest)
	if !strings.Contains(p.Body, "Choose Allow or Deny.") || !strings.Contains(p.Body, `id="consent-form"`) {
		t.Fatalf("page:\n%s", p.Body)
	}
	if list, _ := h.consents.ListConsentsBySubject(t.Context(), "bob"); len(list) != 0 {
		t.Fatal("a consent was stored for an invalid decision")
	}
}

func TestConsentPageNeedsTheSameUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
	// Another user signs in in the same browser (another tab).
	b.signIn("alice", alicePassword, authorizePath("openid", "prompt", "login")).mustBeAt(t, interaction.PathConsent)
	p := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).mustStatus(t, http.StatusConflict)
	if !strings.Contains(p.Body, "started by another user") {
		t.Fatalf("page:\n%s", p.Body)
	}
	for _, u := range []string{"alice", "bob"} {
		if list, _ := h.consents.ListConsentsBySubject(t.Context(), u); len(list) != 0 {
			t.Fatalf("consent stored for %s", u)
		}
	}
}

func TestConsentWithoutSessionGoesToLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
	b.post(interaction.PathLogout, url.Values{"csrf_token": {field(t, csrfRE, consentPage)}}).mustStatus(t, http.StatusOK)
	id := field(t, interactionRE, consentPage)
	p := b.getManual(interaction.PathConsent+"?interaction="+id).mustStatus(t, http.StatusSeeOther)
	if loc := p.Header.Get("Location"); loc != interaction.PathLogin+"?interaction="+id {
		t.Fatalf("Location = %q", loc)
	}
}

func TestInteractionBoundToBrowser(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	victim, thief := h.newBrowser(t), h.newBrowser(t)
	login := victim.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	id := field(t, interactionRE, login)

	for name, path := range map[string]string{
		"login page":   interaction.PathLogin + "?interaction=" + id,
		"MFA page":     interaction.PathMFA + "?interaction=" + id,
		"consent page": interaction.PathConsent + "?interaction=" + id,
		"resume":       interaction.ResumePath + "?interaction=" + id,
	} {
		if p := thief.get(path); p.Status != http.StatusBadRequest {
			t.Errorf("%s in another browser = %d, want 400:\n%s", name, p.Status, p.Body)
		}
	}
	// The thief's own, valid CSRF token with the stolen interaction.
	own := thief.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
	p := thief.post(interaction.PathLogin, formOf(t, own, "interaction", id, "username", "bob", "password", bobPassword))
	if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "no longer valid") {
		t.Fatalf("login with a stolen interaction = %d:\n%s", p.Status, p.Body)
	}
	if thief.signedIn() || len(h.rec.Events(interaction.AuditLoginSucceeded)) != 0 {
		t.Fatal("the stolen interaction logged someone in")
	}
	// The victim's interaction is untouched and still works.
	victim.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
}

func TestInteractionExpires(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	h.clock.Advance(interaction.DefaultInteractionLifetime)
	if p := b.get(interaction.PathLogin + "?interaction=" + field(t, interactionRE, login)); p.Status != http.StatusBadRequest ||
		!strings.Contains(p.Body, "has expired") {
		t.Fatalf("expired login page = %d:\n%s", p.Status, p.Body)
	}
	p := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustStatus(t, http.StatusBadRequest)
	if b.signedIn() || strings.Contains(p.Body, "login-form") {
		t.Fatal("an expired interaction logged in")
	}
	if p := b.get(interaction.ResumePath + "?interaction=" + field(t, interactionRE, login)); p.Status != http.StatusBadRequest {
		t.Fatalf("resuming an expired interaction = %d", p.Status)
	}
}

func TestAccountConsents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := h.clock.Now()
	grant := func(id, subject, client string, at time.Time, scopes ...string) consent.Consent {
		c := consent.Consent{
			ID: id, Subject: subject, Tenant: "acme", ClientID: client, Scopes: consent.NormalizeScopes(scopes),
			GrantedAt: at, ExpiresAt: at.Add(24 * time.Hour),
		}
		if err := h.consents.GrantConsent(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	bobs := grant("bob-invoice", "bob", "invoice-web", now.Add(-time.Hour), "openid", "invoice:read")
	grant("bob-expired", "bob", "support-console", now.Add(-48*time.Hour), "support:read")
	alices := grant("alice-invoice", "alice", "invoice-web", now.Add(-time.Hour), "invoice:approve")

	b := h.newBrowser(t)
	if p := b.getManual(interaction.PathAccountConsents).mustStatus(t, http.StatusSeeOther); p.Header.Get("Location") != "/login?next=account" {
		t.Fatalf("account page without a session redirects to %q", p.Header.Get("Location"))
	}
	login := b.get(interaction.PathAccountConsents).mustBeAt(t, interaction.PathLogin)
	account := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).
		mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathAccountConsents)
	for _, want := range []string{"Invoice Web", "View invoices of your organization.", `value="bob-invoice"`, "Withdraw"} {
		if !strings.Contains(account.Body, want) {
			t.Errorf("account page lacks %s", want)
		}
	}
	for _, unwanted := range []string{"bob-expired", "alice-invoice", "Approve invoices"} {
		if strings.Contains(account.Body, unwanted) {
			t.Errorf("account page shows %s", unwanted)
		}
	}

	// Someone else's consent: nothing changes, nothing is revoked.
	p := b.post(interaction.PathWithdraw, formOf(t, account, "consent_id", alices.ID)).mustStatus(t, http.StatusNotFound)
	if !strings.Contains(p.Body, "does not exist or was already withdrawn") {
		t.Fatalf("page:\n%s", p.Body)
	}
	if c, err := h.consents.GetConsent(t.Context(), alices.ID); err != nil || !c.WithdrawnAt.IsZero() {
		t.Fatalf("alice's consent after bob's attempt: %+v, %v", c, err)
	}
	if len(h.rec.Withdrawn()) != 0 {
		t.Fatal("OnConsentWithdrawn called for someone else's consent")
	}

	after := b.post(interaction.PathWithdraw, formOf(t, account, "consent_id", bobs.ID)).
		mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathAccountConsents)
	if !strings.Contains(after.Body, "The permission was withdrawn") || strings.Contains(after.Body, `value="bob-invoice"`) {
		t.Fatalf("account page after withdrawal:\n%s", after.Body)
	}
	withdrawn := h.rec.Withdrawn()
	if len(withdrawn) != 1 || withdrawn[0].ID != bobs.ID || withdrawn[0].WithdrawnAt.IsZero() {
		t.Fatalf("OnConsentWithdrawn calls = %+v, want one for %s", withdrawn, bobs.ID)
	}
	if _, err := h.m.FindConsent(t.Context(), "bob", "invoice-web", []string{"openid"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindConsent after withdrawal = %v, want ErrNotFound", err)
	}
	if ev := h.rec.Events(interaction.AuditConsentWithdrawn); len(ev) != 1 || ev[0].Attrs["revocation"] != "ok" || ev[0].Attrs["consent_id"] != bobs.ID {
		t.Fatalf("withdraw audit = %+v", ev)
	}

	// A second withdrawal is a no-op error.
	b.post(interaction.PathWithdraw, formOf(t, account, "consent_id", bobs.ID)).mustStatus(t, http.StatusNotFound)
	if len(h.rec.Withdrawn()) != 1 {
		t.Fatal("OnConsentWithdrawn called twice")
	}
}

func TestWithdrawRevocationFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.rec.revokeErr = errors.New("token store down")
	b := h.newBrowser(t)
	consentPage := b.signIn("bob", bobPassword, authorizePath("openid")).mustBeAt(t, interaction.PathConsent)
	res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).result(t)
	account := b.get(interaction.PathAccountConsents)
	p := b.post(interaction.PathWithdraw, formOf(t, account, "consent_id", res.ConsentID)).mustStatus(t, http.StatusInternalServerError)
	if !strings.Contains(p.Body, "revoking the tokens") {
		t.Fatalf("page:\n%s", p.Body)
	}
	if !strings.Contains(h.log.String(), "revoking the tokens of a withdrawn consent failed") {
		t.Fatal("the revocation failure was not logged")
	}
	if ev := h.rec.Events(interaction.AuditConsentWithdrawn); len(ev) != 1 || ev[0].Attrs["revocation"] != "failed" {
		t.Fatalf("withdraw audit = %+v", ev)
	}
	if c, err := h.consents.GetConsent(t.Context(), res.ConsentID); err != nil || c.WithdrawnAt.IsZero() {
		t.Fatalf("consent after the failed revocation = %+v, %v; want withdrawn", c, err)
	}
}

func TestWithdrawWithoutSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
	p := b.postManual(interaction.PathWithdraw, formOf(t, login, "consent_id", "x")).mustStatus(t, http.StatusSeeOther)
	if p.Header.Get("Location") != "/login?next=account" {
		t.Fatalf("Location = %q", p.Header.Get("Location"))
	}
}

func TestBeginRejectsInvalid(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name string
		p    interaction.Pending
	}{
		{name: "no client", p: interaction.Pending{Scopes: []string{"openid"}}},
		{name: "bad scope", p: interaction.Pending{ClientID: "invoice-web", Scopes: []string{"a\"b"}}},
		{name: "account login", p: interaction.Pending{ClientID: "invoice-web", Next: "account"}},
	}
	for _, tc := range tests {
		rec := newRecorder()
		r := newRequest(t, "/oauth2/authorize")
		if err := h.m.Begin(rec, r, tc.p, true); !errors.Is(err, interaction.ErrInvalidPending) {
			t.Errorf("%s: Begin = %v, want ErrInvalidPending", tc.name, err)
		}
		if rec.Code != http.StatusOK || rec.Header().Get("Location") != "" {
			t.Errorf("%s: Begin answered %d %q", tc.name, rec.Code, rec.Header().Get("Location"))
		}
	}
	if n, _ := h.pending.DeleteExpiredInteractions(context.Background(), h.clock.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("%d interactions stored by rejected Begins", n)
	}
}
