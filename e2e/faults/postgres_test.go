package faults

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/e2e/stack"
)

// The load and the bounds of TestPostgresRestartUnderIssuerLoad.
const (
	// pgTokenWorkers ask for client_credentials tokens; one more worker
	// revokes tokens (RFC 7009) as fast as it gets them.
	pgTokenWorkers = 3
	// pgWarmUp and pgAfter are how many tokens the workers must get before
	// Postgres stops and after it is back.
	pgWarmUp = 30
	pgAfter  = 30
	// pgDowntime is how long Postgres stays stopped: a restart takes
	// seconds (a new host, crash recovery), long enough for the backoffs
	// of the issuer's audit recorder and of the gateway's feed subscriber
	// to grow past their first steps.
	pgDowntime = 3 * time.Second
	// pgAnswerBound is the longest any answer of the issuer may take. With
	// Postgres away a query fails once its connection attempt does: at
	// once when a restarting Postgres refuses it or the name "postgres"
	// resolves to nothing, but Docker's DNS sometimes passes the lookup of
	// a stopped container's name on to the host's resolver, whose answer
	// may take 5s (seen here), as long as the issuer's connect timeout
	// (libs/postgres). Two more seconds for the request's own work on a
	// loaded machine; an answer slower than that hung.
	pgAnswerBound = 7 * time.Second
	// pgRecoveryBound is how soon after Postgres answers SQL again every
	// request must succeed. The issuer's pool dials on demand, without
	// backoff, and pings a connection idle for over a second before
	// handing it out, so a pooled connection to the old Postgres fails at
	// most one request; seconds are plenty on a loaded machine.
	pgRecoveryBound = 5 * time.Second
	// pgAuditBound is how long after the load stops every audit event must
	// be in the issuer's database. Its audit recorder retries a failed
	// append after at most 5s (libs/audit's DefaultMaxRetryDelay), and
	// Postgres is back by then: one retry, plus room for the machine.
	pgAuditBound = 15 * time.Second
	// pgErrorPause is how long a worker waits after an error answer, as a
	// client backs off a little instead of spinning.
	pgErrorPause = 20 * time.Millisecond
)

