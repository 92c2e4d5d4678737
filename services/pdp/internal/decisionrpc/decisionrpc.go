// Package decisionrpc serves gatehouse.authz.v1.DecisionService over Connect,
// gRPC and gRPC-Web. It only translates between protobuf messages and
// package decision: every answer, INDETERMINATE included, is a response
// message, never a Connect error. connect-go itself rejects a body that is
// not a valid CheckRequest with invalid_argument.
package decisionrpc

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// MaxRequestBytes bounds a request body: a Check is a few hundred bytes, a
// full BatchCheck of MaxBatchItems well under this.
const MaxRequestBytes = 1 << 20

// MaxBatchItems is the largest BatchCheck accepted; a larger one is refused
// whole, before anything is decided.
const MaxBatchItems = 100

// Decider decides requests; *decision.Service implements it.
type Decider interface {
	Decide(ctx context.Context, req decision.Request) decision.Decision
}

// Handler implements authzv1connect.DecisionServiceHandler.
type Handler struct {
	decider Decider
}

var _ authzv1connect.DecisionServiceHandler = (*Handler)(nil)

// NewHandler returns a handler that answers with decider.
func NewHandler(decider Decider) *Handler {
	return &Handler{decider: decider}
}

// Check decides one request.
func (h *Handler) Check(ctx context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	d := h.decider.Decide(ctx, toRequest(req.Msg))
	return connect.NewResponse(toResponse(d)), nil
}

// BatchCheck decides every item exactly as Check would, in order; results
// are parallel to items. A bad item is an INDETERMINATE result at its own
// index; only an over-size batch is an error, and it decides nothing.
func (h *Handler) BatchCheck(ctx context.Context, req *connect.Request[authzv1.BatchCheckRequest]) (*connect.Response[authzv1.BatchCheckResponse], error) {
	items := req.Msg.GetItems()
	if len(items) > MaxBatchItems {
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.BatchTooLarge,
			fmt.Sprintf("a batch holds at most %d items; this one has %d", MaxBatchItems, len(items)))
	}
	results := make([]*authzv1.CheckResponse, len(items))
	for i, item := range items {
		results[i] = toResponse(h.decider.Decide(ctx, toRequest(item)))
	}
	return connect.NewResponse(&authzv1.BatchCheckResponse{Results: results}), nil
}

func toRequest(m *authzv1.CheckRequest) decision.Request {
	p := m.GetPrincipal()
	r := m.GetResource()
	c := m.GetContext()
	req := decision.Request{
		Principal: decision.Principal{
			Subject:  p.GetSubject(),
			Tenant:   p.GetTenant(),
			Roles:    p.GetRoles(),
			Scopes:   p.GetScopes(),
			ClientID: p.GetClientId(),
			ACR:      p.GetAcr(),
		},
		Action: m.GetAction(),
		Resource: decision.Resource{
			Type:   r.GetType(),
			ID:     r.GetId(),
			Tenant: r.GetTenant(),
		},
		Context: decision.RequestContext{
			RequestID: c.GetRequestId(),
			SourceIP:  c.GetSourceIp(),
		},
	}
	if t := p.GetAuthTime(); t != nil {
		req.Principal.AuthTime = t.AsTime()
	}
	if t := c.GetTime(); t != nil {
		req.Context.Time = t.AsTime()
	}
	for _, a := range p.GetActorChain() {
		req.Principal.ActorChain = append(req.Principal.ActorChain, decision.Actor{Subject: a.GetSubject(), ClientID: a.GetClientId()})
	}
	if attrs := r.GetAttributes(); len(attrs) > 0 {
		req.Resource.Attributes = make(map[string]any, len(attrs))
		for k, v := range attrs {
			req.Resource.Attributes[k] = attributeValue(v)
		}
	}
	return req
}

// attributeValue returns the Go value of v, or nil when no kind is set
// (which decision.Normalize rejects).
func attributeValue(v *authzv1.AttributeValue) any {
	switch k := v.GetKind().(type) {
	case *authzv1.AttributeValue_StringValue:
		return k.StringValue
	case *authzv1.AttributeValue_IntValue:
		return k.IntValue
	case *authzv1.AttributeValue_BoolValue:
		return k.BoolValue
	case *authzv1.AttributeValue_DoubleValue:
		return k.DoubleValue
	default:
		return nil
	}
}

func toResponse(d decision.Decision) *authzv1.CheckResponse {
	resp := &authzv1.CheckResponse{
		Decision:       toState(d.State),
		ReasonCode:     d.ReasonCode,
		Message:        d.Message,
		PolicyVersion:  d.PolicyVersion,
		DecisionId:     d.ID,
		RequiredScopes: d.RequiredScopes,
	}
	for _, o := range d.Obligations {
		resp.Obligations = append(resp.Obligations, &authzv1.Obligation{Type: o.Type, Params: o.Params})
	}
	return resp
}

func toState(s decision.State) authzv1.Decision {
	switch s {
	case decision.Allow:
		return authzv1.Decision_DECISION_ALLOW
	case decision.Deny:
		return authzv1.Decision_DECISION_DENY
	case decision.NotApplicable:
		return authzv1.Decision_DECISION_NOT_APPLICABLE
	default:
		return authzv1.Decision_DECISION_INDETERMINATE
	}
}
