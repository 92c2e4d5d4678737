package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/e2e/stack"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// The timeline of TestPDPKilledUnderTraffic. The gateway runs with its
// defaults for everything PDP-related (this package's stack changes none):
// a decision cache of 2 s, a circuit breaker opening after 5 consecutive
// failures for a 5 s cool-down, and stale-allow off.
const (
	// gatewayDecisionTTL is the gateway's -decision-cache-ttl.
	gatewayDecisionTTL = 2 * time.Second
	// cacheSlack is how much later than the kill the gateway may still have
	// stored an answer the PDP sent just before it died: the time between
	// reading that answer and putting it in the cache, on a loaded
	// two-core machine.
	cacheSlack = 500 * time.Millisecond
	// breakerCoolDown is the gateway's -pdp-breaker-cooldown.
	breakerCoolDown = 5 * time.Second
	// outageHold is how long the PDP stays dead: past every answer the
	// gateway cached before the kill, and then 2 s during which nothing
	// but the gateway itself answers gateway traffic.
	outageHold = gatewayDecisionTTL + cacheSlack + 2*time.Second
	// recoveryBound is how soon after the restarted PDP is ready each
	// route must succeed again: the breaker may have opened again just
	// before the PDP came up, so one full cool-down, then its probe, plus
	// 3 s for reconnecting and a loaded machine.
	recoveryBound = breakerCoolDown + 3*time.Second
	// recoveredFor is how long the load goes on once every route has
	// succeeded again.
	recoveredFor = 2 * time.Second
	// outageWarmUp is how many successes each route needs before the kill.
	outageWarmUp = 10
	// minOutageCalls is the least number of requests per route during the
	// outage, and of successes per route after recovery.
	minOutageCalls = 10
	// readEvery and writeEvery pace each worker: the load is steady, and
	// the writes do not flood the invoice table.
	readEvery  = 10 * time.Millisecond
	writeEvery = 50 * time.Millisecond
)

// outageRoute is one kind of request of TestPDPKilledUnderTraffic.
type outageRoute struct {
	name string
	// gateway: through the gateway (which asks the PDP per route, with its
	// decision cache, then forwards to the invoice service); otherwise
	// straight to the invoice service, which asks the PDP per resource.
	gateway bool
	// write: CreateInvoice as billing-bot; otherwise ListInvoices as
	// reporting-job.
	write   bool
	workers int
}

var outageRoutes = []outageRoute{
	{name: "gateway ListInvoices", gateway: true, workers: 2},
	{name: "gateway CreateInvoice", gateway: true, write: true, workers: 1},
	{name: "invoice service ListInvoices", workers: 1},
	{name: "invoice service CreateInvoice", write: true, workers: 1},
}