// TestPostgresRestartUnderIssuerLoad stops Postgres for pgDowntime while workers
// get client_credentials tokens from the issuer and one more revokes its
// tokens as fast as it gets them, following RFC 7009 (a revocation answered
// 503 temporarily_unavailable is retried until it is answered 200). Just
// before the stop, bob signs in through invoice-web and grants consent.
//
// Clients must see only clean, retryable errors: every answer is a token
// (or a 200 revocation), or the documented 500 server_error or 503
// temporarily_unavailable in RFC 6749 JSON without internal detail, within
// pgAnswerBound; no connection is reset. Errors come only once Postgres
// stops, and within pgRecoveryBound of its return every request succeeds.
// Nothing is lost: every token answered 200 is in the issuer's token store
// and has its token.issued audit event; every revocation answered 200 is in
// the revocation log, has its token.revoked event and is refused by the
// gateway; bob's consent is still there, with its consent.granted event,
// and his refresh token still works.
//
// Postgres is stopped, not killed: the e2e stack runs it without fsync and
// synchronous commit (fast, and enough for test data), so only a clean stop
// may promise that what was committed survives; docs/revocation-feed.md
// asks production for synchronous commit.
//
// What makes the test meaningful: the restart must hit the issuer in the
// middle of its work, not between requests. Tokens are issued at hundreds a
// second, so the stop lands among them by itself. A revocation is the
// fragile case: the issuer writes twice, the token's session goes and the
// event goes into the feed's log. So that the stop always lands between
// the writes, the test holds the log's row lock (the first thing every
// append takes) from before the stop, until a revocation waits for it:
// whatever that revocation wrote before its append is in, its append is
// not, when Postgres goes away. Its client is told 503 and retries, as RFC
// 7009 says; the retry must still reach the gateways.
//
// Finally it measures how long the gateway keeps accepting a token revoked
// right after Postgres is back: the issuer's feed streams end when Postgres
// stops, and the gateway subscribes again with backoff, so the lag is
// bounded by that backoff (see feedResumeBound).
func TestPostgresRestartUnderIssuerLoad(t *testing.T) {
	// About 20s: a second of warm-up, the restart, the checks.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	issuer := issuerHTTP()
	gateway := gatewayHTTP()
	if _, _, err := awaitFeedFlowing(ctx, issuer, gateway); err != nil {
		t.Fatal(err)
	}
	dsn, err := gh.DatabaseURL(ctx, "issuer")
	if err != nil {
		t.Fatal(err)
	}
	testStart := time.Now()

	pgDown := false
	t.Cleanup(func() {
		if pgDown { // leave a running stack to the tests that follow
			if err := gh.StartService(context.WithoutCancel(ctx), "postgres"); err != nil {
				t.Errorf("restore postgres: %v", err)
			}
		}
	})

	load := startIssuerLoad(ctx, issuer)
	defer load.halt()
	var tl pgTimeline
	var bob *grantedConsent
	phaseErr := func() error {
		if err := pollUntil(ctx, fmt.Sprintf("%d tokens before the restart", pgWarmUp), func() bool { return load.tokensSince(time.Time{}) >= pgWarmUp }); err != nil {
			return err
		}
		if bob, err = grantConsent(ctx, dsn); err != nil {
			return err
		}
		pin, err := pinRevocationLog(ctx, dsn)
		if err != nil {
			return err
		}
		pgDown = true
		tl.stop = time.Now()
		err = gh.Stop(ctx, "postgres")
		pin.close()
		if err != nil {
			return err
		}
		tl.stopped = time.Now()
		if err := pollUntil(ctx, "the downtime", func() bool { return time.Since(tl.stopped) >= pgDowntime }); err != nil {
			return err
		}
		if err := gh.StartService(ctx, "postgres"); err != nil {
			return err
		}
		tl.up = time.Now()
		pgDown = false
		recoverCtx, cancelRecover := context.WithTimeout(ctx, pgRecoveryBound)
		defer cancelRecover()
		if err := pollUntil(recoverCtx, "a token after the restart", func() bool { return load.tokensSince(tl.up) > 0 }); err != nil {
			return err
		}
		tl.recovered = load.firstTokenSince(tl.up)
		lag, err := measureFeedLag(ctx, issuer, gateway, &tl)
		if err != nil {
			return err
		}
		tl.lag = lag
		return pollUntil(ctx, fmt.Sprintf("%d tokens after the restart", pgAfter), func() bool { return load.tokensSince(tl.up) >= pgAfter })
	}()
	load.halt()
	calls, tokens, revoked := load.results()
	tl.report(t, calls)
	if phaseErr != nil {
		t.Fatal(phaseErr)
	}

	// Clean, retryable errors only, and only while Postgres is away.
	var unclean, early, late []pgCall
	retryable := 0
	for _, c := range calls {
		switch {
		case c.answer.problem() != "":
			unclean = append(unclean, c)
		case c.answer.ok():
		case c.answer.received.Before(tl.stop):
			early = append(early, c)
		case c.answer.sent.After(tl.up.Add(pgRecoveryBound)):
			late = append(late, c)
		default:
			retryable++
		}
	}
	reportPgCalls(t, "answers that are not a success nor a clean, retryable error", unclean, tl)
	reportPgCalls(t, "error answers before Postgres stopped", early, tl)
	reportPgCalls(t, fmt.Sprintf("error answers more than %s after Postgres was back", pgRecoveryBound), late, tl)
	if retryable == 0 {
		t.Errorf("no request failed while Postgres was down: the restart did not hit the load")
	}
	if n := load.tokensSince(time.Time{}) - load.tokensSince(tl.stop); n < pgWarmUp {
		t.Errorf("%d tokens before the restart, want at least %d", n, pgWarmUp)
	}
	t.Logf("Postgres had exited %s after the stop began and answered SQL again %s after it; the first token after that came %s later; the gateway refused a token revoked then %s after the revocation",
		tl.stopped.Sub(tl.stop).Round(time.Millisecond), tl.up.Sub(tl.stop).Round(time.Millisecond), tl.recovered.Sub(tl.up).Round(time.Millisecond), tl.lag.Round(time.Millisecond))
	if subs, err := feedSubscriptions(ctx); err == nil {
		for _, sub := range subs {
			if sub.Time.After(tl.stop) {
				t.Logf("the gateway subscribed to the revocation feed again %s after the stop began, %s after Postgres answered SQL (negative: before StartService saw it)",
					sub.Time.Sub(tl.stop).Round(time.Millisecond), sub.Time.Sub(tl.up).Round(time.Millisecond))
				break
			}
		}
	}
	if bound := feedResumeBound(tl.revoked.Sub(tl.stop)); tl.lag > bound {
		t.Errorf("the gateway accepted a token for %s after its revocation (the feed was cut %s before it), want at most %s: the feed's backoff allows no more",
			tl.lag.Round(time.Millisecond), tl.revoked.Sub(tl.stop).Round(time.Millisecond), bound.Round(time.Millisecond))
	}

	// Nothing issued, revoked or consented is lost. (Postgres has a new
	// published port since its restart.)
	if dsn, err = gh.DatabaseURL(ctx, "issuer"); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close(context.WithoutCancel(ctx)) }()
	checkIssuedKept(ctx, t, db, tokens, revoked, testStart)
	checkRevocationsKept(ctx, t, db, gateway, revoked, testStart, tl)
	checkConsentKept(ctx, t, db, issuer, bob, testStart)
}

