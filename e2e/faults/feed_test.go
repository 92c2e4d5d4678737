package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/e2e/stack"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// The probes and bounds of TestRevocationFeedCutFailsSensitiveRoutesClosed.
const (
	// feedProbeEvery is how often the probes call the gateway.
	feedProbeEvery = 100 * time.Millisecond
	// feedBreakSlack is how long after Postgres has exited the gateway may
	// still hear from the feed: the issuer ends its streams as soon as its
	// log listener's connection is terminated, which a clean stop of
	// Postgres does first, and a heartbeat could just precede that.
	feedBreakSlack = time.Second
	// feedStaleProbes is how many sensitive probes must be sent once the
	// feed is certainly stale, before the feed is restored.
	feedStaleProbes = 5
	// feedLowRecovery is how soon after Postgres answers SQL again the low
	// route must work (the invoice service's pool dials on demand, like the
	// issuer's: see pgRecoveryBound).
	feedLowRecovery = 2 * pgRecoveryBound
	// feedCallBound bounds one call to the gateway.
	feedCallBound = 5 * time.Second
)

// TestRevocationFeedCutFailsSensitiveRoutesClosed cuts the gateway off from
// the issuer's revocation feed while the issuer stays up for everyone
// else: the issuer stops accepting the gateway's subscription (its client
// loses the revocations:read scope), and a Postgres restart ends the
// stream the gateway has (the issuer ends every stream when it loses its
// database). The gateway keeps subscribing again, and is refused, until
// the scope is given back.
//
// Meanwhile probes call, every feedProbeEvery, a sensitive route
// (ApproveInvoice, as billing-bot: past the staleness check the PDP
// refuses it for a missing scope, so the answer tells which check stopped
// it and nothing changes) and a low one (ListInvoices, as reporting-job).
// Asserted, with revocationMaxStaleness S:
//
//   - bounded staleness: the feed was last heard at the earliest when a
//     canary revocation was sent and at the latest feedBreakSlack after
//     Postgres exited; no sensitive call fails before the first plus S,
//     and every one sent after the second plus S fails closed with 503
//     revocation_feed_stale; alice, who may approve, is refused too, and
//     the invoice stays a draft;
//   - the low route keeps working through the cut (once the services are
//     back on Postgres);
//   - nothing is lost: a token revoked during the cut is still accepted on
//     the low route while the cut lasts (what the staleness limit allows),
//     and refused once the feed is back, the gateway having resumed from
//     its cursor (its log says so), not replayed the whole log;
//   - the gateway subscribes nowhere during the cut, and once the scope is
//     back, sensitive routes work again (alice approves the invoice) and
//     the revoked token is refused within the feed's backoff
//     (feedResumeBound).
//
// Why not simply pause or stop the issuer: pausing it freezes its JWKS too,
// and a gateway whose key set is older than -jwks-max-age (2s in this
// package) then waits for each refetch to time out, 5s, so neither route
// could be probed in time; stopping it gives it a new published port,
// which would break the tests that run after this one (gh.IssuerURL). And
// with the issuer down nothing could be revoked during the cut.
func TestRevocationFeedCutFailsSensitiveRoutesClosed(t *testing.T) {
	// About 30s: S, then the gateway's backoff when its client gets the
	// scope back (5 to 15s in practice, at most feedResumeBound).
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	issuer, gateway := issuerHTTP(), gatewayHTTP()
	api := invoicev1connect.NewInvoiceServiceClient(gateway, gh.GatewayURL)

	// Tokens and invoices, before the cut.
	alice, err := signInWeb(ctx, demoUser{"alice", "alice-demo-password", "JBSWY3DPEHPK3PXPALICE234"}, "openid", "invoice:read", "invoice:approve")
	if err != nil {
		t.Fatalf("alice's sign-in: %v", err)
	}
	bot, reader, doomed := mustToken(ctx, t, issuer, billingBot), mustToken(ctx, t, issuer, reportingJob), mustToken(ctx, t, issuer, billingBot)
	doomedClaims, err := claimsOf(doomed)
	if err != nil {
		t.Fatal(err)
	}
	var drafts []string
	for i := range 2 {
		created, err := api.CreateInvoice(ctx, withBearer(&invoicev1.CreateInvoiceRequest{
			Customer: fmt.Sprintf("Feed Cut %d", i), AmountCents: 1500, Currency: "EUR"}, bot))
		if err != nil {
			t.Fatalf("create an invoice: %v", err)
		}
		drafts = append(drafts, created.Msg.GetInvoice().GetId())
	}
	if _, err := api.ApproveInvoice(ctx, withBearer(&invoicev1.ApproveInvoiceRequest{Id: drafts[0]}, alice.AccessToken)); err != nil {
		t.Fatalf("alice approving before the cut: %v", err)
	}

	// The canary: the feed flows, and the gateway has heard from it since
	// canarySent.
	canarySent, canaryJTI, err := awaitFeedFlowing(ctx, issuer, gateway)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := gh.DatabaseURL(ctx, "issuer")
	if err != nil {
		t.Fatal(err)
	}
	canaryCursor, err := revocationCursor(ctx, dsn, canaryJTI)
	if err != nil {
		t.Fatal(err)
	}

	// The cut. Whatever happens, the stack is left with Postgres up and
	// the gateway's client as it was.
	scopes, err := gatewayScopes(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	pgDown, cut := false, true
	t.Cleanup(func() {
		ctx := context.WithoutCancel(ctx)
		if pgDown {
			if err := gh.StartService(ctx, "postgres"); err != nil {
				t.Errorf("restore postgres: %v", err)
				return
			}
		}
		if cut {
			dsn, err := gh.DatabaseURL(ctx, "issuer")
			if err == nil {
				err = setGatewayScopes(ctx, dsn, scopes)
			}
			if err != nil {
				t.Errorf("give the gateway's client its scopes back: %v", err)
			}
		}
	})
	if err := setGatewayScopes(ctx, dsn, without(scopes, []string{"revocations:read"})); err != nil {
		t.Fatal(err)
	}
	probes := startFeedProbes(ctx, api, bot, reader, drafts[1])
	defer probes.halt()
	var tl feedTimeline
	tl.canary = canarySent
	phaseErr := func() error {
		pgDown = true
		tl.stop = time.Now()
		if err := gh.Stop(ctx, "postgres"); err != nil {
			return err
		}
		tl.stopped = time.Now()
		if err := gh.StartService(ctx, "postgres"); err != nil {
			return err
		}
		tl.up = time.Now()
		pgDown = false
		if dsn, err = gh.DatabaseURL(ctx, "issuer"); err != nil {
			return err
		}

		// A revocation during the cut; the gateway cannot know of it.
		revokeCtx, cancelRevoke := context.WithTimeout(ctx, pgRecoveryBound)
		defer cancelRevoke()
		revoked, err := retryUntilOK(revokeCtx, func() oauthAnswer { return revokeToken(revokeCtx, issuer, billingBot, doomed) })
		if err != nil {
			return fmt.Errorf("revoking a token during the cut: %w", err)
		}
		tl.revoked = revoked.received
		if err := pollUntil(ctx, "the low route after the restart", func() bool { return !probes.firstLowOK(tl.up).IsZero() }, feedLowRecovery); err != nil {
			return err
		}
		if _, err := api.ListInvoices(ctx, withBearer(&invoicev1.ListInvoicesRequest{}, doomed)); err != nil {
			return fmt.Errorf("the token revoked during the cut, on the low route before the feed is stale: %w, want it accepted: the gateway cannot know yet", err)
		}

		// Stale: wait until every sensitive probe must fail closed.
		certain := tl.stopped.Add(revocationMaxStaleness + feedBreakSlack)
		if err := pollUntil(ctx, "the feed certainly stale", func() bool { return probes.sensitiveSentSince(certain) >= feedStaleProbes },
			time.Until(certain)+feedStaleProbes*feedProbeEvery+10*time.Second); err != nil {
			return err
		}
		_, err = api.ApproveInvoice(ctx, withBearer(&invoicev1.ApproveInvoiceRequest{Id: drafts[1]}, alice.AccessToken))
		if !isRefusal(err, connect.CodeUnavailable, reason.RevocationFeedStale) {
			return fmt.Errorf("alice approving on a stale feed: %s, want unavailable %s", describeCall(err), reason.RevocationFeedStale)
		}
		got, err := api.GetInvoice(ctx, withBearer(&invoicev1.GetInvoiceRequest{Id: drafts[1]}, reader))
		if err != nil {
			return fmt.Errorf("reading the invoice alice could not approve: %w", err)
		}
		if s := got.Msg.GetInvoice().GetStatus(); s != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT {
			return fmt.Errorf("the invoice alice was refused to approve on a stale feed is %s, want a draft", s)
		}
		if _, err := api.ListInvoices(ctx, withBearer(&invoicev1.ListInvoicesRequest{}, doomed)); err != nil {
			return fmt.Errorf("the token revoked during the cut, on the low route while the feed is stale: %w, want it accepted (low routes use what the set holds)", err)
		}

		// Restore, and wait for the gateway to resume.
		tl.restore = time.Now()
		if err := setGatewayScopes(ctx, dsn, scopes); err != nil {
			return err
		}
		cut = false
		resumeCtx, cancelResume := context.WithTimeout(ctx, feedResumeBound(tl.restore.Sub(tl.stop))+feedCallBound)
		defer cancelResume()
		if tl.doomedRefused, err = awaitRefused(resumeCtx, gateway, doomed); err != nil {
			return fmt.Errorf("the token revoked during the cut, once the feed is back: %w", err)
		}
		if err := pollUntil(resumeCtx, "a sensitive call past the staleness check", func() bool { return !probes.firstPass(tl.restore).IsZero() }); err != nil {
			return err
		}
		tl.back = probes.firstPass(tl.restore)
		if _, err := api.ApproveInvoice(ctx, withBearer(&invoicev1.ApproveInvoiceRequest{Id: drafts[1]}, alice.AccessToken)); err != nil {
			return fmt.Errorf("alice approving once the feed is back: %w", err)
		}
		// A few more probes after the feed is back.
		return pollUntil(ctx, "probes after the feed is back", func() bool { return probes.sensitiveSentSince(tl.back) >= feedStaleProbes })
	}()
	probes.halt()
	sensitive, low := probes.results()
	tl.report(t, sensitive, low)
	if phaseErr != nil {
		t.Fatal(phaseErr)
	}
	tl.checkStaleness(t, sensitive)
	tl.checkLowRoute(t, low)
	if bound := feedResumeBound(tl.restore.Sub(tl.stop)); tl.back.Sub(tl.restore) > bound || tl.doomedRefused.Sub(tl.restore) > bound {
		t.Errorf("the feed was back %s after the gateway's client got its scope back (the revoked token refused after %s), want at most %s: the feed's backoff allows no more",
			tl.back.Sub(tl.restore).Round(time.Millisecond), tl.doomedRefused.Sub(tl.restore).Round(time.Millisecond), bound.Round(time.Millisecond))
	}
	doomedCursor, err := revocationCursor(ctx, dsn, doomedClaims.JTI)
	if err != nil {
		t.Fatal(err)
	}
	checkResumed(ctx, t, tl, canaryCursor, doomedCursor)
}

// feedTimeline is when each step of the cut happened.
type feedTimeline struct {
	// canary: the canary's revocation was sent (the feed was heard after).
	// stop, stopped, up: Postgres's stop was asked for, it had exited, it
	// answered SQL again.
	canary, stop, stopped, up time.Time
	// revoked: the revocation during the cut was answered 200.
	revoked time.Time
	// restore: the gateway's client got its scope back; back: the first
	// sensitive probe after it passed the staleness check; doomedRefused:
	// the gateway first refused the token revoked during the cut.
	restore, back, doomedRefused time.Time
}

// report logs what the probes saw.
func (tl feedTimeline) report(t *testing.T, sensitive, low []gatewayCall) {
	t.Helper()
	firstStale, lastPass := time.Time{}, time.Time{}
	for _, c := range sensitive {
		switch {
		case c.stale() && firstStale.IsZero():
			firstStale = c.received
		case c.passed() && firstStale.IsZero():
			lastPass = c.received
		}
	}
	lowFailed := 0
	for _, c := range low {
		if c.err != nil {
			lowFailed++
		}
	}
	t.Logf("%d sensitive and %d low-route probes; %d of the latter failed", len(sensitive), len(low), lowFailed)
	if !firstStale.IsZero() && !tl.stop.IsZero() {
		t.Logf("the first 503 %s came %s after Postgres's stop began and %s after the canary was revoked (limit %s); the last call through before it %s after the canary",
			reason.RevocationFeedStale, firstStale.Sub(tl.stop).Round(time.Millisecond), firstStale.Sub(tl.canary).Round(time.Millisecond),
			revocationMaxStaleness, lastPass.Sub(tl.canary).Round(time.Millisecond))
	}
	if !tl.doomedRefused.IsZero() {
		t.Logf("the feed came back %s after the gateway's client got its scope back (cut for %s); the token revoked during the cut was accepted for %s after its revocation",
			tl.back.Sub(tl.restore).Round(time.Millisecond), tl.restore.Sub(tl.stop).Round(time.Millisecond), tl.doomedRefused.Sub(tl.revoked).Round(time.Millisecond))
	}
}

// checkStaleness checks every sensitive probe: past the staleness check or
// failed closed, never before the limit, always once it has passed, and
// never again once the feed is back.
func (tl feedTimeline) checkStaleness(t *testing.T, calls []gatewayCall) {
	t.Helper()
	earliest := tl.canary.Add(revocationMaxStaleness)
	certain := tl.stopped.Add(revocationMaxStaleness + feedBreakSlack)
	var bad []string
	certainProbes := 0
	for _, c := range calls {
		switch {
		case !c.passed() && !c.stale():
			bad = append(bad, fmt.Sprintf("sent %s: %s, want permission_denied %s or unavailable %s", tl.when(c.sent), describeCall(c.err), reason.InsufficientScope, reason.RevocationFeedStale))
		case c.stale() && !c.received.After(earliest):
			bad = append(bad, fmt.Sprintf("failed closed %s after the canary's revocation, before the feed can have been silent for %s", c.received.Sub(tl.canary).Round(time.Millisecond), revocationMaxStaleness))
		case c.sent.After(certain) && c.received.Before(tl.restore):
			certainProbes++
			if !c.stale() {
				bad = append(bad, fmt.Sprintf("went past the staleness check %s after Postgres exited, with the feed cut since (limit %s)", c.sent.Sub(tl.stopped).Round(time.Millisecond), revocationMaxStaleness))
			}
		case c.sent.After(tl.back) && !c.passed():
			bad = append(bad, fmt.Sprintf("failed closed %s after the feed was back", c.sent.Sub(tl.back).Round(time.Millisecond)))
		}
	}
	if certainProbes < feedStaleProbes {
		t.Errorf("%d sensitive probes while the feed was certainly stale, want at least %d", certainProbes, feedStaleProbes)
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d sensitive probes went wrong; the first ones:", len(bad), len(calls))
		for _, b := range bad[:min(len(bad), 5)] {
			t.Errorf("  %s", b)
		}
	}
}

// checkLowRoute: the low route works before the cut and, from its first
// success after Postgres is back, throughout.
func (tl feedTimeline) checkLowRoute(t *testing.T, calls []gatewayCall) {
	t.Helper()
	var recovered time.Time
	for _, c := range calls {
		if c.err == nil && c.sent.After(tl.up) {
			recovered = c.sent
			break
		}
	}
	var bad []string
	for _, c := range calls {
		if c.err != nil && (c.received.Before(tl.stop) || !c.sent.Before(recovered)) {
			bad = append(bad, fmt.Sprintf("sent %s: %s", tl.when(c.sent), describeCall(c.err)))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d low-route probes failed outside Postgres's restart; the first ones:", len(bad))
		for _, b := range bad[:min(len(bad), 5)] {
			t.Errorf("  %s", b)
		}
	}
}

func (tl feedTimeline) when(at time.Time) string {
	switch {
	case at.Before(tl.stop):
		return "before the cut"
	case tl.restore.IsZero() || at.Before(tl.restore):
		return fmt.Sprintf("%s into the cut", at.Sub(tl.stop).Round(time.Millisecond))
	default:
		return fmt.Sprintf("%s after the restore", at.Sub(tl.restore).Round(time.Millisecond))
	}
}

// checkResumed reads the gateway's log: no subscription of the feed during
// the cut, and the one after it resumed from the gateway's cursor (at or
// after the canary's event), so that the event of the token revoked during
// the cut came from the issuer's backlog.
func checkResumed(ctx context.Context, t *testing.T, tl feedTimeline, canaryCursor, doomedCursor int64) {
	t.Helper()
	subs, err := feedSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var after []feedSubscription
	for _, s := range subs {
		switch {
		case s.Time.After(tl.stopped) && s.Time.Before(tl.restore):
			t.Errorf("the gateway subscribed to the feed %s into the cut, with its client refused", s.Time.Sub(tl.stop).Round(time.Millisecond))
		case s.Time.After(tl.restore):
			after = append(after, s)
		}
	}
	if len(after) == 0 {
		t.Fatal(`the gateway logged no "revocation feed subscribed" after the restore`)
	}
	if c := after[0].AfterCursor; c < canaryCursor || c >= doomedCursor {
		t.Errorf("the gateway resubscribed after cursor %d, want its position: at least the canary's %d and before the revocation during the cut, %d", c, canaryCursor, doomedCursor)
	}
}

// feedSubscription is a "revocation feed subscribed" line of the
// gateway's log (libs/revocation/feedclient).
type feedSubscription struct {
	Time        time.Time `json:"time"`
	Msg         string    `json:"msg"`
	AfterCursor int64     `json:"after_cursor"`
}

func feedSubscriptions(ctx context.Context) ([]feedSubscription, error) {
	logs, err := gh.ServiceLogs(ctx, "gateway")
	if err != nil {
		return nil, err
	}
	var subs []feedSubscription
	lines := bufio.NewScanner(bytes.NewReader(logs))
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for lines.Scan() {
		var s feedSubscription
		if json.Unmarshal(lines.Bytes(), &s) == nil && s.Msg == "revocation feed subscribed" {
			subs = append(subs, s)
		}
	}
	return subs, lines.Err()
}

// gatewayCall is one probe: err is nil for a success.
type gatewayCall struct {
	sent, received time.Time
	err            error
}

// passed: the call went past the staleness check to the PDP, which refused
// the scope.
func (c gatewayCall) passed() bool {
	return isRefusal(c.err, connect.CodePermissionDenied, reason.InsufficientScope)
}

// stale: the gateway failed closed for want of a current revocation feed.
func (c gatewayCall) stale() bool {
	return isRefusal(c.err, connect.CodeUnavailable, reason.RevocationFeedStale)
}

// feedProbes calls the gateway every feedProbeEvery until halted.
type feedProbes struct {
	halt      func()
	mu        sync.Mutex
	sensitive []gatewayCall
	low       []gatewayCall
}

// startFeedProbes starts the probes: ApproveInvoice of draft with
// billing-bot's token bot, and ListInvoices with reporting-job's reader.
func startFeedProbes(ctx context.Context, api invoicev1connect.InvoiceServiceClient, bot, reader, draft string) *feedProbes {
	p := &feedProbes{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(feedProbeEvery)
		defer tick.Stop()
		for {
			s := probe(ctx, func(ctx context.Context) error {
				_, err := api.ApproveInvoice(ctx, withBearer(&invoicev1.ApproveInvoiceRequest{Id: draft}, bot))
				return err
			})
			l := probe(ctx, func(ctx context.Context) error {
				_, err := api.ListInvoices(ctx, withBearer(&invoicev1.ListInvoicesRequest{}, reader))
				return err
			})
			p.mu.Lock()
			p.sensitive, p.low = append(p.sensitive, s), append(p.low, l)
			p.mu.Unlock()
			if !nextTick(ctx, stop, tick) {
				return
			}
		}
	})
	p.halt = sync.OnceFunc(func() { close(stop); wg.Wait() })
	return p
}

func probe(ctx context.Context, call func(context.Context) error) gatewayCall {
	ctx, cancel := context.WithTimeout(ctx, feedCallBound)
	defer cancel()
	c := gatewayCall{sent: time.Now()}
	c.err = call(ctx)
	c.received = time.Now()
	return c
}

func (p *feedProbes) sensitiveSentSince(at time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.sensitive {
		if c.sent.After(at) {
			n++
		}
	}
	return n
}

// firstPass is when the first sensitive probe sent after at that went past
// the staleness check was answered; zero if none.
func (p *feedProbes) firstPass(at time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.sensitive {
		if c.sent.After(at) && c.passed() {
			return c.received
		}
	}
	return time.Time{}
}

// firstLowOK is when the first low-route probe sent after at succeeded.
func (p *feedProbes) firstLowOK(at time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.low {
		if c.sent.After(at) && c.err == nil {
			return c.received
		}
	}
	return time.Time{}
}

func (p *feedProbes) results() (sensitive, low []gatewayCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]gatewayCall(nil), p.sensitive...), append([]gatewayCall(nil), p.low...)
}

