package supporttest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// PDP is a TEST DOUBLE of the PDP's DecisionService that mirrors the
// support rules of the issue-7 plan (see Decide), so tests exercise the
// support service against the decisions the real policy is specified to
// make. It records every request; Override replaces the answer for an
// action, Hide denies a resource; it can be slow or down.
type PDP struct {
	URL string

	mu        sync.Mutex
	requests  []*authzv1.CheckRequest
	overrides map[string]*authzv1.CheckResponse
	hidden    map[string]bool
	delay     time.Duration
	down      bool
}

var _ authzv1connect.DecisionServiceHandler = (*PDP)(nil)

// NewPDP serves a PDP over HTTP/1.1 and h2c until the test ends.
func NewPDP(t testing.TB) *PDP {
	t.Helper()
	p := &PDP{overrides: map[string]*authzv1.CheckResponse{}, hidden: map[string]bool{}}
	_, h := authzv1connect.NewDecisionServiceHandler(p)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
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

// Allow is an ALLOW decision.
func Allow() *authzv1.CheckResponse {
	return &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed, PolicyVersion: "test", DecisionId: "dec-allow"}
}

// Deny is a DENY decision with code.
func Deny(code string) *authzv1.CheckResponse {
	return &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: code, PolicyVersion: "test", DecisionId: "dec-deny"}
}

// Decide is the support policy of the issue-7 plan as
// policies/gatehouse/support implements it (without cross-tenant support
// grants), for resource type "support"; the first failing check decides:
//   - support:write: same tenant (tenant_mismatch), scope support:write
//     (insufficient_scope), nobody acting through the token
//     (actor_not_permitted), a user rather than a client acting for itself
//     (role_not_permitted), and the ticket's customer is the principal
//     (role_not_permitted);
//   - support:read: same tenant, a scope granting support:read (support:read
//     or support:write), then the role support_agent, or a user asking about
//     their own tickets (customer == subject; a collection without a
//     customer attribute means "my own", customer "" means everyone's);
//   - support:impersonate: same tenant, scope support:impersonate, role
//     support_agent (role_not_permitted), no actor chain
//     (reexchange_not_permitted), a ticket naming customer and status
//     (missing_attribute), and open (no_open_ticket);
//   - support:export: same tenant, scope invoice:read, and a role that may
//     read invoices or a client acting for itself.
//
// A check on one ticket (an id) without its customer is missing_attribute.
// Anything else is NOT_APPLICABLE.
func Decide(req *authzv1.CheckRequest) *authzv1.CheckResponse {
	p, r := req.GetPrincipal(), req.GetResource()
	notApplicable := &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: reason.NoApplicablePolicy}
	if r.GetType() != "support" {
		return notApplicable
	}
	attrs := r.GetAttributes()
	attr := func(k string) string { return attrs[k].GetStringValue() }
	has := func(k string) bool { _, ok := attrs[k]; return ok }
	hasAny := func(have []string, want ...string) bool {
		return slices.ContainsFunc(want, func(w string) bool { return slices.Contains(have, w) })
	}
	oneTicket := r.GetId() != ""
	ownToken := len(p.GetActorChain()) == 0
	clientForItself := p.GetClientId() != "" && p.GetSubject() == p.GetClientId() && ownToken
	ownTickets := !oneTicket && !has("customer") || has("customer") && attr("customer") == p.GetSubject()
	if p.GetTenant() == "" || r.GetTenant() != p.GetTenant() {
		return Deny(reason.TenantMismatch)
	}
	switch req.GetAction() {
	case "support:write":
		switch {
		case !hasAny(p.GetScopes(), "support:write"):
			return Deny(reason.InsufficientScope)
		case !ownToken:
			return Deny(reason.ActorNotPermitted)
		case clientForItself:
			return Deny(reason.RoleNotPermitted)
		case oneTicket && !has("customer"):
			return Deny(reason.MissingAttribute)
		case !ownTickets:
			return Deny(reason.RoleNotPermitted)
		}
		return Allow()
	case "support:read":
		switch {
		case !hasAny(p.GetScopes(), "support:read", "support:write"):
			return Deny(reason.InsufficientScope)
		case oneTicket && !has("customer"):
			return Deny(reason.MissingAttribute)
		case hasAny(p.GetRoles(), "support_agent"), !clientForItself && ownTickets:
			return Allow()
		}
		return Deny(reason.RoleNotPermitted)
	case "support:impersonate":
		switch {
		case !hasAny(p.GetScopes(), "support:impersonate"):
			return Deny(reason.InsufficientScope)
		case !hasAny(p.GetRoles(), "support_agent"):
			return Deny(reason.RoleNotPermitted)
		case !ownToken:
			return Deny(reason.ReexchangeNotPermitted)
		case oneTicket && (!has("customer") || !has("status")):
			return Deny(reason.MissingAttribute)
		case oneTicket && attr("status") != "open" && attr("status") != "closed":
			return Deny(reason.InvalidAttribute)
		case oneTicket && attr("status") != "open":
			return Deny(reason.NoOpenTicket)
		}
		return Allow()
	case "support:export":
		switch {
		case !hasAny(p.GetScopes(), "invoice:read"):
			return Deny(reason.InsufficientScope)
		// The catalog's roles that permit support:export (and invoice:read).
		case !hasAny(p.GetRoles(), "billing_viewer", "billing_approver", "support_agent") && !clientForItself:
			return Deny(reason.RoleNotPermitted)
		}
		return Allow()
	}
	return notApplicable
}

// Check implements authzv1connect.DecisionServiceHandler.
func (p *PDP) Check(ctx context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	p.mu.Lock()
	p.requests = append(p.requests, proto.CloneOf(req.Msg))
	override, ok := p.overrides[req.Msg.GetAction()]
	hidden := p.hidden[req.Msg.GetResource().GetId()]
	delay := p.delay
	p.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
	}
	switch {
	case hidden:
		return connect.NewResponse(Deny(reason.RoleNotPermitted)), nil
	case ok:
		return connect.NewResponse(proto.CloneOf(override)), nil
	}
	return connect.NewResponse(Decide(req.Msg)), nil
}

// BatchCheck implements authzv1connect.DecisionServiceHandler: each item is
// answered (and recorded) as Check would.
func (p *PDP) BatchCheck(ctx context.Context, req *connect.Request[authzv1.BatchCheckRequest]) (*connect.Response[authzv1.BatchCheckResponse], error) {
	results := make([]*authzv1.CheckResponse, 0, len(req.Msg.GetItems()))
	for _, item := range req.Msg.GetItems() {
		resp, err := p.Check(ctx, connect.NewRequest(item))
		if err != nil {
			return nil, err
		}
		results = append(results, resp.Msg)
	}
	return connect.NewResponse(&authzv1.BatchCheckResponse{Results: results}), nil
}

// Override answers every request for action with resp (nil: Decide again).
func (p *PDP) Override(action string, resp *authzv1.CheckResponse) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if resp == nil {
		delete(p.overrides, action)
		return
	}
	p.overrides[action] = resp
}

// Hide makes every check on the resource with id deny.
func (p *PDP) Hide(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hidden[id] = true
}

// Unhide undoes Hide.
func (p *PDP) Unhide(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.hidden, id)
}

// SetDelay makes every answer take d.
func (p *PDP) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// SetDown makes the PDP drop every connection.
func (p *PDP) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// Received returns the requests so far, in order, and forgets them.
func (p *PDP) Received() []*authzv1.CheckRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.requests
	p.requests = nil
	return out
}
