package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/e2e/policybundle"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// The policy change of TestPolicyChangeMidTrafficOnReplica.
const (
	// policySourceDir is the repository's policy bundle; the candidate is a
	// copy of it with three edits (candidatePolicyDir).
	policySourceDir  = "../../policies"
	policySigningKey = "../../deploy/policy-signing/demo.key.pem"
	// policyConverge is how soon every replica serves a rollout change:
	// "every replica follows within a second" (docs/policy-rollouts.md).
	policyConverge = time.Second
	// policySettle is how long the traffic goes on after the bound, at
	// each step, so that a late flip back would be seen.
	policySettle = time.Second
	// shadowHold is how long the traffic runs while pdp2 has loaded the
	// candidate in shadow (it must not decide anything).
	shadowHold = time.Second
	// checkWorkers call Check, batchWorkers BatchCheck with one item per
	// input, all at pdp2, each at most once per checkEvery.
	checkWorkers = 3
	batchWorkers = 1
	checkEvery   = 2 * time.Millisecond
	// minPerStep is the least number of decisions of each input by each
	// revision on each side of each switch.
	minPerStep = 20
	// tenantMismatchMessage is the message the repository's invoice policy
	// gives for tenant_mismatch; the candidate words it differently.
	tenantMismatchMessage = "the invoice belongs to another tenant"
	candidateMismatchText = "the invoice belongs to another tenant (candidate policy)"
)

// policyOutcome is what a decision says, as far as the test compares it.
type policyOutcome struct {
	state  authzv1.Decision
	reason string
	// message is compared only when set in the expectation.
	message string
	// obligations are "type{k=v ...}", sorted.
	obligations string
}

func (o policyOutcome) String() string {
	s := fmt.Sprintf("%s %s", strings.TrimPrefix(o.state.String(), "DECISION_"), o.reason)
	if o.message != "" {
		s += fmt.Sprintf(" %q", o.message)
	}
	if o.obligations != "" {
		s += " " + o.obligations
	}
	return s
}

// policyInput is one question of the traffic and how each revision answers
// it. Each differs between the revisions through a different part of the
// bundle, so a decision from a mix of the two (new data with old Rego, one
// data file but not the other, a new version stamped on an old evaluation)
// contradicts both expectations on at least one input.
type policyInput struct {
	name      string
	principal *authzv1.Principal
	action    string
	tenant    string
	attrs     map[string]*authzv1.AttributeValue
	// old and new are the answers of the active and the candidate revision.
	old, new policyOutcome
}

var (
	allowed      = policyOutcome{state: authzv1.Decision_DECISION_ALLOW, reason: "allowed"}
	policyInputs = []policyInput{
		{
			// gatehouse/data.json: the candidate takes invoice:read away
			// from billing_viewer.
			name:      "bob (billing_viewer) reads an acme invoice",
			principal: &authzv1.Principal{Subject: "bob", Tenant: "acme", ClientId: "invoice-web", Roles: []string{"billing_viewer"}, Scopes: []string{"invoice:read"}},
			action:    "invoice:read", tenant: "acme",
			old: allowed,
			new: policyOutcome{state: authzv1.Decision_DECISION_DENY, reason: "role_not_permitted"},
		},
		{
			// gatehouse/invoice/data.json: the candidate asks for step-up
			// above 10.00 instead of 10,000.00.
			name:      "alice approves 500.00 without MFA",
			principal: &authzv1.Principal{Subject: "alice", Tenant: "acme", ClientId: "invoice-web", Roles: []string{"billing_approver"}, Scopes: []string{"invoice:approve"}},
			action:    "invoice:approve", tenant: "acme",
			attrs: map[string]*authzv1.AttributeValue{"amount_cents": {Kind: &authzv1.AttributeValue_IntValue{IntValue: 50000}}},
			old:   allowed,
			new:   policyOutcome{state: authzv1.Decision_DECISION_DENY, reason: "step_up_required", obligations: "step_up{acr=mfa max_age=300}"},
		},
		{
			// gatehouse/invoice/invoice.rego: the candidate words the
			// tenant_mismatch message differently.
			name:      "carol (globex) reads an acme invoice",
			principal: &authzv1.Principal{Subject: "carol", Tenant: "globex", ClientId: "invoice-web", Roles: []string{"billing_approver"}, Scopes: []string{"invoice:read"}},
			action:    "invoice:read", tenant: "acme",
			old: policyOutcome{state: authzv1.Decision_DECISION_DENY, reason: "tenant_mismatch", message: tenantMismatchMessage},
			new: policyOutcome{state: authzv1.Decision_DECISION_DENY, reason: "tenant_mismatch", message: candidateMismatchText},
		},
		{
			// Unchanged: a control.
			name:      "alice reads an acme invoice",
			principal: &authzv1.Principal{Subject: "alice", Tenant: "acme", ClientId: "invoice-web", Roles: []string{"billing_approver"}, Scopes: []string{"invoice:read"}},
			action:    "invoice:read", tenant: "acme",
			old: allowed, new: allowed,
		},
	}
)

