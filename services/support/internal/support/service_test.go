package support_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/services/support/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// allowAll permits everything; the PDP's part is tested in app.
type allowAll struct{}

func (allowAll) Authorize(context.Context, support.Check) error { return nil }
func (allowAll) Filter(_ context.Context, c []support.Check) ([]bool, error) {
	out := make([]bool, len(c))
	for i := range out {
		out[i] = true
	}
	return out, nil
}

// fakeIssuer issues tokens that act as asked (unless wrong is set) and
// records revocations.
type fakeIssuer struct {
	now   func() time.Time
	wrong bool // issue a token for another subject

	mu        sync.Mutex
	issued    int
	revoked   []string
	revokeErr error
}

func (f *fakeIssuer) Impersonate(_ context.Context, r support.ImpersonationRequest) (support.IssuedToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issued++
	sub := r.Customer
	if f.wrong {
		sub = "mallory"
	}
	return support.IssuedToken{
		Token: "token-" + string(rune('0'+f.issued)), Subject: sub, Tenant: "acme", ClientID: "support-console",
		JTI: "jti-" + string(rune('0'+f.issued)), Scopes: r.Scopes, Expiry: f.now().Add(r.Lifetime),
		ActorSubject: "sam", ActorClientID: "support-console",
	}, nil
}

func (f *fakeIssuer) Delegate(_ context.Context, _ string, scopes []string, lifetime time.Duration) (support.IssuedToken, error) {
	sub := "bob"
	if f.wrong {
		sub = "mallory"
	}
	return support.IssuedToken{Token: "delegated", Subject: sub, Tenant: "acme", ClientID: "support-export", JTI: "jti-d",
		Scopes: scopes, Expiry: f.now().Add(lifetime), ActorSubject: "support-export", ActorClientID: "support-export"}, nil
}

func (f *fakeIssuer) Revoke(_ context.Context, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revokeErr != nil {
		return f.revokeErr
	}
	f.revoked = append(f.revoked, token)
	return nil
}

func (f *fakeIssuer) revocations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked)
}

// fakeInvoices returns one invoice and records the credentials used.
type fakeInvoices struct {
	mu    sync.Mutex
	creds []support.Credential
}