// awaitFeedFlowing revokes a fresh token of billing-bot and waits until the
// gateway refuses it: the feed flows. A test before may have cut it, so
// that may take as long as the feed's longest backoff. It returns when the
// revocation was sent (the gateway heard from the feed after that) and the
// token's jti.
func awaitFeedFlowing(ctx context.Context, issuer, gateway *http.Client) (time.Time, string, error) {
	tok := clientToken(ctx, issuer, billingBot)
	if !tok.ok() {
		return time.Time{}, "", fmt.Errorf("canary token: %s", tok.describe())
	}
	claims, err := claimsOf(tok.body.AccessToken)
	if err != nil {
		return time.Time{}, "", err
	}
	revoked := revokeToken(ctx, issuer, billingBot, tok.body.AccessToken)
	if !revoked.ok() {
		return time.Time{}, "", fmt.Errorf("revoking the canary: %s", revoked.describe())
	}
	flowCtx, cancel := context.WithTimeout(ctx, feedResumeBound(time.Minute))
	defer cancel()
	if _, err := awaitRefused(flowCtx, gateway, tok.body.AccessToken); err != nil {
		return time.Time{}, "", fmt.Errorf("the revocation feed does not flow: a revoked canary %w", err)
	}
	return revoked.sent, claims.JTI, nil
}

