package app_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// decisionKey selects a row of testPDP's decision table.
type decisionKey struct {
	action string
	tenant string // the principal's tenant
}

// testPDP is a TEST DOUBLE of the PDP's DecisionService, not a policy
// engine: it answers from an explicit decision table keyed by action and
// principal tenant (a missing row is NOT_APPLICABLE) and records every
// request, so tests assert what the invoice service asks. It can also be
// slow (to exceed the service's PDP timeout) or down (connections reset).
type testPDP struct {
	URL string

	mu       sync.Mutex
	table    map[decisionKey]*authzv1.CheckResponse
	requests []*authzv1.CheckRequest
	delay    time.Duration
	down     bool
	hidden   map[string]bool
}

var _ authzv1connect.DecisionServiceHandler = (*testPDP)(nil)

func allow() *authzv1.CheckResponse {
	return &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed,
		PolicyVersion: "test", DecisionId: "dec-allow"}
}

func deny(code string, requiredScopes ...string) *authzv1.CheckResponse {
	return &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: code,
		PolicyVersion: "test", DecisionId: "dec-deny", RequiredScopes: requiredScopes}
}

// stepUp is the PDP's answer when approving needs a recent MFA sign-in
// (policies/gatehouse/invoice: acr mfa, max_age 300 seconds).
func stepUp() *authzv1.CheckResponse {
	return &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: reason.StepUpRequired,
		Message: "a stronger or more recent authentication is required", PolicyVersion: "test", DecisionId: "dec-step-up",
		Obligations: []*authzv1.Obligation{{Type: "step_up", Params: map[string]string{"acr": "mfa", "max_age": "300"}}}}
}

// defaultTable permits reading, writing and approving invoices in both
// demo tenants.
func defaultTable() map[decisionKey]*authzv1.CheckResponse {
	return map[decisionKey]*authzv1.CheckResponse{
		{"invoice:read", "acme"}:      allow(),
		{"invoice:write", "acme"}:     allow(),
		{"invoice:approve", "acme"}:   allow(),
		{"invoice:read", "globex"}:    allow(),
		{"invoice:write", "globex"}:   allow(),
		{"invoice:approve", "globex"}: allow(),
	}
}

// newTestPDP serves a testPDP over HTTP/1.1 and h2c until the test ends.
func newTestPDP(t *testing.T) *testPDP {
	t.Helper()
	p := &testPDP{table: defaultTable(), hidden: map[string]bool{}}
	_, h := authzv1connect.NewDecisionServiceHandler(p)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.isDown() {
			panic(http.ErrAbortHandler) // drop the connection, like a crashed PDP
		}
		h.ServeHTTP(w, r)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Check implements authzv1connect.DecisionServiceHandler.
func (p *testPDP) Check(ctx context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	p.mu.Lock()
	p.requests = append(p.requests, proto.CloneOf(req.Msg))
	resp, ok := p.table[decisionKey{req.Msg.GetAction(), req.Msg.GetPrincipal().GetTenant()}]
	delay := p.delay
	p.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
	}
	if !ok {
		resp = &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: reason.NoApplicablePolicy}
	}
	return connect.NewResponse(proto.CloneOf(resp)), nil
}

// BatchCheck implements authzv1connect.DecisionServiceHandler: each item is
// answered (and recorded) as Check would, unless its resource id is in
// hidden, which is denied.
func (p *testPDP) BatchCheck(ctx context.Context, req *connect.Request[authzv1.BatchCheckRequest]) (*connect.Response[authzv1.BatchCheckResponse], error) {
	results := make([]*authzv1.CheckResponse, 0, len(req.Msg.GetItems()))
	for _, item := range req.Msg.GetItems() {
		resp, err := p.Check(ctx, connect.NewRequest(item))
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		if p.hidden[item.GetResource().GetId()] {
			resp.Msg = deny(reason.RoleNotPermitted)
		}
		p.mu.Unlock()
		results = append(results, resp.Msg)
	}
	return connect.NewResponse(&authzv1.BatchCheckResponse{Results: results}), nil
}

// hide makes BatchCheck deny the invoice with id.
func (p *testPDP) hide(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hidden[id] = true
}

// set replaces one row of the decision table.
func (p *testPDP) set(action, tenant string, resp *authzv1.CheckResponse) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.table[decisionKey{action, tenant}] = resp
}

func (p *testPDP) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

func (p *testPDP) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

func (p *testPDP) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// received returns the requests so far, in order, and forgets them.
func (p *testPDP) received() []*authzv1.CheckRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.requests
	p.requests = nil
	return out
}