// pgTimeline is when each phase of the restart began.
type pgTimeline struct {
	// stop: the stop was asked for; stopped: Postgres had exited; up: it
	// answered SQL again; recovered: the first token request after up that
	// got a token started.
	stop, stopped, up, recovered time.Time
	// revoked is when the revocation whose lag is measured was answered
	// 200; lag is how long after that the gateway first refused the token.
	revoked time.Time
	lag     time.Duration
}

func (tl pgTimeline) when(at time.Time) string {
	switch {
	case tl.stop.IsZero() || at.Before(tl.stop):
		return "before the stop"
	case tl.up.IsZero() || at.Before(tl.up):
		return fmt.Sprintf("%s into the outage", at.Sub(tl.stop).Round(time.Millisecond))
	default:
		return fmt.Sprintf("%s after Postgres was back", at.Sub(tl.up).Round(time.Millisecond))
	}
}

// report logs how many answers of each kind came in each phase.
func (tl pgTimeline) report(t *testing.T, calls []pgCall) {
	t.Helper()
	counts := map[string]int{}
	for _, c := range calls {
		phase := "before the stop"
		switch {
		case !tl.stop.IsZero() && c.answer.sent.Before(tl.stop):
		case !tl.up.IsZero() && c.answer.sent.After(tl.up):
			phase = "after the restart"
		case !tl.stop.IsZero():
			phase = "during the outage"
		}
		counts[fmt.Sprintf("%s %s: %s", c.op, phase, c.answer.outcome())]++
	}
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		t.Logf("%5d  %s", counts[k], k)
	}
}

func reportPgCalls(t *testing.T, what string, calls []pgCall, tl pgTimeline) {
	t.Helper()
	if len(calls) == 0 {
		return
	}
	t.Errorf("%d %s; the first ones:", len(calls), what)
	for _, c := range calls[:min(len(calls), 5)] {
		t.Errorf("  %s sent %s: %s", c.op, tl.when(c.answer.sent), c.answer.describe())
	}
}

// measureFeedLag revokes a fresh token right after Postgres is back and
// returns how long the gateway went on accepting it.
func measureFeedLag(ctx context.Context, issuer, gateway *http.Client, tl *pgTimeline) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, pgRecoveryBound+feedResumeBound(time.Minute))
	defer cancel()
	tok, err := retryUntilOK(ctx, func() oauthAnswer { return clientToken(ctx, issuer, billingBot) })
	if err != nil {
		return 0, fmt.Errorf("a token to revoke after the restart: %w", err)
	}
	revoked, err := retryUntilOK(ctx, func() oauthAnswer { return revokeToken(ctx, issuer, billingBot, tok.body.AccessToken) })
	if err != nil {
		return 0, fmt.Errorf("revoking a token after the restart: %w", err)
	}
	tl.revoked = revoked.received
	refused, err := awaitRefused(ctx, gateway, tok.body.AccessToken)
	if err != nil {
		return 0, err
	}
	return refused.Sub(revoked.received), nil
}

// feedResumeBound is how long after a revocation the gateway may still
// accept the token when its feed stream ended at most cut before the
// revocation (Postgres stopped, so the issuer ended every stream).
//
// The gateway's subscriber (libs/revocation/feedclient) subscribes again
// after a backoff whose interval starts at 100ms and doubles after each
// attempt that heard nothing, up to 30s; each delay is drawn within ±50%
// of its interval. Attempts fail fast while Postgres is away. Every
// attempt before the one pending at the revocation waited at least half
// its interval, and all that waiting fits in cut, so the pending interval
// (100ms times 2^k, the sum of the k before it plus 100ms) is at most
// 2*cut + 100ms. That attempt starts within 1.5 times its interval of the
// revocation and, Postgres being back, succeeds and receives the event.
// One more second covers the stream's start and a loaded machine.
func feedResumeBound(cut time.Duration) time.Duration {
	interval := min(30*time.Second, 2*cut+100*time.Millisecond)
	return interval*3/2 + time.Second
}