// awaitRefused calls ListInvoices with tok until the gateway refuses it as
// revoked, and returns when that answer came.
func awaitRefused(ctx context.Context, gateway *http.Client, tok string) (time.Time, error) {
	api := invoicev1connect.NewInvoiceServiceClient(gateway, gh.GatewayURL)
	var last error
	for {
		_, err := api.ListInvoices(ctx, withBearer(&invoicev1.ListInvoicesRequest{}, tok))
		if isRefusal(err, connect.CodeUnauthenticated, reason.TokenRevoked) {
			return time.Now(), nil
		}
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			return time.Time{}, fmt.Errorf("refused for another reason: %s", describeCall(err))
		}
		last = err
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("still not refused as revoked (last answer: %s): %w", describeCall(last), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// gatewayScopes reads the scopes of the gateway's client at the issuer.
func gatewayScopes(ctx context.Context, dsn string) ([]string, error) {
	return gatewayClientRow(ctx, dsn, `SELECT scopes FROM clients WHERE id = 'gateway'`)
}

// setGatewayScopes replaces the scopes of the gateway's client at the
// issuer, which reads a client from its database at every authentication.
func setGatewayScopes(ctx context.Context, dsn string, scopes []string) error {
	_, err := gatewayClientRow(ctx, dsn, `UPDATE clients SET scopes = $1 WHERE id = 'gateway' RETURNING scopes`, append([]string{}, scopes...))
	return err
}

func gatewayClientRow(ctx context.Context, dsn, sql string, args ...any) ([]string, error) {
	var scopes []string
	err := stack.WithConn(ctx, dsn, func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, sql, args...).Scan(&scopes); err != nil {
			return fmt.Errorf("the gateway's client: %w", err)
		}
		return nil
	})
	return scopes, err
}

