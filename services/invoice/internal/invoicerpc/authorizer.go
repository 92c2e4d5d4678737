package invoicerpc

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

// Authorizer is the invoice.Authorizer that asks the PDP through the
// enforcement SDK. It holds no policy: only an explicit ALLOW permits; a
// denial becomes permission_denied (with the decision's reason code) and a
// PDP that does not answer in time becomes unavailable. The principal comes
// from the verified claims in the context, the request context from the
// Handler that serves the call.
type Authorizer struct {
	pdp    *enforce.Client
	logger *slog.Logger
}

var _ invoice.Authorizer = (*Authorizer)(nil)

// NewAuthorizer returns an Authorizer that asks pdp.
func NewAuthorizer(pdp *enforce.Client, logger *slog.Logger) *Authorizer {
	return &Authorizer{pdp: pdp, logger: logger}
}

// Authorize implements invoice.Authorizer. Its errors are *connect.Error.
func (a *Authorizer) Authorize(ctx context.Context, c invoice.Check) error {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	info, ok := requestFrom(ctx)
	if !ok {
		info = newRequestInfo(nil, "")
	}
	attrs, err := attributeValues(c.Resource.Attributes)
	if err != nil {
		// A wiring bug, not the caller's fault; still denied.
		a.logger.ErrorContext(ctx, "cannot build authorization request: denying", slog.Any("error", err))
		return enforce.Error(ctx, connect.CodeInternal, reason.InvalidAttribute, "the request could not be authorized")
	}
	decision, err := a.pdp.Check(ctx, &authzv1.CheckRequest{
		Principal: enforce.Principal(claims),
		Action:    c.Action,
		Resource: &authzv1.Resource{
			Type:       c.Resource.Type,
			Id:         c.Resource.ID,
			Tenant:     c.Resource.Tenant,
			Attributes: attrs,
		},
		Context: &authzv1.RequestContext{
			RequestId: info.id,
			Time:      timestamppb.New(info.time),
			SourceIp:  info.sourceIP,
		},
	})
	log := a.logger.With(
		slog.String("request_id", info.id),
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
		return enforce.Denied(ctx, decision)
	}
	log.DebugContext(ctx, "allowed")
	return nil
}

// Filter implements invoice.Authorizer with one BatchCheck. Only an ALLOW
// permits an item; a PDP that does not answer means unavailable for all.
func (a *Authorizer) Filter(ctx context.Context, checks []invoice.Check) ([]bool, error) {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return nil, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	info, ok := requestFrom(ctx)
	if !ok {
		info = newRequestInfo(nil, "")
	}
	principal := enforce.Principal(claims)
	reqs := make([]*authzv1.CheckRequest, len(checks))
	for i, c := range checks {
		attrs, err := attributeValues(c.Resource.Attributes)
		if err != nil {
			a.logger.ErrorContext(ctx, "cannot build authorization request: denying", slog.Any("error", err))
			return nil, enforce.Error(ctx, connect.CodeInternal, reason.InvalidAttribute, "the request could not be authorized")
		}
		reqs[i] = &authzv1.CheckRequest{
			Principal: principal,
			Action:    c.Action,
			Resource:  &authzv1.Resource{Type: c.Resource.Type, Id: c.Resource.ID, Tenant: c.Resource.Tenant, Attributes: attrs},
			Context:   &authzv1.RequestContext{RequestId: info.id, Time: timestamppb.New(info.time), SourceIp: info.sourceIP},
		}
	}
	decisions, err := a.pdp.BatchCheck(ctx, reqs)
	if err != nil {
		a.logger.ErrorContext(ctx, "pdp unavailable: denying", slog.String("request_id", info.id), slog.Any("error", err))
		return nil, enforce.Unavailable(ctx, reason.PDPUnavailable)
	}
	permitted := make([]bool, len(decisions))
	denied := 0
	for i, d := range decisions {
		permitted[i] = d.Allowed()
		if !permitted[i] {
			denied++
		}
	}
	a.logger.DebugContext(ctx, "filtered", slog.String("request_id", info.id), slog.Int("items", len(decisions)), slog.Int("denied", denied))
	return permitted, nil
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
		case float64:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_DoubleValue{DoubleValue: v}}
		default:
			return nil, fmt.Errorf("attribute %q: unsupported type %T", k, v)
		}
	}
	return out, nil
}