// checkIssuedKept: every token answered 200 is in the issuer's token store
// (unless its revocation was answered 200, which deletes it) and has its
// token.issued audit event.
func checkIssuedKept(ctx context.Context, t *testing.T, db *pgx.Conn, tokens []issuedToken, revoked []revokedToken, since time.Time) {
	t.Helper()
	var all, kept []string
	revokedJTIs := map[string]bool{}
	for _, r := range revoked {
		revokedJTIs[r.jti] = true
	}
	for _, tok := range tokens {
		all = append(all, tok.jti)
		if !revokedJTIs[tok.jti] {
			kept = append(kept, tok.jti)
		}
	}
	stored, err := queryStrings(ctx, db, `SELECT jti FROM access_token_sessions WHERE jti = ANY($1)`, kept)
	if err != nil {
		t.Fatal(err)
	}
	if missing := without(kept, stored); len(missing) > 0 {
		t.Errorf("%d of %d tokens answered 200 are not in the issuer's token store, e.g. jti %s", len(missing), len(kept), missing[0])
	}
	var audited []string
	var queryErr error
	err = pollUntil(ctx, "every token.issued audit event", func() bool {
		audited, queryErr = queryStrings(ctx, db, `SELECT attributes->>'jti' FROM audit_events
			WHERE occurred_at >= $2 AND type = 'token.issued' AND attributes->>'jti' = ANY($1)`, all, since.Add(-time.Second))
		return queryErr != nil || len(without(all, audited)) == 0
	}, pgAuditBound)
	if queryErr != nil {
		t.Fatal(queryErr)
	}
	if err != nil {
		t.Errorf("%v: %d of %d tokens answered 200 have no token.issued audit event, e.g. jti %s", err, len(without(all, audited)), len(all), first(without(all, audited)))
	}
	t.Logf("%d tokens answered 200, %d of them not revoked", len(all), len(kept))
}