// revocationCursor is the cursor of the revocation event that lists jti.
func revocationCursor(ctx context.Context, dsn, jti string) (int64, error) {
	var cursor int64
	err := stack.WithConn(ctx, dsn, func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT cursor FROM revocation_events WHERE $1 = ANY(jtis)`, jti).Scan(&cursor); err != nil {
			return fmt.Errorf("the revocation event of jti %s: %w", jti, err)
		}
		return nil
	})
	return cursor, err
}

// mustToken gets a client_credentials token of c.
func mustToken(ctx context.Context, t *testing.T, issuer *http.Client, c confidentialClient) string {
	t.Helper()
	a := clientToken(ctx, issuer, c)
	if !a.ok() {
		t.Fatalf("token for %s: %s", c.id, a.describe())
	}
	return a.body.AccessToken
}

// withBearer is a request for msg with tok as its bearer token.
func withBearer[T any](msg *T, tok string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+tok)
	return req
}

// isRefusal: err is a Connect error of code whose ErrorInfo names reasonCode.
func isRefusal(err error, code connect.Code, reasonCode string) bool {
	got, r := codeAndReason(err)
	return err != nil && got == code && r == reasonCode
}

func codeAndReason(err error) (connect.Code, string) {
	ce := new(connect.Error)
	if !errors.As(err, &ce) {
		return connect.CodeOf(err), ""
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return ce.Code(), info.GetReason()
			}
		}
	}
	return ce.Code(), ""
}

// describeCall says how a gateway call ended.
func describeCall(err error) string {
	if err == nil {
		return "success"
	}
	code, r := codeAndReason(err)
	if r == "" {
		return err.Error()
	}
	return fmt.Sprintf("%s %s", code, r)
}

// gatewayHTTP is a client for the gateway, never through a proxy.
func gatewayHTTP() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	return &http.Client{Transport: transport, Timeout: 2 * feedCallBound}
}
