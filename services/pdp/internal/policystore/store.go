// Package policystore keeps the PDP's policy state, shared by every replica:
// the signed bundles that were pushed (immutable, with their history), the
// rollout state (which revision is active, which is the candidate and in
// which mode), the log of rollout changes, and the shadow comparisons
// between candidate and active bundles that the rollout report summarizes.
//
// Implementations: postgres (production) and memory (demo and unit tests);
// both pass the storetest suite.
package policystore

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Errors of a Store.
var (
	// ErrNotFound: no bundle with that revision.
	ErrNotFound = errors.New("policystore: not found")
	// ErrRevisionConflict: a bundle with that revision is stored with
	// other content (another digest). Revisions are immutable.
	ErrRevisionConflict = errors.New("policystore: revision already stored with other content")
	// ErrStaleGeneration: the rollout changed since the generation the
	// caller read; nothing was written.
	ErrStaleGeneration = errors.New("policystore: rollout changed concurrently")
	// ErrInvalid wraps a rejected argument; nothing was written.
	ErrInvalid = errors.New("policystore: invalid argument")
)

// Limits the stores enforce.
const (
	// MaxBundleBytes bounds a stored tarball.
	MaxBundleBytes = 4 << 20
	// MaxHistoryLimit bounds History's limit.
	MaxHistoryLimit = 500
	// MaxSamplesPerGroup bounds Report's samples per group.
	MaxSamplesPerGroup = 20
)

// Bundle is a stored, signed policy bundle. The PDP verified its signature
// before storing it and verifies it again whenever it loads it.
type Bundle struct {
	// Revision is the bundle manifest's revision: its policy version.
	Revision string
	// Digest is the lowercase hex SHA-256 of Tarball.
	Digest string
	// Tarball is the gzipped OPA bundle, .signatures.json included.
	Tarball []byte
	// SigningKeyID is the key id its signature names.
	SigningKeyID string
	// UploadedBy is the subject that pushed it.
	UploadedBy string
	// UploadedAt is set by the store when the bundle is first stored.
	UploadedAt time.Time
}

// BundleInfo describes a stored bundle without its content.
type BundleInfo struct {
	Revision     string
	Digest       string
	SizeBytes    int64
	SigningKeyID string
	UploadedBy   string
	UploadedAt   time.Time
}

// Mode is what the candidate bundle does.
type Mode string

// The rollout modes.
const (
	// ModeNone: no candidate; the active bundle decides everything.
	ModeNone Mode = "none"
	// ModeShadow: the candidate is evaluated beside the active bundle and
	// never decides.
	ModeShadow Mode = "shadow"
	// ModeCanary: the candidate decides for CanaryPercent of principals.
	ModeCanary Mode = "canary"
)

// Rollout is the policy state every replica converges on.
type Rollout struct {
	// Generation increases by one with every change; 0 means the state was
	// never written (then every other field is zero).
	Generation int64
	// Active is the revision that decides (outside the canary share).
	Active string
	// Candidate is the revision being rolled out; empty with ModeNone.
	Candidate string
	// Mode is ModeNone, ModeShadow or ModeCanary (empty only at
	// Generation 0).
	Mode Mode
	// CanaryPercent is 1..100 with ModeCanary, else 0.
	CanaryPercent int
	// Previous is the revision active before the last promotion.
	Previous string
	// UpdatedBy and UpdatedAt describe the last change (set by the store
	// from the Change and its clock).
	UpdatedBy string
	UpdatedAt time.Time
}

// Action names a rollout change.
type Action string

// The rollout changes.
const (
	ActionInit     Action = "init"     // the first active bundle, loaded at start
	ActionShadow   Action = "shadow"   // a candidate staged in shadow mode
	ActionCanary   Action = "canary"   // a candidate decides for a share of principals
	ActionPromote  Action = "promote"  // the candidate became active
	ActionRollback Action = "rollback" // candidate withdrawn, or previous made active again
)

// Change describes why the rollout moved, for its history.
type Change struct {
	Action Action
	// Actor is the subject that made the change.
	Actor string
	// From and To are the revisions the change moved between (for
	// promote: old active -> new active; for shadow/canary: active ->
	// candidate; for rollback: the revision withdrawn -> the one deciding).
	From, To string
	// Forced is set on a promotion that overrode deny->allow divergences.
	Forced bool
	// CanaryPercent is the share set by a canary change.
	CanaryPercent int
}