// checkRevocationsKept: every revocation answered 200 is in the revocation
// feed's log, has its token.revoked audit event and is refused by the
// gateway.
func checkRevocationsKept(ctx context.Context, t *testing.T, db *pgx.Conn, gateway *http.Client, revoked []revokedToken, since time.Time, tl pgTimeline) {
	t.Helper()
	if len(revoked) == 0 {
		t.Error("no revocation was answered 200")
		return
	}
	jtis := make([]string, 0, len(revoked))
	for _, r := range revoked {
		jtis = append(jtis, r.jti)
	}
	logged, err := queryStrings(ctx, db, `SELECT DISTINCT j FROM revocation_events, unnest(jtis) AS j WHERE j = ANY($1)`, jtis)
	if err != nil {
		t.Fatal(err)
	}
	var audited []string
	var queryErr error
	err = pollUntil(ctx, "every token.revoked audit event", func() bool {
		var lists []string
		lists, queryErr = queryStrings(ctx, db, `SELECT attributes->>'jtis' FROM audit_events WHERE occurred_at >= $1 AND type = 'token.revoked'`, since.Add(-time.Second))
		audited = audited[:0]
		for _, l := range lists {
			audited = append(audited, strings.Fields(l)...)
		}
		return queryErr != nil || len(without(jtis, audited)) == 0
	}, pgAuditBound)
	if queryErr != nil {
		t.Fatal(queryErr)
	}
	if err != nil {
		t.Errorf("%v: %d of %d revocations answered 200 have no token.revoked audit event", err, len(without(jtis, audited)), len(jtis))
	}
	// The feed flows again (measureFeedLag), so each refusal takes a
	// moment at most: the one second the revocation feed promises.
	lost := 0
	for _, r := range revoked {
		refuseCtx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := awaitRefused(refuseCtx, gateway, r.token)
		cancel()
		inLog := slices.Contains(logged, r.jti)
		if err == nil && inLog {
			continue
		}
		lost++
		if lost <= 5 {
			gw := "refuses it"
			if err != nil {
				gw = err.Error()
			}
			t.Errorf("a revocation (jti %s) answered 200 %s is lost: in the revocation log: %t; the gateway: %s; the answers to its attempts: %v",
				r.jti, tl.when(r.acknowledged), inLog, gw, r.history)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d revocations answered 200 never reached the gateway", lost, len(revoked))
	}
	t.Logf("%d revocations answered 200; %d of them needed more than one attempt", len(revoked), countWhere(revoked, func(r revokedToken) bool { return r.retried }))
}

// checkConsentKept: the consent granted just before the restart is still
// there and unwithdrawn, its consent.granted audit event was written, and
// the refresh token issued on it still works.
func checkConsentKept(ctx context.Context, t *testing.T, db *pgx.Conn, issuer *http.Client, c *grantedConsent, since time.Time) {
	t.Helper()
	var withdrawn *time.Time
	err := db.QueryRow(ctx, `SELECT withdrawn_at FROM consents WHERE id = $1`, c.id).Scan(&withdrawn)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		t.Errorf("the consent bob granted before the restart is gone")
	case err != nil:
		t.Fatal(err)
	case withdrawn != nil:
		t.Errorf("the consent bob granted before the restart was withdrawn at %s", withdrawn)
	}
	var audited int
	var queryErr error
	err = pollUntil(ctx, "the consent.granted audit event", func() bool {
		queryErr = db.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE occurred_at >= $2 AND type = 'consent.granted' AND attributes->>'consent_id' = $1`,
			c.id, since.Add(-time.Second)).Scan(&audited)
		return queryErr != nil || audited > 0
	}, pgAuditBound)
	if queryErr != nil {
		t.Fatal(queryErr)
	}
	if err != nil || audited != 1 {
		t.Errorf("bob's consent has %d consent.granted audit events, want 1 (%v)", audited, err)
	}
	refreshed := refreshToken(ctx, issuer, c.refreshToken)
	if !refreshed.ok() || refreshed.body.AccessToken == "" {
		t.Errorf("bob's refresh token after the restart: %s, want a new access token", refreshed.describe())
	}
}

// The issuer's demo clients the tests use (DESIGN.md's demo seed).
var (
	reportingJob = confidentialClient{"reporting-job", "reporting-job-secret", "invoice:read"}
	billingBot   = confidentialClient{"billing-bot", "billing-bot-secret", "invoice:read invoice:write"}
)

// confidentialClient is a demo client using client_credentials.
type confidentialClient struct{ id, secret, scope string }

// issuerLoad is the workers of TestPostgresRestartUnderIssuerLoad and what
// they got.
type issuerLoad struct {
	stop    chan struct{}
	halt    func()
	mu      sync.Mutex
	calls   []pgCall
	tokens  []issuedToken
	revoked []revokedToken
}

// pgCall is one request of a worker: op is "token" or "revoke".
type pgCall struct {
	op     string
	answer oauthAnswer
}

// issuedToken is a token answered 200; sent is when it was asked for.
type issuedToken struct {
	jti  string
	sent time.Time
}

// revokedToken is a token whose revocation was answered 200.
type revokedToken struct {
	jti, token   string
	acknowledged time.Time
	// history lists the answers to every attempt, the last one 200.
	history []string
	retried bool
}

// startIssuerLoad starts pgTokenWorkers token workers and one revoking
// worker; halt stops them and waits.
func startIssuerLoad(ctx context.Context, client *http.Client) *issuerLoad {
	l := &issuerLoad{stop: make(chan struct{})}
	var wg sync.WaitGroup
	for range pgTokenWorkers {
		wg.Go(func() {
			for l.running(ctx) {
				l.token(ctx, client, reportingJob)
			}
		})
	}
	wg.Go(func() {
		for l.running(ctx) {
			if tok, ok := l.token(ctx, client, billingBot); ok {
				l.revoke(ctx, client, tok)
			}
		}
	})
	l.halt = sync.OnceFunc(func() { close(l.stop); wg.Wait() })
	return l
}

func (l *issuerLoad) running(ctx context.Context) bool {
	select {
	case <-l.stop:
		return false
	default:
		return ctx.Err() == nil
	}
}

// pause waits pgErrorPause after an error, or less if the load stops.
func (l *issuerLoad) pause() {
	select {
	case <-l.stop:
	case <-time.After(pgErrorPause):
	}
}

// token gets one token of c and records the answer.
func (l *issuerLoad) token(ctx context.Context, client *http.Client, c confidentialClient) (string, bool) {
	a := clientToken(ctx, client, c)
	jti := ""
	if a.ok() {
		if claims, err := claimsOf(a.body.AccessToken); err != nil {
			a.err = err
		} else {
			jti = claims.JTI
		}
	}
	l.mu.Lock()
	l.calls = append(l.calls, pgCall{op: "token", answer: a.withoutTokens()})
	if jti != "" {
		l.tokens = append(l.tokens, issuedToken{jti: jti, sent: a.sent})
	}
	l.mu.Unlock()
	if jti == "" {
		l.pause()
		return "", false
	}
	return a.body.AccessToken, true
}

// revoke revokes tok as billing-bot, retrying after every error as RFC
// 7009 section 2.2.1 asks, until it is answered 200 or the load stops.
func (l *issuerLoad) revoke(ctx context.Context, client *http.Client, tok string) {
	claims, err := claimsOf(tok)
	if err != nil {
		return
	}
	var history []string
	for l.running(ctx) {
		a := revokeToken(ctx, client, billingBot, tok)
		history = append(history, a.outcome())
		l.mu.Lock()
		l.calls = append(l.calls, pgCall{op: "revoke", answer: a.withoutTokens()})
		if a.ok() {
			l.revoked = append(l.revoked, revokedToken{jti: claims.JTI, token: tok, acknowledged: a.received, history: history, retried: len(history) > 1})
		}
		l.mu.Unlock()
		if a.ok() {
			return
		}
		l.pause()
	}
}

func (l *issuerLoad) tokensSince(at time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, tok := range l.tokens {
		if !tok.sent.Before(at) {
			n++
		}
	}
	return n
}

func (l *issuerLoad) firstTokenSince(at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, tok := range l.tokens {
		if !tok.sent.Before(at) && (first.IsZero() || tok.sent.Before(first)) {
			first = tok.sent
		}
	}
	return first
}

func (l *issuerLoad) results() ([]pgCall, []issuedToken, []revokedToken) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls), slices.Clone(l.tokens), slices.Clone(l.revoked)
}

// revocationPin holds the row lock of the revocation feed's log.
type revocationPin struct {
	conn *pgx.Conn
	tx   pgx.Tx
}

// pinRevocationLog takes the row lock of revocation_log, which every
// append of a revocation event takes first, and returns once a revocation
// of the issuer waits for it: that revocation has done what comes before
// its append (today: deleted the token's session) and not appended its
// event yet. The lock goes with the connection, when Postgres stops.
func pinRevocationLog(ctx context.Context, dsn string) (*revocationPin, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pin the revocation log: %w", err)
	}
	p := &revocationPin{conn: conn}
	if p.tx, err = conn.Begin(ctx); err == nil {
		_, err = p.tx.Exec(ctx, `SELECT head FROM revocation_log FOR UPDATE`)
	}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("pin the revocation log: %w", err)
	}
	var waiting int
	var queryErr error
	err = pollUntil(ctx, "a revocation waiting for the revocation log", func() bool {
		queryErr = p.tx.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = 'issuer' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&waiting)
		return queryErr != nil || waiting > 0
	}, 5*time.Second)
	if err = errors.Join(err, queryErr); err != nil {
		p.close()
		return nil, fmt.Errorf("pin the revocation log: %w", err)
	}
	return p, nil
}

// close drops the connection, and the lock with it.
func (p *revocationPin) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.conn.Close(ctx)
}

// grantedConsent is bob's consent to invoice-web and the refresh token
// issued on it.
type grantedConsent struct {
	id, refreshToken string
}

// grantConsent signs bob in through invoice-web, grants consent and
// returns the consent (found in the issuer's database) with the refresh
// token issued on it.
func grantConsent(ctx context.Context, dsn string) (*grantedConsent, error) {
	signedIn := time.Now()
	tok, err := signInWeb(ctx, demoUser{name: "bob", password: "bob-demo-password"}, "openid", "offline_access", "invoice:read")
	if err != nil {
		return nil, fmt.Errorf("bob's sign-in: %w", err)
	}
	if tok.RefreshToken == "" {
		return nil, errors.New("bob's sign-in: no refresh token")
	}
	claims, err := claimsOf(tok.AccessToken)
	if err != nil {
		return nil, err
	}
	var ids []string
	err = stack.WithConn(ctx, dsn, func(conn *pgx.Conn) error {
		ids, err = queryStrings(ctx, conn, `SELECT id FROM consents
			WHERE subject = $1 AND client_id = 'invoice-web' AND granted_at >= $2 AND withdrawn_at IS NULL`, claims.Sub, signedIn.Add(-time.Second))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("bob's sign-in: %d new consents in the issuer's database, want 1", len(ids))
	}
	return &grantedConsent{id: ids[0], refreshToken: tok.RefreshToken}, nil
}

// oauthAnswer is the issuer's answer to one request to its token or
// revocation endpoint.
type oauthAnswer struct {
	sent, received time.Time
	// status is 0 when no HTTP answer came (err).
	status      int
	contentType string
	body        struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		Error        string `json:"error"`
		Description  string `json:"error_description"`
	}
	// err is a transport error, a timeout or an unreadable body.
	err error
	// leak is internal detail found in an error answer, if any.
	leak string
}

// internalDetail is what an error answer must never show a client: store
// errors, addresses, driver messages.
var internalDetail = []string{"postgres", "pgx", "sqlstate", "dial", "lookup", "tcp", "refused", "database", "store", "connect:", "127.0.0.11"}

// issuerPost posts form to the issuer's path as client c (HTTP Basic, RFC
// 6749 section 2.3.1; c.id empty: no client authentication).
func issuerPost(ctx context.Context, client *http.Client, path string, c confidentialClient, form url.Values) (a oauthAnswer) {
	a.sent = time.Now()
	defer func() { a.received = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, stack.IssuerID+path, strings.NewReader(form.Encode()))
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.id != "" {
		req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	}
	resp, err := client.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		a.err = fmt.Errorf("reading the answer: %w", err)
		return a
	}
	a.status, a.contentType = resp.StatusCode, resp.Header.Get("Content-Type")
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			a.err = fmt.Errorf("%d answer is not JSON (%d bytes)", a.status, len(raw))
		}
	}
	if a.status != http.StatusOK {
		lower := strings.ToLower(string(raw))
		for _, s := range internalDetail {
			if strings.Contains(lower, s) {
				a.leak = s
				break
			}
		}
	}
	return a
}

func clientToken(ctx context.Context, client *http.Client, c confidentialClient) oauthAnswer {
	return issuerPost(ctx, client, "/oauth2/token", c, url.Values{"grant_type": {"client_credentials"}, "scope": {c.scope}})
}

func revokeToken(ctx context.Context, client *http.Client, c confidentialClient, tok string) oauthAnswer {
	return issuerPost(ctx, client, "/oauth2/revoke", c, url.Values{"token": {tok}, "token_type_hint": {"access_token"}})
}

// refreshToken uses a refresh token of invoice-web (a public client).
func refreshToken(ctx context.Context, client *http.Client, refresh string) oauthAnswer {
	return issuerPost(ctx, client, "/oauth2/token", confidentialClient{}, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {"invoice-web"},
	})
}

// ok: a success (200) with a readable body.
func (a oauthAnswer) ok() bool { return a.err == nil && a.status == http.StatusOK }

// problem says what makes the answer neither a success nor a clean,
// retryable error, or is empty. Clean and retryable is what
// docs/issuer.md promises while the store is unreachable: 500 server_error
// (token endpoint) or 503 temporarily_unavailable (RFC 7009 section 2.2.1),
// as RFC 6749 JSON, without internal detail, within pgAnswerBound.
func (a oauthAnswer) problem() string {
	switch {
	case a.err != nil:
		return "no clean answer: " + a.err.Error()
	case a.received.Sub(a.sent) > pgAnswerBound:
		return fmt.Sprintf("took %s", a.received.Sub(a.sent).Round(time.Millisecond))
	case a.status == http.StatusOK:
		return ""
	case !strings.HasPrefix(a.contentType, "application/json"):
		return fmt.Sprintf("%d with Content-Type %q", a.status, a.contentType)
	case a.leak != "":
		return fmt.Sprintf("%d %s shows internal detail (%q)", a.status, a.body.Error, a.leak)
	case a.status == http.StatusInternalServerError && a.body.Error == "server_error",
		a.status == http.StatusServiceUnavailable && a.body.Error == "temporarily_unavailable":
		return ""
	default:
		return fmt.Sprintf("%d %q is not a retryable error", a.status, a.body.Error)
	}
}

// outcome is a short name of the answer, such as "200" or "503
// temporarily_unavailable".
func (a oauthAnswer) outcome() string {
	switch {
	case a.err != nil:
		return "no answer"
	case a.body.Error != "":
		return fmt.Sprintf("%d %s", a.status, a.body.Error)
	default:
		return fmt.Sprint(a.status)
	}
}

// describe says what came back, never a token.
func (a oauthAnswer) describe() string {
	took := a.received.Sub(a.sent).Round(time.Millisecond)
	if a.err != nil {
		return fmt.Sprintf("%v (after %s)", a.err, took)
	}
	desc := a.body.Description
	if len(desc) > 160 {
		desc = desc[:160] + "…"
	}
	return fmt.Sprintf("%d %q %q (after %s)", a.status, a.body.Error, desc, took)
}

// withoutTokens is a copy without the tokens, to keep in the results.
func (a oauthAnswer) withoutTokens() oauthAnswer {
	a.body.AccessToken, a.body.RefreshToken = "", ""
	return a
}

// retryUntilOK repeats op after each error answer, as a client of the
// issuer should, until it succeeds or ctx ends.
func retryUntilOK(ctx context.Context, op func() oauthAnswer) (oauthAnswer, error) {
	for {
		a := op()
		if a.ok() {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return a, fmt.Errorf("last answer %s: %w", a.describe(), ctx.Err())
		case <-time.After(pgErrorPause):
		}
	}
}

// tokenClaims are the claims the tests read from an access token.
type tokenClaims struct {
	JTI string `json:"jti"`
	Sub string `json:"sub"`
}

// claimsOf decodes an access token's payload without verifying it (the
// gateway does that).
func claimsOf(jwt string) (tokenClaims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return tokenClaims{}, errors.New("the access token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return tokenClaims{}, fmt.Errorf("token payload: %w", err)
	}
	var c tokenClaims
	if err := json.Unmarshal(raw, &c); err != nil {
		return tokenClaims{}, fmt.Errorf("token payload: %w", err)
	}
	if c.JTI == "" {
		return tokenClaims{}, errors.New("token without jti")
	}
	return c, nil
}

// issuerHTTP is a client for the issuer by its address in the stack
// (stack.IssuerID), bounded by pgAnswerBound and a second.
func issuerHTTP() *http.Client {
	c := gh.HTTPClient()
	if tr, ok := c.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = 2 * (pgTokenWorkers + 1)
	}
	c.Timeout = pgAnswerBound + time.Second
	return c
}

// pollUntil is waitFor with an optional bound besides ctx's.
func pollUntil(ctx context.Context, what string, cond func() bool, bound ...time.Duration) error {
	if len(bound) > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bound[0])
		defer cancel()
	}
	return waitFor(ctx, what, cond)
}

// queryStrings returns the one text column of a query's rows.
func queryStrings(ctx context.Context, db *pgx.Conn, sql string, args ...any) ([]string, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// without returns the elements of want not in got.
func without(want, got []string) []string {
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	var out []string
	for _, w := range want {
		if !have[w] {
			out = append(out, w)
		}
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// demoUser is a demo user (DESIGN.md's demo seed).
type demoUser struct{ name, password, totpSecret string }

// webCallback is invoice-web's loopback redirect URI (RFC 8252: any port):
// nothing listens there, the sign-in stops at the redirect and reads the
// code from it.
const webCallback = "http://127.0.0.1:49152/callback"

// signInWeb signs u in at the issuer's pages through invoice-web (the code
// flow with PKCE S256, consent asked for and allowed) and returns the token
// response.
func signInWeb(ctx context.Context, u demoUser, scopes ...string) (*oauth2.Token, error) {
	cfg := &oauth2.Config{
		ClientID:    "invoice-web",
		RedirectURL: webCallback,
		Scopes:      scopes,
		Endpoint: oauth2.Endpoint{AuthURL: stack.IssuerID + "/oauth2/authorize", TokenURL: stack.IssuerID + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams},
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	browser := gh.HTTPClient()
	browser.Jar = jar
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	p, err := browse(ctx, browser, http.MethodGet, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("prompt", "consent"), oauth2.SetAuthURLParam("nonce", rand.Text())), nil)
	if err != nil {
		return nil, err
	}
	if p, err = p.submit(ctx, browser, "login-form", url.Values{"username": {u.name}, "password": {u.password}}); err != nil {
		return nil, err
	}
	if u.totpSecret != "" {
		code, err := gh.TOTPCode(ctx, u.totpSecret)
		if err != nil {
			return nil, err
		}
		if p, err = p.submit(ctx, browser, "mfa-form", url.Values{"code": {code}}); err != nil {
			return nil, err
		}
	}
	if p, err = p.submit(ctx, browser, "consent-form", url.Values{"decision": {"allow"}}); err != nil {
		return nil, err
	}
	if p.away == nil || p.away.Query().Get("state") != state || p.away.Query().Get("code") == "" {
		return nil, fmt.Errorf("%s's sign-in did not end at the callback with a code and the state", u.name)
	}
	return cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, gh.HTTPClient()), p.away.Query().Get("code"), oauth2.VerifierOption(verifier))
}

// issuerPage is where a browser request ended: an issuer page, or (away) a
// redirect that leaves the issuer.
type issuerPage struct {
	url  *url.URL
	doc  *html.Node
	away *url.URL
}

// browse sends a request and follows the redirects that stay on its host.
func browse(ctx context.Context, client *http.Client, method, target string, form url.Values) (issuerPage, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return issuerPage{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", req.URL.Scheme+"://"+req.URL.Host)
	}
	for range 10 {
		resp, err := client.Do(req)
		if err != nil {
			return issuerPage{}, err
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err != nil {
			return issuerPage{}, err
		}
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			next, err := req.URL.Parse(loc)
			if err != nil {
				return issuerPage{}, err
			}
			if next.Host != req.URL.Host {
				return issuerPage{away: next}, nil
			}
			if req, err = http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil); err != nil {
				return issuerPage{}, err
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return issuerPage{}, fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
		}
		doc, err := html.Parse(strings.NewReader(string(raw)))
		if err != nil {
			return issuerPage{}, err
		}
		return issuerPage{url: req.URL, doc: doc}, nil
	}
	return issuerPage{}, errors.New("more than 10 redirects")
}

// submit posts the form formID of p with its hidden fields and fields.
func (p issuerPage) submit(ctx context.Context, client *http.Client, formID string, fields url.Values) (issuerPage, error) {
	if p.doc == nil {
		return issuerPage{}, fmt.Errorf("want the form %s, got a redirect", formID)
	}
	var form *html.Node
	for n := range p.doc.Descendants() {
		if n.Type == html.ElementNode && n.DataAtom == atom.Form && htmlAttr(n, "id") == formID {
			form = n
			break
		}
	}
	if form == nil {
		return issuerPage{}, fmt.Errorf("no form %s on %s", formID, p.url.Path)
	}
	action, err := p.url.Parse(htmlAttr(form, "action"))
	if err != nil {
		return issuerPage{}, err
	}
	values := url.Values{}
	for n := range form.Descendants() {
		if n.Type == html.ElementNode && n.DataAtom == atom.Input && strings.EqualFold(htmlAttr(n, "type"), "hidden") && htmlAttr(n, "name") != "" {
			values.Add(htmlAttr(n, "name"), htmlAttr(n, "value"))
		}
	}
	for k, v := range fields {
		values[k] = v
	}
	return browse(ctx, client, http.MethodPost, action.String(), values)
}

func htmlAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val
		}
	}
	return ""
}
