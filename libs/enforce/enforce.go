// Package enforce is the enforcement SDK: the thin client through which the
// gateway and the services ask the PDP, and the mapping of its answers onto
// Gatehouse's error model. It holds no policy logic and denies by default:
// only an explicit ALLOW from the PDP permits.
package enforce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// ErrPDPUnavailable means the PDP gave no usable answer in time. The request
// must be denied (Connect code Unavailable), never passed.
var ErrPDPUnavailable = errors.New("enforce: pdp unavailable")

// DefaultTimeout bounds one decision when the caller sets none.
const DefaultTimeout = 250 * time.Millisecond

// Decision is the PDP's answer, reduced to what enforcement needs.
type Decision struct {
	State          authzv1.Decision
	ReasonCode     string
	Message        string
	RequiredScopes []string
	Obligations    []*authzv1.Obligation
	PolicyVersion  string
	DecisionID     string
}

// Allowed reports whether the decision permits: only an ALLOW without
// obligations does. This SDK fulfils no obligation yet, so an ALLOW that
// carries one is not a permit (fail closed, never half-enforced); Denied
// explains it (a step_up becomes an RFC 9470 challenge).
func (d Decision) Allowed() bool {
	return d.State == authzv1.Decision_DECISION_ALLOW && len(d.Obligations) == 0
}

// ObligationStepUp is the obligation type asking the caller to re-authenticate
// with params "acr" (required acr values) and "max_age" (seconds).
const ObligationStepUp = "step_up"

// stepUp returns the decision's step_up obligation, if any.
func (d Decision) stepUp() (*authzv1.Obligation, bool) {
	for _, o := range d.Obligations {
		if o.GetType() == ObligationStepUp {
			return o, true
		}
	}
	return nil, false
}

// Client asks the PDP for decisions with a bounded timeout.
type Client struct {
	pdp     authzv1connect.DecisionServiceClient
	timeout time.Duration
}

// NewClient returns a Client that calls pdp, giving each decision at most
// timeout (DefaultTimeout when zero).
func NewClient(pdp authzv1connect.DecisionServiceClient, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Client{pdp: pdp, timeout: timeout}
}

// Check asks the PDP to decide req. A transport failure, a timeout, or an
// answer without a decision returns ErrPDPUnavailable and a zero (denying)
// Decision.
func (c *Client) Check(ctx context.Context, req *authzv1.CheckRequest) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.pdp.Check(ctx, connect.NewRequest(req))
	if err != nil {
		return Decision{ReasonCode: reason.PDPUnavailable}, fmt.Errorf("%w: %v", ErrPDPUnavailable, err)
	}
	m := resp.Msg
	if m.GetDecision() == authzv1.Decision_DECISION_UNSPECIFIED {
		return Decision{ReasonCode: reason.PDPUnavailable}, fmt.Errorf("%w: answer without a decision", ErrPDPUnavailable)
	}
	return fromResponse(m), nil
}

// BatchCheck asks the PDP to decide reqs in one call; decisions[i] answers
// reqs[i]. A transport failure, a timeout, or an answer that is not parallel
// to the request returns ErrPDPUnavailable and no decisions: deny them all.
// A result without a decision is a zero Decision, which does not permit.
func (c *Client) BatchCheck(ctx context.Context, reqs []*authzv1.CheckRequest) ([]Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.pdp.BatchCheck(ctx, connect.NewRequest(&authzv1.BatchCheckRequest{Items: reqs}))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPDPUnavailable, err)
	}
	results := resp.Msg.GetResults()
	if len(results) != len(reqs) {
		return nil, fmt.Errorf("%w: %d results for %d items", ErrPDPUnavailable, len(results), len(reqs))
	}
	decisions := make([]Decision, len(results))
	for i, m := range results {
		decisions[i] = fromResponse(m)
	}
	return decisions, nil
}

func fromResponse(m *authzv1.CheckResponse) Decision {
	return Decision{
		State:          m.GetDecision(),
		ReasonCode:     m.GetReasonCode(),
		Message:        m.GetMessage(),
		RequiredScopes: m.GetRequiredScopes(),
		Obligations:    m.GetObligations(),
		PolicyVersion:  m.GetPolicyVersion(),
		DecisionID:     m.GetDecisionId(),
	}
}

// Principal converts verified token claims into the PDP's principal.
func Principal(c *accesstoken.Claims) *authzv1.Principal {
	p := &authzv1.Principal{
		Subject:  c.Subject,
		Tenant:   c.Tenant,
		Roles:    c.Roles,
		Scopes:   c.Scopes,
		ClientId: c.ClientID,
		Acr:      c.ACR,
	}
	if !c.AuthTime.IsZero() {
		p.AuthTime = timestamppb.New(c.AuthTime)
	}
	for a := c.Actor; a != nil; a = a.Actor {
		p.ActorChain = append(p.ActorChain, &authzv1.Actor{Subject: a.Subject, ClientId: a.ClientID})
	}
	return p
}
