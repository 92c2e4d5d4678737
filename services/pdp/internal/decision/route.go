package decision

import "github.com/gatehouse/gatehouse/libs/audit"

// Selection is what decides one request under the current rollout.
type Selection struct {
	// Decider decides the request.
	Decider Evaluator
	// Other is, while a rollout runs (shadow or canary), the evaluator to
	// compare with off the caller's path; nil when there is no candidate.
	Other Evaluator
	// DeciderIsCandidate is set when the candidate decides (the principal
	// is in the canary share); Other is then the active bundle.
	DeciderIsCandidate bool
}

// Router picks the evaluators for a principal from one consistent policy
// state: both evaluators of a Selection belong to the same rollout
// generation, and a principal in the canary share (a stable hash of tenant
// and subject) always gets the candidate as Decider.
type Router interface {
	Select(p Principal) Selection
}

// ShadowJob asks for a request to be evaluated by the other bundle of a
// rollout after it was decided.
type ShadowJob struct {
	// Request is the normalized request that was decided.
	Request Request
	// Decision is the answer the caller got (ID and PolicyVersion set).
	Decision Decision
	// Selection is what decided it; Selection.Other is to be evaluated.
	Selection Selection
	// Event is the decision's audit event; the Shadower records it with
	// its Shadow field filled in once Other has answered.
	Event audit.Event
}

// Shadower evaluates the other bundle of a rollout off the caller's path
// and records the comparison and the decision's audit event.
type Shadower interface {
	// Submit queues job without blocking. It reports false when the job
	// was not taken (queue full or closed); the caller then records the
	// decision's audit event itself, without a shadow result.
	Submit(job ShadowJob) bool
}