// request builds the CheckRequest of in for resource id.
func (in policyInput) request(id string) *authzv1.CheckRequest {
	return &authzv1.CheckRequest{
		Principal: in.principal,
		Action:    in.action,
		Resource:  &authzv1.Resource{Type: "invoice", Id: id, Tenant: in.tenant, Attributes: in.attrs},
		Context:   &authzv1.RequestContext{RequestId: "e2e-policy-change"},
	}
}

// TestPolicyChangeMidTrafficOnReplica changes the active policy of the PDP
// fleet while pdp2 decides a steady stream of Check and BatchCheck
// requests, through the other replica ("pdp"): pdp2 only learns of each
// change from the shared database (a Postgres notification, or its
// re-read every 500 ms), loads and compiles the bundles and swaps them in,
// all under traffic. The rollout e2e (e2e/rollout) checks each step's
// convergence with the traffic stopped; this test checks what the callers
// see while the swap happens.
//
// The candidate is the repository's bundle with three edits, each in a
// different file (see policyInputs): a role permission in data.json, the
// step-up threshold in invoice/data.json and a message in invoice.rego. The
// traffic asks four questions, each answered differently by the two
// revisions through one of the edits (one is a control). Half the requests
// name a fresh invoice id, so the PDP's decision cache cannot answer them
// and the policy is evaluated during the swap.
//
// Steps: push the candidate; shadow it (pdp2 loads and compiles it while
// deciding, and the active revision must still decide everything); promote
// it; roll it back (which also restores the stack for the other tests).
// Checked on every decision: no RPC error; the policy_version is exactly
// the old or the new revision; the decision is the one that revision gives
// for that input (state, reason code, obligations and, for the Rego edit,
// message), so a half-loaded bundle or INDETERMINATE from the reload
// fails. Checked on each switch: nothing the new revision decided before
// the change was sent; a switch point after which only the new revision
// decides (no flip back); every request started a second (policyConverge)
// after the change's RPC returned is decided by the new revision. In a
// BatchCheck the revision changes at most once, in order. The switch
// latencies are printed.
func TestPolicyChangeMidTrafficOnReplica(t *testing.T) {
	// About 15 s: the CLI build (a few seconds when cached), then about 6 s
	// of traffic.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bundle, candidate := candidateBundle(ctx, t)
	admin, pdp2Admin := policyAdmin(ctx, t, "pdp"), policyAdmin(ctx, t, "pdp2")
	pdp2URL, err := gh.URL(ctx, "pdp2")
	if err != nil {
		t.Fatal(err)
	}
	decisions := authzv1connect.NewDecisionServiceClient(policyClient(), pdp2URL)

	start, err := admin.GetRollout(ctx, connect.NewRequest(&authzv1.GetRolloutRequest{}))
	if err != nil {
		t.Fatalf("GetRollout: %v", err)
	}
	old := start.Msg.GetRollout().GetActive()
	if want := manifestRevisionOf(t, policySourceDir); old != want || start.Msg.GetRollout().GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE {
		t.Fatalf("rollout before the test = %v, want %s active and no candidate", start.Msg.GetRollout(), want)
	}
	// Whatever happens, the stack decides with the old revision again for
	// the tests that follow.
	t.Cleanup(func() {
		if err := restorePolicy(context.WithoutCancel(ctx), admin, []authzv1connect.PolicyAdminServiceClient{admin, pdp2Admin}, old); err != nil {
			t.Errorf("restore the policy %s: %v", old, err)
		}
	})
	if _, err := admin.PushBundle(ctx, connect.NewRequest(&authzv1.PushBundleRequest{Bundle: bundle})); err != nil {
		t.Fatalf("PushBundle %s: %v", candidate, err)
	}
	versions := map[string]func(policyInput) policyOutcome{
		old:       func(in policyInput) policyOutcome { return in.old },
		candidate: func(in policyInput) policyOutcome { return in.new },
	}

	// The workers run until stopLoad; each writes only its own slot.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var decided atomic.Int64
	slots := make([][]policyCall, checkWorkers+batchWorkers)
	for w := range slots {
		batch := w >= checkWorkers
		wg.Go(func() {
			tick := time.NewTicker(checkEvery)
			defer tick.Stop()
			for n := 0; ; n++ {
				calls := policyTraffic(ctx, decisions, w, n, batch)
				slots[w] = append(slots[w], calls...)
				decided.Add(int64(len(calls)))
				if !nextTick(ctx, stop, tick) {
					return
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	// The steps. One that fails ends the load, and what was observed is
	// still checked below.
	var tl policyTimeline
	stepErr := func() error {
		if err := waitFor(ctx, "decisions before the change", func() bool { return decided.Load() >= 200 }); err != nil {
			return err
		}
		tl.shadowSent = time.Now()
		shadow, err := admin.StartShadow(ctx, connect.NewRequest(&authzv1.StartShadowRequest{Revision: candidate}))
		if err != nil {
			return fmt.Errorf("StartShadow %s: %w", candidate, err)
		}
		if err := awaitServed(ctx, pdp2Admin, shadow.Msg.GetRollout().GetGeneration()); err != nil {
			return err
		}
		tl.shadowServed = time.Now()
		if err := waitFor(ctx, "decisions in shadow", func() bool { return time.Since(tl.shadowServed) >= shadowHold }); err != nil {
			return err
		}
		tl.promoteSent = time.Now()
		if _, err := admin.Promote(ctx, connect.NewRequest(&authzv1.PromoteRequest{ExpectedCandidate: candidate})); err != nil {
			return fmt.Errorf("Promote %s: %w", candidate, err)
		}
		tl.promoted = time.Now()
		if err := waitFor(ctx, "decisions after the promotion", func() bool { return time.Since(tl.promoted) >= policyConverge+policySettle }); err != nil {
			return err
		}
		tl.rollbackSent = time.Now()
		if _, err := admin.Rollback(ctx, connect.NewRequest(&authzv1.RollbackRequest{})); err != nil {
			return fmt.Errorf("Rollback: %w", err)
		}
		tl.rolledBack = time.Now()
		return waitFor(ctx, "decisions after the rollback", func() bool { return time.Since(tl.rolledBack) >= policyConverge+policySettle })
	}()
	stopLoad()

	var calls []policyCall
	for _, s := range slots {
		calls = append(calls, s...)
	}
	slices.SortFunc(calls, func(a, b policyCall) int { return a.start.Compare(b.start) })
	t.Logf("%d decisions at pdp2 in %s (%.0f/s)", len(calls), tl.span(calls).Round(time.Millisecond), float64(len(calls))/tl.span(calls).Seconds())
	if stepErr == nil {
		t.Logf("pdp2 served the shadow %s after StartShadow was sent; Promote took %s, Rollback %s",
			tl.shadowServed.Sub(tl.shadowSent).Round(time.Millisecond), tl.promoted.Sub(tl.promoteSent).Round(time.Millisecond),
			tl.rolledBack.Sub(tl.rollbackSent).Round(time.Millisecond))
	}

	// Every decision is whole: from the old or the new revision, and
	// exactly what that revision answers.
	var wrong []string
	for _, c := range calls {
		want, known := versions[c.version]
		switch {
		case c.err != nil:
			wrong = append(wrong, fmt.Sprintf("%s: %v", c.describe(tl), c.err))
		case !known:
			wrong = append(wrong, fmt.Sprintf("%s: decided by %q, neither %s nor %s", c.describe(tl), c.version, old, candidate))
		case !c.got.matches(want(policyInputs[c.input])):
			wrong = append(wrong, fmt.Sprintf("%s: %s, but %s answers %s (a decision of neither revision)", c.describe(tl), c.got, c.version, want(policyInputs[c.input])))
		}
	}
	reportWrong(t, "decisions that are not a whole revision's answer", wrong)
	if stepErr != nil {
		t.Fatal(stepErr)
	}

	tl.checkSwitches(t, calls, old, candidate)
	checkBatches(t, calls, tl)

	// The rollback restored the state the other tests expect.
	after, err := admin.GetRollout(ctx, connect.NewRequest(&authzv1.GetRolloutRequest{}))
	if err != nil {
		t.Fatalf("GetRollout: %v", err)
	}
	if r := after.Msg.GetRollout(); r.GetActive() != old || r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE {
		t.Errorf("rollout after the rollback = %v, want %s active and no candidate", r, old)
	}
}

// policyCall is one decision of the traffic (one item of a BatchCheck).
type policyCall struct {
	worker, seq int
	// batch marks an item of a BatchCheck, at position item.
	batch bool
	item  int
	input int
	// start and end bound the RPC.
	start, end time.Time
	version    string
	got        policyOutcome
	err        error
}

func (c policyCall) describe(tl policyTimeline) string {
	rpc := "Check"
	if c.batch {
		rpc = fmt.Sprintf("BatchCheck item %d", c.item)
	}
	return fmt.Sprintf("%s %q (worker %d #%d), started %s", rpc, policyInputs[c.input].name, c.worker, c.seq, tl.when(c.start))
}

// matches compares a decision with an expectation (the message only when
// the expectation names one).
func (o policyOutcome) matches(want policyOutcome) bool {
	return o.state == want.state && o.reason == want.reason && o.obligations == want.obligations &&
		(want.message == "" || o.message == want.message)
}

func outcomeOf(r *authzv1.CheckResponse) policyOutcome {
	var obligations []string
	for _, o := range r.GetObligations() {
		var params []string
		for _, k := range slices.Sorted(maps.Keys(o.GetParams())) {
			params = append(params, k+"="+o.GetParams()[k])
		}
		obligations = append(obligations, fmt.Sprintf("%s{%s}", o.GetType(), strings.Join(params, " ")))
	}
	slices.Sort(obligations)
	return policyOutcome{state: r.GetDecision(), reason: r.GetReasonCode(), message: r.GetMessage(), obligations: strings.Join(obligations, ",")}
}

// policyTraffic makes request n of worker w: a Check of one input (in
// turn), or a BatchCheck of every input. Even requests name a fresh invoice
// (a decision cache miss), odd ones the same invoice every time.
func policyTraffic(ctx context.Context, pdp authzv1connect.DecisionServiceClient, w, n int, batch bool) []policyCall {
	id := "inv_e2e_policy_change"
	if n%2 == 0 {
		id = fmt.Sprintf("inv_e2e_%d_%d", w, n)
	}
	if !batch {
		c := policyCall{worker: w, seq: n, input: n % len(policyInputs), start: time.Now()}
		resp, err := pdp.Check(ctx, connect.NewRequest(policyInputs[c.input].request(id)))
		c.end = time.Now()
		if err != nil {
			c.err = err
		} else {
			c.version, c.got = resp.Msg.GetPolicyVersion(), outcomeOf(resp.Msg)
		}
		return []policyCall{c}
	}
	req := &authzv1.BatchCheckRequest{}
	for _, in := range policyInputs {
		req.Items = append(req.Items, in.request(id))
	}
	start := time.Now()
	resp, err := pdp.BatchCheck(ctx, connect.NewRequest(req))
	end := time.Now()
	calls := make([]policyCall, len(policyInputs))
	for i := range calls {
		calls[i] = policyCall{worker: w, seq: n, batch: true, item: i, input: i, start: start, end: end, err: err}
		switch {
		case err != nil:
		case len(resp.Msg.GetResults()) != len(policyInputs):
			calls[i].err = fmt.Errorf("BatchCheck answered %d results for %d items", len(resp.Msg.GetResults()), len(policyInputs))
		default:
			r := resp.Msg.GetResults()[i]
			calls[i].version, calls[i].got = r.GetPolicyVersion(), outcomeOf(r)
		}
	}
	return calls
}

// policyTimeline holds when each change was sent and when its RPC
// returned (the replica that took it serves it by then).
type policyTimeline struct {
	shadowSent, shadowServed time.Time
	promoteSent, promoted    time.Time
	rollbackSent, rolledBack time.Time
}

func (tl policyTimeline) span(calls []policyCall) time.Duration {
	if len(calls) == 0 {
		return time.Nanosecond
	}
	return calls[len(calls)-1].end.Sub(calls[0].start)
}

func (tl policyTimeline) when(at time.Time) string {
	switch {
	case tl.promoteSent.IsZero() || at.Before(tl.promoteSent):
		return "before the promotion"
	case tl.rollbackSent.IsZero() || at.Before(tl.rollbackSent):
		return relative(at, tl.promoted, "Promote returned")
	}
	return relative(at, tl.rolledBack, "Rollback returned")
}

// relative says how long before or after event at is.
func relative(at, event time.Time, name string) string {
	d := at.Sub(event).Round(time.Millisecond)
	if d < 0 {
		return fmt.Sprintf("%s before %s", -d, name)
	}
	return fmt.Sprintf("%s after %s", d, name)
}

// checkSwitches checks both switches, promotion (old to candidate) and
// rollback (candidate to old), on the decisions sorted by start.
func (tl policyTimeline) checkSwitches(t *testing.T, calls []policyCall, old, candidate string) {
	t.Helper()
	// Before the promotion was sent, in shadow too, only the old revision
	// decides.
	var wrong []string
	shadowed := 0
	for _, c := range calls {
		if !c.end.Before(tl.promoteSent) {
			continue
		}
		if c.version != old {
			wrong = append(wrong, fmt.Sprintf("%s: decided by %s before the promotion was sent", c.describe(tl), c.version))
		}
		if c.start.After(tl.shadowServed) {
			shadowed++
		}
	}
	reportWrong(t, "decisions by another revision than the active one before the promotion", wrong)
	t.Logf("before the promotion: %d decisions while pdp2 served the candidate in shadow, all by %s", shadowed, old)
	if shadowed < minPerStep*len(policyInputs) {
		t.Errorf("%d decisions in shadow, want at least %d", shadowed, minPerStep*len(policyInputs))
	}
	// The promotion: decisions that ended before the rollback was sent.
	var promoteWindow []policyCall
	for _, c := range calls {
		if !c.end.Before(tl.promoteSent) && c.end.Before(tl.rollbackSent) {
			promoteWindow = append(promoteWindow, c)
		}
	}
	tl.checkSwitch(t, "promotion", promoteWindow, old, candidate, tl.promoteSent, tl.promoted)
	var rollbackWindow []policyCall
	for _, c := range calls {
		if !c.end.Before(tl.rollbackSent) {
			rollbackWindow = append(rollbackWindow, c)
		}
	}
	tl.checkSwitch(t, "rollback", rollbackWindow, candidate, old, tl.rollbackSent, tl.rolledBack)
}

// checkSwitch checks one switch from revision from to revision to, sent at
// sent and returned at returned, on the decisions of its window (sorted by
// start): a switch point (the end of the first decision by to), after
// which to decides every request; every request that started
// policyConverge after returned is decided by to; enough decisions of every
// input by from before and by to after.
func (tl policyTimeline) checkSwitch(t *testing.T, step string, window []policyCall, from, to string, sent, returned time.Time) {
	t.Helper()
	var switchAt time.Time
	for _, c := range window {
		if c.version == to && (switchAt.IsZero() || c.end.Before(switchAt)) {
			switchAt = c.end
		}
	}
	if switchAt.IsZero() {
		t.Errorf("%s: pdp2 never decided with %s", step, to)
		return
	}
	var wrong []string
	var lastFrom time.Time
	before := make([]int, len(policyInputs))
	after := make([]int, len(policyInputs))
	for _, c := range window {
		switch {
		case c.version == from:
			lastFrom = c.start
			before[c.input]++
		case c.version == to && c.start.After(switchAt):
			after[c.input]++
		}
		if c.version == from && c.start.After(switchAt) {
			wrong = append(wrong, fmt.Sprintf("%s: decided by %s again after pdp2 had decided with %s (%s after the switch)",
				c.describe(tl), from, to, c.start.Sub(switchAt).Round(time.Microsecond)))
		}
		if c.version == from && !c.start.Before(returned.Add(policyConverge)) {
			wrong = append(wrong, fmt.Sprintf("%s: still decided by %s, over %s after the %s returned", c.describe(tl), from, policyConverge, step))
		}
	}
	t.Logf("%s: pdp2 first decided with %s %s after the change was sent (%s after its RPC returned); the last decision by %s started %s after the RPC returned; %d decisions by %s before the switch, %d by %s after",
		step, to, switchAt.Sub(sent).Round(time.Millisecond), switchAt.Sub(returned).Round(time.Millisecond),
		from, lastFrom.Sub(returned).Round(time.Millisecond), sum(before), from, sum(after), to)
	reportWrong(t, step+": decisions past the switch by the revision it replaced", wrong)
	for i, in := range policyInputs {
		if after[i] < minPerStep {
			t.Errorf("%s: %d decisions of %q by %s after the switch, want at least %d", step, after[i], in.name, to, minPerStep)
		}
	}
}

// checkBatches: within one BatchCheck the revision changes at most once.
// Items are decided in order, each from the snapshot of its moment, so a
// batch that straddles a switch is legitimate; one that goes back is not.
func checkBatches(t *testing.T, calls []policyCall, tl policyTimeline) {
	t.Helper()
	type key struct{ worker, seq int }
	batches := map[key][]policyCall{}
	for _, c := range calls {
		if c.batch && c.err == nil {
			k := key{c.worker, c.seq}
			batches[k] = append(batches[k], c)
		}
	}
	straddled := 0
	var wrong []string
	for _, items := range batches {
		slices.SortFunc(items, func(a, b policyCall) int { return a.item - b.item })
		changes := 0
		for i := 1; i < len(items); i++ {
			if items[i].version != items[i-1].version {
				changes++
			}
		}
		switch {
		case changes == 1:
			straddled++
		case changes > 1:
			wrong = append(wrong, fmt.Sprintf("%s: the revision changed %d times within one batch", items[0].describe(tl), changes))
		}
	}
	t.Logf("%d BatchChecks, %d of them straddling a switch (decided partly by each revision, in order)", len(batches), straddled)
	if len(batches) < minPerStep {
		t.Errorf("%d BatchChecks, want at least %d", len(batches), minPerStep)
	}
	reportWrong(t, "batches decided back and forth", wrong)
}

func reportWrong(t *testing.T, what string, wrong []string) {
	t.Helper()
	if len(wrong) == 0 {
		return
	}
	t.Errorf("%d %s; the first ones:", len(wrong), what)
	for _, w := range wrong[:min(len(wrong), 5)] {
		t.Errorf("  %s", w)
	}
}

func sum(ns []int) int {
	total := 0
	for _, n := range ns {
		total += n
	}
	return total
}

// awaitServed waits until a replica serves generation (GetRollout's
// served_generation), for at most policyConverge.
func awaitServed(ctx context.Context, replica authzv1connect.PolicyAdminServiceClient, generation int64) error {
	ctx, cancel := context.WithTimeout(ctx, policyConverge)
	defer cancel()
	var served int64
	var last error
	err := waitFor(ctx, fmt.Sprintf("a replica serving generation %d", generation), func() bool {
		resp, err := replica.GetRollout(ctx, connect.NewRequest(&authzv1.GetRolloutRequest{}))
		if err != nil {
			last = err
			return false
		}
		served = resp.Msg.GetServedGeneration()
		return served >= generation
	})
	if err != nil {
		return fmt.Errorf("%w (serves %d; last error: %v)", err, served, last)
	}
	return nil
}

// restorePolicy brings the rollout back to revision active with no
// candidate: it withdraws a staged candidate, and rolls back a promotion
// of anything else. Then it waits until every replica serves that state.
func restorePolicy(ctx context.Context, admin authzv1connect.PolicyAdminServiceClient, replicas []authzv1connect.PolicyAdminServiceClient, active string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for range 3 {
		resp, err := admin.GetRollout(ctx, connect.NewRequest(&authzv1.GetRolloutRequest{}))
		if err != nil {
			return err
		}
		r := resp.Msg.GetRollout()
		if r.GetActive() == active && r.GetMode() == authzv1.RolloutMode_ROLLOUT_MODE_NONE {
			for _, replica := range replicas {
				if err := awaitServed(ctx, replica, r.GetGeneration()); err != nil {
					return err
				}
			}
			return nil
		}
		if r.GetMode() == authzv1.RolloutMode_ROLLOUT_MODE_NONE && r.GetPrevious() != active {
			return fmt.Errorf("%s is active and rolling back would make %q active", r.GetActive(), r.GetPrevious())
		}
		if _, err := admin.Rollback(ctx, connect.NewRequest(&authzv1.RollbackRequest{})); err != nil {
			return err
		}
	}
	return errors.New("still not restored after 3 rollbacks")
}

// policyAdmin is a PolicyAdminService client of one replica, as the demo
// seed's policy-admin client.
func policyAdmin(ctx context.Context, t *testing.T, replica string) authzv1connect.PolicyAdminServiceClient {
	t.Helper()
	base, err := gh.URL(ctx, replica)
	if err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{
		ClientID: "policy-admin", ClientSecret: "policy-admin-secret", Scopes: []string{"policy:admin"},
		TokenURL: gh.IssuerURL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader,
	}
	// The token source outlives this call: it is the test's, not ctx's.
	tokenCtx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, policyClient())
	return authzv1connect.NewPolicyAdminServiceClient(oauth2.NewClient(tokenCtx, cc.TokenSource(tokenCtx)), base)
}

// policyClient keeps a connection per worker alive.
func policyClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.MaxIdleConnsPerHost = 2 * (checkWorkers + batchWorkers)
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

// candidateBundle builds the gatehouse CLI from this checkout and with it
// the signed candidate bundle (candidatePolicyDir), and returns the bundle
// and its revision.
func candidateBundle(ctx context.Context, t *testing.T) ([]byte, string) {
	t.Helper()
	tmp := t.TempDir()
	cli := filepath.Join(tmp, "gatehouse")
	build := exec.CommandContext(ctx, "go", "build", "-o", cli, "./cmd/gatehouse")
	build.Dir = filepath.Join("..", "..", "services", "pdp")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the gatehouse CLI: %v\n%s", err, out)
	}
	// A revision of this run: pushing one revision twice with other
	// content is refused, and a stack may run this test more than once.
	revision := fmt.Sprintf("e2e-faults-policy-change-%d", time.Now().UnixNano())
	dir := candidatePolicyDir(t, revision)
	out := filepath.Join(tmp, "candidate.tar.gz")
	cmd := exec.CommandContext(ctx, cli, "policy", "build", "-dir", dir, "-signing-key", policySigningKey, "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gatehouse policy build: %v\n%s", err, msg)
	}
	bundle, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bundle, revision
}

// candidatePolicyDir copies the repository's policies (without tests, test
// data and signature) into a temporary directory as revision, with the
// three edits policyInputs tell apart: billing_viewer loses invoice:read;
// the approval step-up threshold drops from 1,000,000 to 1,000 cents; the
// tenant_mismatch message changes. Each edit must apply.
func candidatePolicyDir(t *testing.T, revision string) string {
	t.Helper()
	dst := t.TempDir()
	if err := policybundle.Copy(policySourceDir, dst); err != nil {
		t.Fatal(err)
	}
	editPolicyJSON(t, filepath.Join(dst, ".manifest"), func(m map[string]any) error {
		m["revision"] = revision
		return nil
	})
	editPolicyJSON(t, filepath.Join(dst, "gatehouse", "data.json"), func(m map[string]any) error {
		role, ok := m["roles"].(map[string]any)["billing_viewer"].(map[string]any)
		if !ok {
			return errors.New("no role billing_viewer")
		}
		perms, _ := role["permissions"].([]any)
		kept := slices.DeleteFunc(slices.Clone(perms), func(p any) bool { return p == "invoice:read" })
		if len(kept) == len(perms) {
			return errors.New("billing_viewer does not have invoice:read")
		}
		role["permissions"] = kept
		return nil
	})
	editPolicyJSON(t, filepath.Join(dst, "gatehouse", "invoice", "data.json"), func(m map[string]any) error {
		stepUp, ok := m["approval_step_up"].(map[string]any)
		if !ok || stepUp["amount_cents_above"] != float64(1000000) {
			return fmt.Errorf("approval_step_up = %v, want amount_cents_above 1000000", m["approval_step_up"])
		}
		stepUp["amount_cents_above"] = 1000
		return nil
	})
	rego := filepath.Join(dst, "gatehouse", "invoice", "invoice.rego")
	src, err := os.ReadFile(rego)
	if err != nil {
		t.Fatal(err)
	}
	quoted := `"` + tenantMismatchMessage + `"`
	if n := strings.Count(string(src), quoted); n != 1 {
		t.Fatalf("invoice.rego holds the message %s %d times, want once", quoted, n)
	}
	src = []byte(strings.Replace(string(src), quoted, `"`+candidateMismatchText+`"`, 1))
	if err := os.WriteFile(rego, src, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

func editPolicyJSON(t *testing.T, path string, edit func(map[string]any) error) {
	t.Helper()
	if err := policybundle.EditJSON(path, edit); err != nil {
		t.Fatal(err)
	}
}

func manifestRevisionOf(t *testing.T, dir string) string {
	t.Helper()
	rev, err := policybundle.Revision(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}
