package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// The regression corpus (see policies/testdata/README.md) and the bundle
// it is replayed against.
const (
	corpusDir = "../../../../policies/testdata/decisions"
	policyDir = "../../../../policies"
)

// scenario is one recorded decision.
type scenario struct {
	name        string
	description string
	request     *authzv1.CheckRequest
	// want has decision, reason_code, required_scopes and obligations;
	// message, policy_version and decision_id are not recorded.
	want *authzv1.CheckResponse
}

var scenarioName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// loadCorpus reads every scenario file, refusing a malformed one.
func loadCorpus(t *testing.T) []scenario {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(corpusDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no scenarios in %s", corpusDir)
	}
	out := make([]scenario, 0, len(paths))
	for _, path := range paths {
		sc, err := readScenario(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		out = append(out, sc)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// readScenario reads a file holding one object whose one member, named
// like the file, is the scenario: {"<name>": {"description": ...,
// "request": CheckRequest, "want": CheckResponse}}. Keying the scenario by
// its name keeps every file's data apart when `opa test policies/` loads
// them all as data.
func readScenario(path string) (scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return scenario{}, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return scenario{}, err
	}
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	if !scenarioName.MatchString(name) {
		return scenario{}, errors.New("the file name must be <name>.json, name a lower-case identifier")
	}
	if len(doc) != 1 || doc[name] == nil {
		return scenario{}, fmt.Errorf("want one member, %q (the file's name)", name)
	}
	var raw struct {
		Description string          `json:"description"`
		Request     json.RawMessage `json:"request"`
		Want        json.RawMessage `json:"want"`
	}
	dec := json.NewDecoder(bytes.NewReader(doc[name]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return scenario{}, err
	}
	sc := scenario{name: name, description: raw.Description, request: &authzv1.CheckRequest{}, want: &authzv1.CheckResponse{}}
	switch {
	case strings.TrimSpace(raw.Description) == "":
		return scenario{}, errors.New("no description")
	case raw.Request == nil || raw.Want == nil:
		return scenario{}, errors.New("want both request and want")
	}
	if err := protojson.Unmarshal(raw.Request, sc.request); err != nil {
		return scenario{}, fmt.Errorf("request: %v", err)
	}
	if err := protojson.Unmarshal(raw.Want, sc.want); err != nil {
		return scenario{}, fmt.Errorf("want: %v", err)
	}
	switch w := sc.want; {
	case w.GetDecision() == authzv1.Decision_DECISION_UNSPECIFIED || w.GetReasonCode() == "":
		return scenario{}, errors.New("want needs a decision and a reason_code")
	case w.GetMessage() != "" || w.GetPolicyVersion() != "" || w.GetDecisionId() != "":
		return scenario{}, errors.New("want records no message, policy_version or decision_id: they change without the decision changing")
	}
	return sc, nil
}

// newHandler serves DecisionService from the repository's bundle the way
// the PDP does: decisionrpc (protobuf to decision.Request), decision.Service
// (normalization, evaluation), the policy engine.
func newHandler(t *testing.T, b *bundle.Bundle) *decisionrpc.Handler {
	t.Helper()
	engine, err := policy.Compile(t.Context(), b)
	if err != nil {
		t.Fatalf("compile %s: %v", b.Revision, err)
	}
	svc, err := decision.NewService(decision.Options{
		Router:  decision.Fixed{Evaluator: engine},
		Audit:   audit.NewSyncEmitter(auditmemory.New()),
		Timeout: 10 * time.Second, // generous: -race on two cores
	})
	if err != nil {
		t.Fatal(err)
	}
	return decisionrpc.NewHandler(svc)
}

// repositoryBundle is the policies/ directory as a bundle. It is signed
// afresh with a test key: the corpus checks what the policies decide, not
// whether the committed .signatures.json is current.
func repositoryBundle(t *testing.T) *bundle.Bundle {
	t.Helper()
	return bundletest.Open(t, policyDir)
}

// replay decides sc with h and returns how the answer differs from the
// recording ("" when it does not).
func replay(t *testing.T, h *decisionrpc.Handler, sc scenario, revision string) string {
	t.Helper()
	resp, err := h.Check(t.Context(), connect.NewRequest(proto.CloneOf(sc.request)))
	if err != nil {
		t.Fatalf("%s: Check: %v", sc.name, err)
	}
	return compare(resp.Msg, sc.want, revision)
}

// compare checks got against the recording want, and that got names the
// policy version and a decision id.
func compare(got, want *authzv1.CheckResponse, revision string) string {
	var problems []string
	if got.GetPolicyVersion() != revision {
		problems = append(problems, fmt.Sprintf("policy_version %q, want %q", got.GetPolicyVersion(), revision))
	}
	if got.GetDecisionId() == "" {
		problems = append(problems, "no decision_id")
	}
	recorded := proto.CloneOf(got)
	recorded.Message, recorded.PolicyVersion, recorded.DecisionId = "", "", ""
	if !proto.Equal(recorded, want) {
		problems = append(problems, fmt.Sprintf("decided %s\nrecorded %s", protojson.Format(recorded), protojson.Format(want)))
	}
	return strings.Join(problems, "; ")
}

// TestCorpus replays every recorded decision against the repository's
// bundle. A failure is a behaviour change: fix the policy, or, when the
// change is intended, update the scenario in the same commit.
func TestCorpus(t *testing.T) {
	t.Parallel()
	corpus := loadCorpus(t)
	b := repositoryBundle(t)
	h := newHandler(t, b)
	for _, sc := range corpus {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			if diff := replay(t, h, sc, b.Revision); diff != "" {
				t.Errorf("%s (%s):\n%s", sc.name, sc.description, diff)
			}
		})
	}
}

// TestCorpusBatch decides the corpus with BatchCheck, which must answer
// each item exactly as Check does.
func TestCorpusBatch(t *testing.T) {
	t.Parallel()
	corpus := loadCorpus(t)
	b := repositoryBundle(t)
	h := newHandler(t, b)
	for chunk := range slices.Chunk(corpus, decisionrpc.MaxBatchItems) {
		items := make([]*authzv1.CheckRequest, len(chunk))
		for i, sc := range chunk {
			items[i] = proto.CloneOf(sc.request)
		}
		resp, err := h.BatchCheck(t.Context(), connect.NewRequest(&authzv1.BatchCheckRequest{Items: items}))
		if err != nil {
			t.Fatalf("BatchCheck: %v", err)
		}
		if len(resp.Msg.GetResults()) != len(chunk) {
			t.Fatalf("BatchCheck answered %d of %d items", len(resp.Msg.GetResults()), len(chunk))
		}
		for i, sc := range chunk {
			if diff := compare(resp.Msg.GetResults()[i], sc.want, b.Revision); diff != "" {
				t.Errorf("%s in a batch:\n%s", sc.name, diff)
			}
		}
	}
}

// TestCorpusCoversEveryOutcome keeps the corpus from shrinking below its
// purpose: every decision state, every reason code the policy and the
// PDP's input validation produce, and every obligation type the policy
// attaches is recorded at least once.
func TestCorpusCoversEveryOutcome(t *testing.T) {
	t.Parallel()
	states := map[authzv1.Decision]bool{}
	codes := map[string]bool{}
	obligations := map[string]bool{}
	for _, sc := range loadCorpus(t) {
		states[sc.want.GetDecision()] = true
		codes[sc.want.GetReasonCode()] = true
		for _, o := range sc.want.GetObligations() {
			obligations[o.GetType()] = true
		}
	}
	for _, s := range []authzv1.Decision{authzv1.Decision_DECISION_ALLOW, authzv1.Decision_DECISION_DENY,
		authzv1.Decision_DECISION_NOT_APPLICABLE, authzv1.Decision_DECISION_INDETERMINATE} {
		if !states[s] {
			t.Errorf("no scenario records %s", s)
		}
	}
	for _, c := range []string{reason.Allowed, reason.TenantMismatch, reason.InsufficientScope, reason.RoleNotPermitted,
		reason.NoApplicablePolicy, reason.MissingAttribute, reason.InvalidAttribute, reason.StepUpRequired,
		reason.TicketRequired, reason.NoOpenTicket, reason.LifetimeExceeded, reason.ScopeNotPermitted,
		reason.ReexchangeNotPermitted, reason.ActorNotPermitted, reason.ActorChainTooLong} {
		if !codes[c] {
			t.Errorf("no scenario records reason code %s", c)
		}
	}
	if !obligations[enforce.ObligationStepUp] {
		t.Errorf("no scenario records a %s obligation", enforce.ObligationStepUp)
	}
}

// TestCorpusCatchesRegressions replays the corpus against a policy that
// allows everything: exactly the scenarios the policy denies or does not
// cover must fail (invalid input never reaches a policy).
func TestCorpusCatchesRegressions(t *testing.T) {
	t.Parallel()
	corpus := loadCorpus(t)
	b := bundletest.Policy(t, "allow-everything",
		`{"decision": "allow", "reason_code": "allowed", "message": "", "required_scopes": [], "obligations": []}`)
	h := newHandler(t, b)
	for _, sc := range corpus {
		diff := replay(t, h, sc, b.Revision)
		switch sc.want.GetDecision() {
		case authzv1.Decision_DECISION_DENY, authzv1.Decision_DECISION_NOT_APPLICABLE:
			if diff == "" {
				t.Errorf("%s: an allow-everything policy passes this scenario, which records %s", sc.name, sc.want.GetDecision())
			}
		default:
			if diff != "" {
				t.Errorf("%s: %s", sc.name, diff)
			}
		}
	}
}

// recordingEvaluator passes evaluations through and keeps the last
// decision, which carries what the handler's answer does not: whether the
// engine found it independent of the request time.
type recordingEvaluator struct {
	decision.Evaluator
	last decision.Decision
}

func (r *recordingEvaluator) Evaluate(ctx context.Context, req decision.Request) (decision.Decision, error) {
	d, err := r.Evaluator.Evaluate(ctx, req)
	r.last = d
	return d, err
}

// TestCorpusTimeIndependence checks the engine's claim the decision cache
// relies on: every scenario it decides independently of the request time
// is decided the same at any other time, and without one. The scenarios
// whose answer the time changes (the approval step-up) must be found
// dependent.
func TestCorpusTimeIndependence(t *testing.T) {
	t.Parallel()
	engine, err := policy.Compile(t.Context(), repositoryBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingEvaluator{Evaluator: engine}
	svc, err := decision.NewService(decision.Options{
		Router:  decision.Fixed{Evaluator: rec},
		Audit:   audit.NewSyncEmitter(auditmemory.New()),
		Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := decisionrpc.NewHandler(svc) // one request at a time: rec is not locked
	ask := func(sc scenario, at *timestamppb.Timestamp) (*authzv1.CheckResponse, decision.Decision) {
		t.Helper()
		req := proto.CloneOf(sc.request)
		if req.Context == nil {
			req.Context = &authzv1.RequestContext{}
		}
		req.Context.Time = at
		rec.last = decision.Decision{}
		resp, err := h.Check(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("%s: Check: %v", sc.name, err)
		}
		got := resp.Msg
		got.Message, got.DecisionId = "", ""
		return got, rec.last
	}
	mustDepend := map[string]bool{
		"alice_approves_large_invoice_after_fresh_mfa": true,
		"alice_approves_large_invoice_with_stale_mfa":  true,
	}
	independent := 0
	for _, sc := range loadCorpus(t) {
		recorded := sc.request.GetContext().GetTime()
		first, d := ask(sc, recorded)
		if d.State == decision.Unspecified {
			continue // refused before any policy saw it (invalid input)
		}
		if !d.TimeIndependent {
			delete(mustDepend, sc.name)
			continue
		}
		independent++
		if mustDepend[sc.name] {
			t.Errorf("%s: decided independently of the time, but its answer depends on it", sc.name)
		}
		base := recorded.AsTime()
		if recorded == nil {
			base = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
		}
		for _, shift := range []time.Duration{time.Second, time.Hour, 24 * time.Hour, -24 * time.Hour, 400 * 24 * time.Hour} {
			if got, _ := ask(sc, timestamppb.New(base.Add(shift))); !proto.Equal(got, first) {
				t.Errorf("%s: time-independent, yet %s later it is decided %s, not %s", sc.name, shift, protojson.Format(got), protojson.Format(first))
			}
		}
		if got, _ := ask(sc, nil); !proto.Equal(got, first) {
			t.Errorf("%s: time-independent, yet without a time it is decided %s, not %s", sc.name, protojson.Format(got), protojson.Format(first))
		}
	}
	if len(mustDepend) > 0 {
		t.Errorf("not found dependent on the time: %v", mustDepend)
	}
	if independent == 0 {
		t.Error("no scenario was decided independently of the time")
	}
	t.Logf("%d scenarios decided independently of the time", independent)
}