// HistoryEntry is one recorded change.
type HistoryEntry struct {
	// Generation is the rollout generation the change produced.
	Generation int64
	Change
	Time time.Time
}

// Comparison is the outcome of evaluating one request with both the
// active and the candidate bundle. It holds identifiers only, never
// attribute values.
type Comparison struct {
	DecisionID string
	// ActiveDecision and CandidateDecision are lower-case states (allow,
	// deny, not_applicable, indeterminate).
	ActiveDecision, ActiveReason       string
	CandidateDecision, CandidateReason string
	Subject, Tenant, Action, Resource  string
	Time                               time.Time
}

// Agreed reports whether both bundles gave the same decision and reason.
func (c Comparison) Agreed() bool {
	return c.ActiveDecision == c.CandidateDecision && c.ActiveReason == c.CandidateReason
}

// Transition is "<active>-><candidate>", e.g. "allow->deny".
func (c Comparison) Transition() string {
	return c.ActiveDecision + "->" + c.CandidateDecision
}

// Report summarizes the comparisons of one candidate against one active
// revision.
type Report struct {
	Active, Candidate string
	// Compared counts requests evaluated by both; Agreed those that agreed;
	// Dropped those not compared because the shadow queue was full.
	Compared, Agreed, Dropped int64
	// Groups holds the divergences grouped by transition and reason codes,
	// largest count first (ties by transition, then reasons).
	Groups []DivergenceGroup
}

// DivergenceGroup counts the divergences with one transition and pair of
// reason codes, with the most recent samples (newest first).
type DivergenceGroup struct {
	Transition                    string
	ActiveReason, CandidateReason string
	Count                         int64
	Samples                       []Comparison
}

// Loosens reports whether the group turns a non-allow into an allow
// (deny->allow and its kin): a promotion is refused while any such group
// exists, unless forced.
func (g DivergenceGroup) Loosens() bool {
	return strings.HasSuffix(g.Transition, "->allow") && g.Transition != "allow->allow"
}

// Store is the PDP's policy state. Implementations are safe for concurrent
// use, also by several PDP replicas sharing one database.
type Store interface {
	// PutBundle stores b (Digest must be the SHA-256 of Tarball). Storing
	// a revision again with the same digest is a no-op (created false);
	// with another digest it is ErrRevisionConflict.
	PutBundle(ctx context.Context, b Bundle) (created bool, err error)
	// Bundle returns the stored bundle with revision, or ErrNotFound.
	Bundle(ctx context.Context, revision string) (Bundle, error)
	// ListBundles lists stored bundles, newest first.
	ListBundles(ctx context.Context) ([]BundleInfo, error)

	// Rollout returns the current state (Generation 0 when never written).
	Rollout(ctx context.Context) (Rollout, error)
	// UpdateRollout replaces the state with next if the current generation
	// is expected, else returns ErrStaleGeneration. It sets Generation to
	// expected+1, UpdatedBy to change.Actor and UpdatedAt to now, records
	// change in the history in the same transaction, wakes every
	// subscriber (in every process), and returns the state written. Every
	// revision next names must be a stored bundle (ErrNotFound otherwise).
	UpdateRollout(ctx context.Context, expected int64, next Rollout, change Change) (Rollout, error)
	// History returns the latest changes, newest first, at most limit
	// (1..MaxHistoryLimit).
	History(ctx context.Context, limit int) ([]HistoryEntry, error)
	// Subscribe returns a channel that receives a value soon after every
	// rollout change, from any process. Notifications coalesce: one value
	// may stand for several changes, so readers re-read Rollout. The
	// channel is closed when ctx ends.
	Subscribe(ctx context.Context) (<-chan struct{}, error)

	// RecordComparisons adds comparisons of candidate against active to
	// the counts (every one) and the divergence log (those that did not
	// agree), and adds dropped to the dropped count, in one transaction.
	RecordComparisons(ctx context.Context, active, candidate string, comps []Comparison, dropped int64) error
	// Report summarizes candidate against active, with at most
	// samplesPerGroup (1..MaxSamplesPerGroup) samples per group. A pair
	// never compared gives a Report with zero counts.
	Report(ctx context.Context, active, candidate string, samplesPerGroup int) (Report, error)
}