// TestPDPKilledUnderTraffic SIGKILLs the PDP while workers call the invoice
// API, through the gateway and straight at the invoice service, reading
// (ListInvoices) and writing (CreateInvoice); holds it dead for outageHold;
// starts it again and keeps the load on until every route has succeeded
// again and recoveredFor more. Then it checks that the outage denied, and
// never passed, anything:
//
//   - Every answer is a success or the documented denial: HTTP 503, Connect
//     code unavailable, ErrorInfo reason pdp_unavailable in the gatehouse.dev
//     domain (docs/error-model.md). No other status, code or reason, and no
//     failure at all before the kill.
//   - Not one request that started between the kill's return and the
//     restart (the outage) succeeded, read or write. This is exact, not a
//     matter of timing: every success needs the invoice service's own fresh
//     PDP decision (it has no decision cache), and in that window no PDP
//     process runs to give one. Requests in flight at the kill may go either
//     way; so may those started once Docker was asked to start the PDP.
//   - The gateway, on its own, fails closed too. Its decision cache may still
//     answer a route-level question for gatewayDecisionTTL after the PDP's
//     last answer; its log (by our X-Request-Id) says for each outage request
//     whether it forwarded it and on what decision. A forwarded request must
//     come from the cache and have started before the kill + the TTL +
//     cacheSlack. Every one after that must be denied by the gateway itself
//     with pdp_unavailable. No request is ever allowed by stale-allow (off in
//     this stack). The gateway's circuit breaker opens during the outage and
//     closes after it.
//   - The database holds exactly the invoices it held before, plus the ones
//     whose CreateInvoice succeeded (none of them during the outage), and
//     none of the existing ones changed.
//   - Recovery: once the restarted PDP is ready, each route succeeds again
//     within recoveryBound; from a route's first success on, every request
//     of that route succeeds.
//
// The requests are counted per phase and route and printed.
func TestPDPKilledUnderTraffic(t *testing.T) {
	// About 10 s: warm-up, 4.5 s outage, restart, recovery (up to a breaker
	// cool-down), 2 s of recovered load.
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	client := outageClient()
	invoiceURL, err := gh.URL(ctx, "invoice")
	if err != nil {
		t.Fatal(err)
	}
	callers := map[bool]outageCaller{
		false: clientCaller(ctx, t, client, "reporting-job", "reporting-job-secret", "invoice:read"),
		true:  clientCaller(ctx, t, client, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write"),
	}
	dsn, err := gh.DatabaseURL(ctx, "invoice")
	if err != nil {
		t.Fatal(err)
	}
	before, err := invoiceRows(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	gatewayLogs, err := gh.ServiceLogs(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	opensBefore, closesBefore := breakerTransitions(gatewayLogs)
	// Request ids and customer names carry a tag of this run, so its
	// requests and invoices are told apart from every other's.
	tag := fmt.Sprintf("pdpkill%d", time.Now().UnixNano())

	// The PDP is running again when the test ends, whatever happens.
	var killSent, restarted bool
	t.Cleanup(func() {
		if killSent && !restarted {
			if err := gh.StartService(context.WithoutCancel(ctx), "pdp"); err != nil {
				t.Errorf("restart the PDP for the tests that follow: %v", err)
			}
		}
	})

	// The workers run until stopLoad; each writes only its own slot.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var progress outageProgress
	var slots [][]outageCall
	for ri, rt := range outageRoutes {
		base, every := invoiceURL, readEvery
		if rt.gateway {
			base = gh.GatewayURL
		}
		if rt.write {
			every = writeEvery
		}
		for w := range rt.workers {
			slot := len(slots)
			slots = append(slots, nil)
			wg.Go(func() {
				tick := time.NewTicker(every)
				defer tick.Stop()
				for n := 0; ; n++ {
					c := rt.call(ctx, client, base, callers[rt.write], fmt.Sprintf("%s-%d-%d-%d", tag, ri, w, n))
					c.route = ri
					slots[slot] = append(slots[slot], c)
					progress.record(c)
					if !nextTick(ctx, stop, tick) {
						return
					}
				}
			})
		}
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	// The phases. One that does not complete in time ends the load, and
	// what was observed is still checked below.
	var killStart, killed, restartSent, ready time.Time
	phaseErr := func() error {
		if err := waitFor(ctx, fmt.Sprintf("%d successes on every route", outageWarmUp), func() bool {
			return progress.allSucceeded(time.Time{}, outageWarmUp)
		}); err != nil {
			return err
		}
		killStart, killSent = time.Now(), true
		if err := gh.Kill(ctx, "pdp"); err != nil {
			return fmt.Errorf("kill the PDP: %w", err)
		}
		killed = time.Now()
		if err := waitFor(ctx, "the outage", func() bool { return time.Since(killed) >= outageHold }); err != nil {
			return err
		}
		restartSent = time.Now()
		if err := gh.StartService(ctx, "pdp"); err != nil {
			return fmt.Errorf("restart the PDP: %w", err)
		}
		restarted = true
		ready = time.Now()
		t.Logf("PDP killed %s after the kill was sent; down for %s; ready %s after its start was sent",
			killed.Sub(killStart).Round(time.Millisecond), restartSent.Sub(killed).Round(time.Millisecond), ready.Sub(restartSent).Round(time.Millisecond))
		recoverCtx, cancelRecover := context.WithTimeout(ctx, recoveryBound+5*time.Second)
		defer cancelRecover()
		if err := waitFor(recoverCtx, "a success on every route after the restart", func() bool {
			return progress.allSucceeded(restartSent, 1)
		}); err != nil {
			return err
		}
		recovered := time.Now()
		return waitFor(ctx, "the recovered load", func() bool { return time.Since(recovered) >= recoveredFor })
	}()
	stopLoad()

	var calls []outageCall
	for _, s := range slots {
		calls = append(calls, s...)
	}
	slices.SortFunc(calls, func(a, b outageCall) int { return a.start.Compare(b.start) })
	tl := outageTimeline{killStart: killStart, killed: killed, restartSent: restartSent, ready: ready}
	tl.report(t, calls)

	// Every answer is a success or the documented denial, and nothing
	// succeeds that started after the kill and before the PDP was back.
	var bad, passed, earlyDenied []outageCall
	for _, c := range calls {
		switch {
		case !c.ok() && !c.pdpUnavailable():
			bad = append(bad, c)
		case c.ok() && tl.phase(c) == phaseOutage:
			passed = append(passed, c)
		case !c.ok() && c.end.Before(killStart):
			earlyDenied = append(earlyDenied, c)
		}
	}
	reportCalls(t, "answers other than a success or 503 unavailable pdp_unavailable", bad, tl)
	reportCalls(t, "requests that started after the PDP was killed and SUCCEEDED (a pass during the outage)", passed, tl)
	reportCalls(t, "requests denied before the PDP was killed", earlyDenied, tl)
	if phaseErr != nil {
		t.Fatal(phaseErr)
	}

	tl.checkRecovery(t, calls)
	tl.checkGateway(ctx, t, calls, opensBefore, closesBefore)
	checkInvoices(ctx, t, dsn, before, calls, tag)
}

// outageCall is one request of TestPDPKilledUnderTraffic.
type outageCall struct {
	route int
	// id is the X-Request-Id sent: the gateway logs it as
	// client_request_id, the invoice service uses it as its request id.
	id         string
	start, end time.Time
	status     int
	// code, reason and domain are the Connect error's, when it failed.
	code, reason, domain string
	// customer and invoiceID are a CreateInvoice's request and answer.
	customer, invoiceID string
	// err is a failure to get or read an answer at all.
	err error
}

func (c outageCall) ok() bool { return c.err == nil && c.status == http.StatusOK }

// pdpUnavailable reports whether c was refused exactly as documented for a
// PDP that does not answer (docs/error-model.md).
func (c outageCall) pdpUnavailable() bool {
	return c.err == nil && c.status == http.StatusServiceUnavailable && c.code == "unavailable" &&
		c.reason == reason.PDPUnavailable && c.domain == enforce.ErrorDomain
}

func (c outageCall) describe(tl outageTimeline) string {
	answer := fmt.Sprintf("HTTP %d %s %s (%s)", c.status, c.code, c.reason, c.domain)
	switch {
	case c.err != nil:
		answer = c.err.Error()
	case c.ok() && c.invoiceID != "":
		answer = "200, created " + c.invoiceID
	case c.ok():
		answer = "200"
	}
	return fmt.Sprintf("%s %s: started %s, took %s: %s", outageRoutes[c.route].name, c.id,
		tl.when(c.start), c.end.Sub(c.start).Round(time.Millisecond), answer)
}

// call makes one request of route rt at base with Connect's JSON encoding
// (what curl would send), so the HTTP status is seen as it is. Straight
// to the invoice service it sends the identity headers as the gateway
// does (the service requires them, and checks them against the token).
func (rt outageRoute) call(ctx context.Context, client *http.Client, base string, caller outageCaller, id string) outageCall {
	c := outageCall{id: id}
	procedure, msg := "ListInvoices", proto.Message(&invoicev1.ListInvoicesRequest{PageSize: 10})
	if rt.write {
		c.customer = "PDP outage " + id
		procedure, msg = "CreateInvoice", &invoicev1.CreateInvoiceRequest{Customer: c.customer, AmountCents: 4200, Currency: "EUR"}
	}
	body, err := protojson.Marshal(msg)
	if err != nil {
		c.err = err
		return c
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/gatehouse.invoice.v1.InvoiceService/"+procedure, bytes.NewReader(body))
	if err != nil {
		c.err = err
		return c
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+caller.token)
	req.Header.Set(enforce.HeaderRequestID, id)
	if !rt.gateway {
		req.Header.Set(enforce.HeaderSubject, caller.Subject)
		req.Header.Set(enforce.HeaderTenant, caller.Tenant)
		req.Header.Set(enforce.HeaderClientID, caller.ClientID)
	}
	c.start = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		c.end, c.err = time.Now(), err
		return c
	}
	raw, err := io.ReadAll(resp.Body)
	c.end = time.Now()
	_ = resp.Body.Close()
	c.status = resp.StatusCode
	if err != nil {
		c.err = fmt.Errorf("read the answer: %w", err)
		return c
	}
	if c.status != http.StatusOK {
		c.code, c.reason, c.domain, c.err = connectErrorOf(raw)
		return c
	}
	if rt.write {
		var out invoicev1.CreateInvoiceResponse
		if err := protojson.Unmarshal(raw, &out); err != nil || out.GetInvoice().GetId() == "" || out.GetInvoice().GetCustomer() != c.customer {
			c.err = fmt.Errorf("CreateInvoice answered 200 without the invoice created (%v): %s", err, raw)
		}
		c.invoiceID = out.GetInvoice().GetId()
		return c
	}
	if err := protojson.Unmarshal(raw, new(invoicev1.ListInvoicesResponse)); err != nil {
		c.err = fmt.Errorf("ListInvoices answered 200 with a body that is not a ListInvoicesResponse: %w", err)
	}
	return c
}

// connectErrorOf decodes a Connect JSON error body: its code and the
// reason and domain of its google.rpc.ErrorInfo detail (decoded from the
// detail's binary value, not its optional debug rendering).
func connectErrorOf(raw []byte) (code, reasonCode, domain string, err error) {
	var body struct {
		Code    string `json:"code"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Code == "" {
		return "", "", "", fmt.Errorf("the error body is not a Connect error (%v): %.200s", err, raw)
	}
	for _, d := range body.Details {
		if d.Type != "google.rpc.ErrorInfo" {
			continue
		}
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			return body.Code, "", "", fmt.Errorf("ErrorInfo detail: %w", err)
		}
		var info errdetails.ErrorInfo
		if err := proto.Unmarshal(b, &info); err != nil {
			return body.Code, "", "", fmt.Errorf("ErrorInfo detail: %w", err)
		}
		return body.Code, info.GetReason(), info.GetDomain(), nil
	}
	return body.Code, "", "", nil
}

// outageProgress counts successes per route as the load runs, by start.
type outageProgress struct {
	mu    sync.Mutex
	calls []outageCall
}

func (p *outageProgress) record(c outageCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.ok() {
		p.calls = append(p.calls, c)
	}
}

// allSucceeded reports whether every route had n successes that started
// after since.
func (p *outageProgress) allSucceeded(since time.Time, n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	counts := make([]int, len(outageRoutes))
	for _, c := range p.calls {
		if c.start.After(since) {
			counts[c.route]++
		}
	}
	return slices.Min(counts) >= n
}

// outageTimeline holds when the PDP was killed and was ready again.
type outageTimeline struct {
	// killStart is when the kill was sent, killed when it returned: from
	// then on no PDP process runs, until restartSent, when the test asks
	// Docker to start the container again.
	killStart, killed, restartSent time.Time
	// ready is when the restarted PDP answered /readyz.
	ready time.Time
}

// Phases of a request by its start (and, for "up", its end).
const (
	phaseUp       = "up"
	phaseInFlight = "in flight at the kill"
	phaseOutage   = "outage"
	phaseRestart  = "restarting"
)

var outagePhases = []string{phaseUp, phaseInFlight, phaseOutage, phaseRestart}

func (tl outageTimeline) phase(c outageCall) string {
	switch {
	case tl.killStart.IsZero() || c.end.Before(tl.killStart):
		return phaseUp
	case c.start.Before(tl.killed):
		return phaseInFlight
	case tl.restartSent.IsZero() || c.start.Before(tl.restartSent):
		return phaseOutage
	}
	return phaseRestart
}

func (tl outageTimeline) when(at time.Time) string {
	switch {
	case tl.killed.IsZero() || at.Before(tl.killed):
		return "before the kill"
	case tl.restartSent.IsZero() || at.Before(tl.restartSent):
		return fmt.Sprintf("%s after the kill", at.Sub(tl.killed).Round(time.Millisecond))
	}
	return fmt.Sprintf("%s after the PDP's start was sent", at.Sub(tl.restartSent).Round(time.Millisecond))
}

// report prints the requests per phase and route: successes and denials.
func (tl outageTimeline) report(t *testing.T, calls []outageCall) {
	t.Helper()
	type count struct{ ok, denied, other int }
	counts := map[string][]count{}
	for _, p := range outagePhases {
		counts[p] = make([]count, len(outageRoutes))
	}
	for _, c := range calls {
		n := &counts[tl.phase(c)][c.route]
		switch {
		case c.ok():
			n.ok++
		case c.pdpUnavailable():
			n.denied++
		default:
			n.other++
		}
	}
	t.Logf("%d requests (ok / 503 pdp_unavailable / anything else):", len(calls))
	for _, p := range outagePhases {
		var line []string
		for ri, n := range counts[p] {
			line = append(line, fmt.Sprintf("%s %d/%d/%d", outageRoutes[ri].name, n.ok, n.denied, n.other))
		}
		t.Logf("  %-22s %s", p+":", strings.Join(line, ", "))
	}
}

// checkRecovery: after the restart, each route succeeds within
// recoveryBound, and from its first success on it only succeeds; during
// the outage each route was tried often enough to count.
func (tl outageTimeline) checkRecovery(t *testing.T, calls []outageCall) {
	t.Helper()
	for ri, rt := range outageRoutes {
		var first *outageCall
		outage, after := 0, 0
		var failedAfter []outageCall
		for i, c := range calls {
			if c.route != ri {
				continue
			}
			if tl.phase(c) == phaseOutage {
				outage++
			}
			if tl.phase(c) != phaseRestart {
				continue
			}
			switch {
			case first == nil && c.ok():
				first = &calls[i]
				after++
			case first != nil && c.start.After(first.end) && c.ok():
				after++
			case first != nil && c.start.After(first.end):
				failedAfter = append(failedAfter, c)
			}
		}
		if outage < minOutageCalls {
			t.Errorf("%s: %d requests during the outage, want at least %d", rt.name, outage, minOutageCalls)
		}
		if first == nil {
			t.Errorf("%s: no success after the PDP was started again", rt.name)
			continue
		}
		// Negative when the PDP answered before the test saw /readyz.
		latency := first.end.Sub(tl.ready)
		t.Logf("%s: first success %s after the PDP was ready, then %d successes", rt.name, latency.Round(time.Millisecond), after)
		if latency > recoveryBound {
			t.Errorf("%s: first success %s after the PDP was ready, want within %s (breaker cool-down %s + 3 s)", rt.name, latency, recoveryBound, breakerCoolDown)
		}
		if after < minOutageCalls {
			t.Errorf("%s: %d successes after recovering, want at least %d", rt.name, after, minOutageCalls)
		}
		reportCalls(t, rt.name+": requests that failed after the route had recovered", failedAfter, tl)
	}
}

// gatewayRequest is what the gateway logged about one request.
type gatewayRequest struct {
	// forwarded: the gateway passed the request on ("request" log line),
	// on a decision from source (pdp, cache or stale_allow).
	forwarded bool
	source    string
	// denied: the gateway answered itself ("denied"), for reasonCode.
	denied     bool
	reasonCode string
}

// checkGateway reads the gateway's log: which outage requests it forwarded
// and on what decision, which it denied itself, and its breaker's moves.
func (tl outageTimeline) checkGateway(ctx context.Context, t *testing.T, calls []outageCall, opensBefore, closesBefore int) {
	t.Helper()
	// The gateway logs a request once it has answered it, and Docker
	// collects the line a moment later: the last requests' lines may not
	// be there yet when the load stops. One still missing after the wait
	// is reported below.
	var logs []byte
	var seen map[string]gatewayRequest
	logCtx, cancelLogs := context.WithTimeout(ctx, 10*time.Second)
	defer cancelLogs()
	var readErr error
	_ = waitFor(logCtx, "the gateway's log of every request", func() bool {
		if logs, readErr = gh.ServiceLogs(ctx, "gateway"); readErr != nil {
			return true
		}
		seen = gatewayRequests(logs)
		for _, c := range calls {
			if _, ok := seen[c.id]; !ok && outageRoutes[c.route].gateway {
				return false
			}
		}
		return true
	})
	if readErr != nil {
		t.Fatal(readErr)
	}
	cacheEnd := tl.killed.Add(gatewayDecisionTTL + cacheSlack)
	var fromCache, deniedItself, afterCache int
	var lastCached time.Duration
	var wrong []string
	for _, c := range calls {
		if !outageRoutes[c.route].gateway {
			continue
		}
		g, ok := seen[c.id]
		switch {
		case !ok:
			wrong = append(wrong, "not in the gateway's log: "+c.describe(tl))
		case g.source == "stale_allow":
			wrong = append(wrong, "forwarded by stale-allow, which is off: "+c.describe(tl))
		case tl.phase(c) != phaseOutage:
		case g.forwarded && g.source != "cache":
			wrong = append(wrong, fmt.Sprintf("forwarded on a decision from %q while the PDP was dead: %s", g.source, c.describe(tl)))
		case g.forwarded && !c.start.Before(cacheEnd):
			wrong = append(wrong, fmt.Sprintf("forwarded on a cached decision %s after the kill, past the cache TTL %s + %s: %s",
				c.start.Sub(tl.killed).Round(time.Millisecond), gatewayDecisionTTL, cacheSlack, c.describe(tl)))
		case g.forwarded:
			fromCache++
			lastCached = max(lastCached, c.start.Sub(tl.killed))
		case g.denied && g.reasonCode == reason.PDPUnavailable:
			deniedItself++
			if !c.start.Before(cacheEnd) {
				afterCache++
			}
		default:
			wrong = append(wrong, fmt.Sprintf("neither forwarded nor denied with pdp_unavailable by the gateway (%+v): %s", g, c.describe(tl)))
		}
	}
	t.Logf("gateway during the outage: %d requests forwarded on a decision cached before the kill (the invoice service then denied them; the last one started %s after the kill), %d denied by the gateway itself (%d after the cache TTL)",
		fromCache, lastCached.Round(time.Millisecond), deniedItself, afterCache)
	for _, w := range wrong[:min(len(wrong), 10)] {
		t.Error(w)
	}
	if len(wrong) > 10 {
		t.Errorf("... and %d more", len(wrong)-10)
	}
	if afterCache < minOutageCalls {
		t.Errorf("%d gateway requests denied by the gateway itself after its cache TTL, want at least %d", afterCache, minOutageCalls)
	}
	opens, closes := breakerTransitions(logs)
	t.Logf("gateway PDP circuit breaker: opened %d times, closed %d times", opens-opensBefore, closes-closesBefore)
	if opens == opensBefore || closes == closesBefore {
		t.Errorf("the gateway's PDP circuit breaker opened %d and closed %d times, want both at least once", opens-opensBefore, closes-closesBefore)
	}
}

// gatewayRequests indexes the gateway's log lines by the client's request
// id: the "request" line of a forwarded request, the "denied" line of one
// it answered itself.
func gatewayRequests(logs []byte) map[string]gatewayRequest {
	out := map[string]gatewayRequest{}
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '{'); i > 0 {
			line = line[i:] // a stream header, if the log kept one
		}
		var e struct {
			Msg      string `json:"msg"`
			ClientID string `json:"client_request_id"`
			Source   string `json:"decision_source"`
			Reason   string `json:"reason_code"`
		}
		if json.Unmarshal(line, &e) != nil || e.ClientID == "" {
			continue
		}
		g := out[e.ClientID]
		switch e.Msg {
		case "request":
			g.forwarded, g.source = true, e.Source
		case "denied":
			g.denied, g.reasonCode = true, e.Reason
		}
		out[e.ClientID] = g
	}
	return out
}

// breakerTransitions counts the gateway's logged moves of its PDP circuit
// breaker to open and to closed.
func breakerTransitions(logs []byte) (opens, closes int) {
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '{'); i > 0 {
			line = line[i:]
		}
		var e struct {
			Msg string `json:"msg"`
			To  string `json:"to"`
		}
		if json.Unmarshal(line, &e) != nil || e.Msg != "pdp circuit breaker" {
			continue
		}
		switch e.To {
		case "open":
			opens++
		case "closed":
			closes++
		}
	}
	return opens, closes
}

// invoiceRow is one invoice as stored.
type invoiceRow struct{ customer, status string }

// invoiceRows reads every invoice of the invoice database, by id: the
// ground truth, not filtered by any policy.
func invoiceRows(ctx context.Context, dsn string) (map[string]invoiceRow, error) {
	out := map[string]invoiceRow{}
	err := stack.WithConn(ctx, dsn, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT id, customer, status FROM invoices")
		if err != nil {
			return err
		}
		var id string
		var r invoiceRow
		_, err = pgx.ForEachRow(rows, []any{&id, &r.customer, &r.status}, func() error {
			out[id] = r
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("invoice database: %w", err)
	}
	return out, nil
}

// checkInvoices: the database holds what it held before, unchanged, plus
// exactly the invoices whose CreateInvoice succeeded.
func checkInvoices(ctx context.Context, t *testing.T, dsn string, before map[string]invoiceRow, calls []outageCall, tag string) {
	t.Helper()
	after, err := invoiceRows(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(before)
	created := 0
	for _, c := range calls {
		if c.ok() && c.invoiceID != "" {
			want[c.invoiceID] = invoiceRow{customer: c.customer, status: "draft"}
			created++
		}
	}
	var diffs []string
	for id, w := range want {
		if got, ok := after[id]; !ok || got != w {
			diffs = append(diffs, fmt.Sprintf("invoice %s: want %+v, stored %+v (present: %t)", id, w, got, ok))
		}
	}
	for id, got := range after {
		if _, ok := want[id]; !ok {
			origin := "not created by a successful request"
			if strings.Contains(got.customer, tag) {
				origin = "created by a request of this test that was DENIED"
			}
			diffs = append(diffs, fmt.Sprintf("invoice %s (%q) is %s", id, got.customer, origin))
		}
	}
	slices.Sort(diffs)
	t.Logf("invoices: %d before, %d created by successful requests, %d after", len(before), created, len(after))
	for _, d := range diffs[:min(len(diffs), 10)] {
		t.Error(d)
	}
	if len(diffs) > 10 {
		t.Errorf("... and %d more differences", len(diffs)-10)
	}
}

func reportCalls(t *testing.T, what string, calls []outageCall, tl outageTimeline) {
	t.Helper()
	if len(calls) == 0 {
		return
	}
	t.Errorf("%d %s; the first ones:", len(calls), what)
	for _, c := range calls[:min(len(calls), 5)] {
		t.Errorf("  %s", c.describe(tl))
	}
}

// outageCaller is a client's access token and the identity it carries.
type outageCaller struct {
	token    string
	Subject  string `json:"sub"`
	Tenant   string `json:"tenant"`
	ClientID string `json:"client_id"`
}

// clientCaller gets a client_credentials access token, and reads (without
// verifying: the services do that) whom it names.
func clientCaller(ctx context.Context, t *testing.T, client *http.Client, id, secret string, scopes ...string) outageCaller {
	t.Helper()
	cfg := clientcredentials.Config{
		ClientID: id, ClientSecret: secret, Scopes: scopes,
		TokenURL: gh.IssuerURL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		t.Fatalf("token for %s: %v", id, err)
	}
	c := outageCaller{token: tok.AccessToken}
	parts := strings.Split(c.token, ".")
	if len(parts) != 3 {
		t.Fatalf("the access token of %s is not a JWT", id)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err == nil {
		err = json.Unmarshal(payload, &c)
	}
	if err != nil || c.Subject == "" || c.Tenant == "" || c.ClientID == "" {
		t.Fatalf("the access token of %s names no subject, tenant and client (%v)", id, err)
	}
	return c
}

// outageClient is one HTTP client for the load, keeping a connection per
// worker alive. Its timeout bounds a request that the outage would hang.
func outageClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}