func (f *fakeInvoices) List(_ context.Context, cred support.Credential, _ int) ([]*invoicev1.Invoice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creds = append(f.creds, cred)
	return []*invoicev1.Invoice{{Id: "inv_1"}}, nil
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var (
	sam = support.Caller{Subject: "sam", Tenant: "acme", Token: "sam-token"}
	bob = support.Caller{Subject: "bob", Tenant: "acme", Token: "bob-token"}
)

// world is a Service over a memory store with one open ticket of bob.
type world struct {
	store  support.Store
	issuer *fakeIssuer
	inv    *fakeInvoices
	clock  *clock
	ticket support.Ticket
}

func newWorld(t *testing.T) *world {
	t.Helper()
	c := &clock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	w := &world{store: memory.New(), issuer: &fakeIssuer{now: c.Now}, inv: &fakeInvoices{}, clock: c}
	tk, err := w.service().OpenTicket(t.Context(), bob, "Help", support.AccessRead)
	if err != nil {
		t.Fatal(err)
	}
	w.ticket = tk
	return w
}

// service returns a new Service over the world's store: a new process,
// holding no token.
func (w *world) service() *support.Service {
	return w.withStore(w.store)
}

func (w *world) withStore(store support.Store) *support.Service {
	return support.NewService(store, allowAll{}, w.issuer, w.inv, slog.New(slog.DiscardHandler), support.WithClock(w.clock.Now))
}

func TestSessionTokensLiveInMemoryOnly(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.service()
	sess, token, err := before.StartImpersonation(t.Context(), sam, w.ticket.ID, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "token-1" || sess.JTI != "jti-1" || !sess.ExpireTime.Equal(w.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("session %+v, token %q", sess, token)
	}
	if _, _, err := before.CustomerOverview(t.Context(), sam, sess.ID); err != nil {
		t.Fatal(err)
	}
	if got := w.inv.creds; len(got) != 1 || got[0] != (support.Credential{Token: "token-1", Subject: "bob", Tenant: "acme", ClientID: "support-console"}) {
		t.Fatalf("invoice calls with %+v, want the impersonation token and its identity", got)
	}

	after := w.service() // a restart
	_, _, err = after.CustomerOverview(t.Context(), sam, sess.ID)
	if !errors.Is(err, support.ErrTokenNotHeld) || !errors.Is(err, support.ErrNotImpersonating) {
		t.Fatalf("overview after a restart = %v, want ErrTokenNotHeld", err)
	}
	ended, err := after.EndImpersonation(t.Context(), sam, sess.ID)
	if err != nil || !ended.EndTime.Equal(w.clock.Now()) {
		t.Fatalf("end after a restart = %+v, %v; want the session ended now", ended, err)
	}
	if got := w.issuer.revocations(); len(got) != 0 {
		t.Fatalf("revoked %v without holding the token", got)
	}
	// The first process sees the row ended too.
	if _, _, err := before.CustomerOverview(t.Context(), sam, sess.ID); !errors.Is(err, support.ErrSessionOver) {
		t.Fatalf("overview of an ended session = %v, want ErrSessionOver", err)
	}
}

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.service()
	sess, _, err := svc.StartImpersonation(t.Context(), sam, w.ticket.ID, 60, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.clock.advance(59 * time.Second)
	if _, _, err := svc.CustomerOverview(t.Context(), sam, sess.ID); err != nil {
		t.Fatalf("overview before expiry: %v", err)
	}
	w.clock.advance(time.Second)
	if _, _, err := svc.CustomerOverview(t.Context(), sam, sess.ID); !errors.Is(err, support.ErrSessionOver) {
		t.Fatalf("overview at expiry = %v, want ErrSessionOver", err)
	}
	if _, err := svc.EndImpersonation(t.Context(), sam, sess.ID); !errors.Is(err, support.ErrSessionOver) {
		t.Fatalf("end after expiry = %v, want ErrSessionOver", err)
	}
	stored, err := w.store.GetSession(t.Context(), "acme", sess.ID)
	if err != nil || !stored.EndTime.IsZero() {
		t.Fatalf("stored %+v (%v): an expired session is never marked ended", stored, err)
	}
}

// closingStore closes the ticket just before a session is stored, as a
// CloseTicket racing StartImpersonation would.
type closingStore struct{ support.Store }

func (s closingStore) CreateSession(ctx context.Context, sess support.Session) error {
	if _, _, err := s.CloseTicket(ctx, sess.Tenant, sess.TicketID, "bob", sess.StartTime); err != nil {
		return err
	}
	return s.Store.CreateSession(ctx, sess)
}

func TestStartRacingCloseRevokesTheNewToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.withStore(closingStore{w.store})
	_, _, err := svc.StartImpersonation(t.Context(), sam, w.ticket.ID, 0, nil)
	if !errors.Is(err, support.ErrTicketClosed) {
		t.Fatalf("StartImpersonation = %v, want ErrTicketClosed", err)
	}
	if got := w.issuer.revocations(); !slices.Equal(got, []string{"token-1"}) {
		t.Fatalf("revoked %v, want the token just issued", got)
	}
}

func TestIssuedTokensAreChecked(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.issuer.wrong = true
	svc := w.service()
	if _, _, err := svc.StartImpersonation(t.Context(), sam, w.ticket.ID, 0, nil); !errors.Is(err, support.ErrIssuerUnavailable) {
		t.Fatalf("StartImpersonation with a token for someone else = %v, want ErrIssuerUnavailable", err)
	}
	if got := w.issuer.revocations(); !slices.Equal(got, []string{"token-1"}) {
		t.Fatalf("revoked %v, want the wrong token", got)
	}
	if _, err := svc.ExportInvoices(t.Context(), bob); !errors.Is(err, support.ErrIssuerUnavailable) {
		t.Fatalf("ExportInvoices with a token for someone else = %v, want ErrIssuerUnavailable", err)
	}
	if len(w.inv.creds) != 0 {
		t.Fatal("the invoice service was called with a token for someone else")
	}
}

func TestCloseTicketRevokesHeldTokens(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.service()
	for range 2 {
		if _, _, err := svc.StartImpersonation(t.Context(), sam, w.ticket.ID, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	w.issuer.revokeErr = errors.New("issuer down")
	closed, err := svc.CloseTicket(t.Context(), bob, w.ticket.ID)
	if err != nil || closed.Status != support.StatusClosed {
		t.Fatalf("CloseTicket with the issuer down = %+v, %v; want the ticket closed anyway", closed, err)
	}

	w2 := newWorld(t)
	svc2 := w2.service()
	for range 2 {
		if _, _, err := svc2.StartImpersonation(t.Context(), sam, w2.ticket.ID, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc2.CloseTicket(t.Context(), bob, w2.ticket.ID); err != nil {
		t.Fatal(err)
	}
	got := w2.issuer.revocations()
	slices.Sort(got)
	if !slices.Equal(got, []string{"token-1", "token-2"}) {
		t.Fatalf("revoked %v, want both sessions' tokens", got)
	}
}

func TestEndRevokesBeforeEnding(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.service()
	sess, _, err := svc.StartImpersonation(t.Context(), sam, w.ticket.ID, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.issuer.revokeErr = errors.New("issuer down")
	if _, err := svc.EndImpersonation(t.Context(), sam, sess.ID); err == nil {
		t.Fatal("EndImpersonation succeeded without revoking")
	}
	if _, _, err := svc.CustomerOverview(t.Context(), sam, sess.ID); err != nil {
		t.Fatalf("the session changed after a failed end: %v", err)
	}
	w.issuer.revokeErr = nil
	if _, err := svc.EndImpersonation(t.Context(), sam, sess.ID); err != nil {
		t.Fatal(err)
	}
	if got := w.issuer.revocations(); !slices.Equal(got, []string{"token-1"}) {
		t.Fatalf("revoked %v", got)
	}
}

func TestNoCaller(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.service()
	for _, c := range []support.Caller{{}, {Subject: "sam", Tenant: "acme"}, {Subject: "sam", Token: "t"}} {
		if _, err := svc.OpenTicket(t.Context(), c, "Help", ""); !errors.Is(err, support.ErrNoCaller) {
			t.Errorf("OpenTicket as %+v = %v, want ErrNoCaller", c, err)
		}
		if _, err := svc.ListTickets(t.Context(), c, 0, "", ""); !errors.Is(err, support.ErrNoCaller) {
			t.Errorf("ListTickets as %+v = %v, want ErrNoCaller", c, err)
		}
		if _, err := svc.ExportInvoices(t.Context(), c); !errors.Is(err, support.ErrNoCaller) {
			t.Errorf("ExportInvoices as %+v = %v, want ErrNoCaller", c, err)
		}
	}
}

// TestDefaultScopesReachOnlyAsFarAsTheAgent: without scopes asked for, a
// session gets what the ticket grants as far as the agent's own token
// reaches, so a write ticket still gives a console that may only read a
// working read-only session.
func TestDefaultScopesReachOnlyAsFarAsTheAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		access support.Access
		agent  []string
		want   []string
	}{
		{name: "read ticket", access: support.AccessRead, agent: []string{"support:impersonate", "invoice:read"}, want: []string{"invoice:read"}},
		{name: "write ticket, reading agent", access: support.AccessWrite, agent: []string{"support:impersonate", "invoice:read"}, want: []string{"invoice:read"}},
		{name: "write ticket, writing agent", access: support.AccessWrite, agent: []string{"invoice:read", "invoice:write"}, want: []string{"invoice:read", "invoice:write"}},
		{name: "agent without invoice scopes: the issuer refuses what the ticket grants", access: support.AccessRead, agent: []string{"support:impersonate"}, want: []string{"invoice:read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			tk, err := w.service().OpenTicket(t.Context(), bob, "Help", tc.access)
			if err != nil {
				t.Fatal(err)
			}
			agent := sam
			agent.Scopes = tc.agent
			sess, _, err := w.service().StartImpersonation(t.Context(), agent, tk.ID, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sess.Scopes, tc.want) {
				t.Errorf("session scopes %v, want %v", sess.Scopes, tc.want)
			}
		})
	}
}
