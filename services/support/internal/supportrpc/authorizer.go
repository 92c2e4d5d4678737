package supportrpc

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// Authorizer is the support.Authorizer that asks the PDP through the
// enforcement SDK. It holds no policy: only an explicit ALLOW permits; a
// denial becomes permission_denied (with the decision's reason code) and
// a PDP that does not answer in time becomes unavailable. The principal
// comes from the verified claims in the context, the request context from
// the Handler that serves the call.
type Authorizer struct {
	pdp    *enforce.Client
	logger *slog.Logger
}

var _ support.Authorizer = (*Authorizer)(nil)

// NewAuthorizer returns an Authorizer that asks pdp.
func NewAuthorizer(pdp *enforce.Client, logger *slog.Logger) *Authorizer {
	return &Authorizer{pdp: pdp, logger: logger}
}

// deniedError is a PDP denial: the edge error to answer with, and a match
// for support.ErrDenied (so the service can tell "no" from "no answer").
type deniedError struct{ edge *connect.Error }

func (e *deniedError) Error() string        { return e.edge.Error() }
func (e *deniedError) Unwrap() error        { return e.edge }
func (e *deniedError) Is(target error) bool { return target == support.ErrDenied }

// Authorize implements support.Authorizer. Its errors are, or wrap,
// *connect.Error.
func (a *Authorizer) Authorize(ctx context.Context, c support.Check) error {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	req, err := a.checkRequest(ctx, claims.Subject, enforce.Principal(claims), c)
	if err != nil {
		return err
	}
	decision, err := a.pdp.Check(ctx, req)
	log := a.logger.With(
		slog.String("request_id", req.GetContext().GetRequestId()),
		slog.String("subject", claims.Subject),
		slog.String("tenant", claims.Tenant),
		slog.String("action", c.Action),
		slog.String("resource_id", c.Resource.ID),
	)
	if err != nil {
		log.ErrorContext(ctx, "pdp unavailable: denying", slog.Any("error", err))
		return enforce.Unavailable(ctx, reason.PDPUnavailable)
	}
	log = log.With(slog.String("reason_code", decision.ReasonCode), slog.String("decision_id", decision.DecisionID),
		slog.String("policy_version", decision.PolicyVersion))
	if !decision.Allowed() {
		log.InfoContext(ctx, "denied", slog.String("decision", decision.State.String()))
		return &deniedError{edge: enforce.Denied(ctx, decision)}
	}
	log.DebugContext(ctx, "allowed")
	return nil
}

// Filter implements support.Authorizer with one BatchCheck. Only an ALLOW
// permits an item; a PDP that does not answer means unavailable for all.
func (a *Authorizer) Filter(ctx context.Context, checks []support.Check) ([]bool, error) {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return nil, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	principal := enforce.Principal(claims)
	reqs := make([]*authzv1.CheckRequest, len(checks))
	for i, c := range checks {
		req, err := a.checkRequest(ctx, claims.Subject, principal, c)
		if err != nil {
			return nil, err
		}
		reqs[i] = req
	}
	decisions, err := a.pdp.BatchCheck(ctx, reqs)
	if err != nil {
		a.logger.ErrorContext(ctx, "pdp unavailable: denying", slog.String("request_id", requestOf(ctx).id), slog.Any("error", err))
		return nil, enforce.Unavailable(ctx, reason.PDPUnavailable)
	}
	permitted := make([]bool, len(decisions))
	for i, d := range decisions {
		permitted[i] = d.Allowed()
	}
	return permitted, nil
}

// checkRequest is the PDP's question for c.
func (a *Authorizer) checkRequest(ctx context.Context, subject string, principal *authzv1.Principal, c support.Check) (*authzv1.CheckRequest, error) {
	attrs, err := attributeValues(c.Resource.Attributes)
	if err != nil {
		// A wiring bug, not the caller's fault; still denied.
		a.logger.ErrorContext(ctx, "cannot build authorization request: denying", slog.String("subject", subject), slog.Any("error", err))
		return nil, enforce.Error(ctx, connect.CodeInternal, reason.InvalidAttribute, "the request could not be authorized")
	}
	info := requestOf(ctx)
	return &authzv1.CheckRequest{
		Principal: principal,
		Action:    c.Action,
		Resource:  &authzv1.Resource{Type: c.Resource.Type, Id: c.Resource.ID, Tenant: c.Resource.Tenant, Attributes: attrs},
		Context:   &authzv1.RequestContext{RequestId: info.id, Time: timestamppb.New(info.time), SourceIp: info.sourceIP},
	}, nil
}

// attributeValues converts domain attributes to the PDP's typed values.
func attributeValues(in map[string]any) (map[string]*authzv1.AttributeValue, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]*authzv1.AttributeValue, len(in))
	for k, v := range in {
		switch v := v.(type) {
		case string:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: v}}
		case int64:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: v}}
		case bool:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: v}}
		default:
			return nil, fmt.Errorf("attribute %q: unsupported type %T", k, v)
		}
	}
	return out, nil
}
