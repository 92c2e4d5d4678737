// Package decision is the PDP's domain: the typed input of an authorization
// question, its validation and normalization, and the Service that turns a
// question into exactly one of four decisions. It fails closed: only an
// explicit ALLOW from the policy permits, and every problem (invalid input, a
// failed or slow evaluation, an unexpected policy answer) becomes
// INDETERMINATE with a stable reason code.
package decision

import (
	"context"
	"time"
)

// State is the outcome of a decision. Only Allow permits; every other state
// denies. The zero value is not a decision and never permits.
type State int

// The decision states of the Decision contract in DESIGN.md.
const (
	// Unspecified is the zero value; the Service never returns it.
	Unspecified State = iota
	// Allow: a policy covers the request and permits it.
	Allow
	// Deny: a policy covers the request and refuses it.
	Deny
	// NotApplicable: no policy covers the action or resource type.
	NotApplicable
	// Indeterminate: the input was invalid or evaluation failed.
	Indeterminate
)

// String returns the state's name as it appears in logs.
func (s State) String() string {
	switch s {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case NotApplicable:
		return "not_applicable"
	case Indeterminate:
		return "indeterminate"
	default:
		return "unspecified"
	}
}

// Request is one authorization question: may Principal perform Action on
// Resource? Normalize validates and normalizes it before evaluation.
type Request struct {
	Principal Principal
	// Action is "<resource_type>:<verb>", e.g. "invoice:read".
	Action   string
	Resource Resource
	Context  RequestContext
}

// Principal is who asks: a user (possibly acting through a client) or a
// client acting on its own behalf (Subject == ClientID, RFC 9068 section 2.2).
type Principal struct {
	Subject  string
	Tenant   string
	Roles    []string
	Scopes   []string
	ClientID string
	ACR      string
	// AuthTime is when the user authenticated; zero when unknown.
	AuthTime time.Time
	// ActorChain lists the acting parties, outermost (current) actor first.
	ActorChain []Actor
}

// Actor is one party in an RFC 8693 delegation chain.
type Actor struct {
	Subject  string
	ClientID string
}

// Resource is what the action is performed on.
type Resource struct {
	// Type must equal the action's prefix.
	Type string
	// ID is empty for collection-level checks (list, create).
	ID string
	// Tenant owns the resource; Normalize fills it with the principal's
	// tenant when empty (collection-level checks).
	Tenant string
	// Attributes are typed: each value is a string, int64, bool or float64.
	Attributes map[string]any
}

// RequestContext describes the request being authorized.
type RequestContext struct {
	RequestID string
	// Time is when the request was made; zero when unknown.
	Time     time.Time
	SourceIP string
}

// Obligation is something the caller must satisfy or perform, such as
// step_up with params acr and max_age.
type Obligation struct {
	Type   string
	Params map[string]string
}

// Decision is the answer to a Request.
type Decision struct {
	State State
	// ReasonCode is a stable snake_case code (libs/enforce/reason).
	ReasonCode string
	// Message is for developers; it never holds policy source or attribute values.
	Message string
	// RequiredScopes lists the scopes the action needs, for insufficient_scope.
	RequiredScopes []string
	Obligations    []Obligation
	// PolicyVersion is the revision of the policy bundle that decided.
	PolicyVersion string
	// ID identifies the decision in logs and the audit trail.
	ID string
	// TimeIndependent is an Evaluator's word that the decision does not
	// depend on the request time (Context.Time): the same question at any
	// other time gets the same answer, so the Cache keeps it beyond the
	// second it was asked in. An Evaluator that cannot tell leaves it
	// false, and the decision is cached for its second only.
	TimeIndependent bool
}

// Evaluator evaluates a normalized Request against a policy. Evaluate
// returns a decision with State Allow, Deny or NotApplicable and its
// PolicyVersion set, or an error when the policy could not give one (the
// Service turns that into Indeterminate). It must honour ctx's deadline.
type Evaluator interface {
	Evaluate(ctx context.Context, req Request) (Decision, error)
	// PolicyVersion is the revision of the loaded policy.
	PolicyVersion() string
}

// TimeReadSkipper is an Evaluator for which finding out whether a decision
// depends on the request time (Decision.TimeIndependent) is extra work. The
// Service asks it to skip that for a question whose decision the cache has
// already found to depend on the time: it does not change with the time
// (without reading the time an evaluation follows the same path at any
// time), so only the first evaluation of a question pays for it.
type TimeReadSkipper interface {
	// EvaluateWithoutTimeReads is Evaluate with TimeIndependent false.
	EvaluateWithoutTimeReads(ctx context.Context, req Request) (Decision, error)
}
