// Package audit is Gatehouse's append-only, hash-chained audit log.
//
// Services describe what happened as an Event (a token issued, a consent
// withdrawn, a decision made) and hand it to an Emitter, in production a
// Recorder: an asynchronous, bounded queue in front of a Store. A Store
// appends events to one chain: it numbers each event (Seq), links it to the
// previous event (PrevHash) and seals it with a SHA-256 hash over a
// canonical encoding of all its fields (Hash), so Verify can tell when a
// stored event was changed, removed or inserted. The memory and postgres
// subpackages implement Store; storetest holds their contract suite.
//
// Events never hold raw tokens, secrets, passwords, codes or cookie values:
// the type has no field for them, and callers must not put them into
// Attributes or any other field. Name a token by its jti or family id.
package audit

import (
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Type says what an event records. Types are lowercase dotted names.
type Type string

// Event types of the issuer and the PDP.
const (
	TypeTokenIssued      Type = "token.issued"
	TypeTokenRefreshed   Type = "token.refreshed"
	TypeTokenRevoked     Type = "token.revoked"
	TypeTokenExchanged   Type = "token.exchanged"
	TypeConsentGranted   Type = "consent.granted"
	TypeConsentWithdrawn Type = "consent.withdrawn"
	TypeKeyCreated       Type = "key.created"
	TypeKeyActivated     Type = "key.activated"
	TypeKeyRetired       Type = "key.retired"
	TypeSessionLogin     Type = "session.login"
	TypeDecision         Type = "decision"
	TypePolicyChanged    Type = "policy.changed"
)

// Size limits Validate enforces, so one event stays small (well under
// 100 KiB encoded) whatever a caller passes.
const (
	// MaxFieldBytes bounds every string field and attribute value.
	MaxFieldBytes = 1024
	// MaxTypeBytes bounds Type.
	MaxTypeBytes = 64
	// MaxActorChain bounds the number of actors in ActorChain.
	MaxActorChain = 16
	// MaxAttributes bounds the number of Attributes.
	MaxAttributes = 32
	// MaxAttributeKeyBytes bounds an attribute's key.
	MaxAttributeKeyBytes = 64
)

// ErrInvalidEvent is wrapped by the errors of Validate, Record and Append for
// an event that breaks a rule of Event; nothing is recorded then.
var ErrInvalidEvent = errors.New("invalid audit event")

// Event is one audit record. The fields up to Attributes describe what
// happened; the store sets the chain fields (Seq, PrevHash, Hash,
// HashVersion) when it appends the event. Empty fields are allowed where
// they do not apply to an event's type.
//
// Callers must never put a raw token, secret, password, one-time code or
// cookie value in any field, Attributes included.
type Event struct {
	// EventID identifies the event; Record and Append set a random one
	// (NewEventID) when it is empty.
	EventID string
	// Time is when it happened; Record and Append set the current time when
	// it is zero. Stores keep it in UTC with microsecond precision.
	Time time.Time
	// Type says what happened.
	Type Type
	// Subject is the user or client the event is about.
	Subject string
	// ActorChain lists who acted on the subject's behalf, outermost first
	// (the RFC 8693 act claims of an exchanged token).
	ActorChain []string
	// ClientID is the OAuth client involved.
	ClientID string
	// Tenant is the subject's tenant.
	Tenant string
	// Action is what was attempted, such as invoice:approve.
	Action string
	// Resource names the object acted on, such as invoice/inv_123.
	Resource string
	// Decision is the outcome: ALLOW, DENY, NOT_APPLICABLE or INDETERMINATE
	// for decisions.
	Decision string
	// ReasonCode is the decision's or failure's stable snake_case reason.
	ReasonCode string
	// PolicyVersion is the policy that decided.
	PolicyVersion string
	// Shadow is the result of a candidate policy evaluated alongside the
	// active one, when there was one.
	Shadow *Shadow
	// RequestID is the request's id at the edge.
	RequestID string
	// TraceID is the W3C trace id of the request.
	TraceID string
	// Latency is how long the operation took.
	Latency time.Duration
	// Attributes holds type-specific, non-secret details: jti, scopes,
	// grant_type, token family id, key id and the like.
	Attributes map[string]string

	// Seq is the event's position in the chain, from 1, without gaps.
	Seq int64
	// PrevHash is the previous event's Hash; empty for the first event.
	PrevHash string
	// Hash is the lowercase hex SHA-256 of the event's canonical encoding
	// (see CanonicalEncoding).
	Hash string
	// HashVersion is the version of the canonical encoding Hash covers.
	HashVersion int
}

// Shadow is what a candidate (not yet active) policy would have decided.
type Shadow struct {
	Decision      string `json:"decision"`
	ReasonCode    string `json:"reason_code"`
	PolicyVersion string `json:"policy_version"`
}

// NewEventID returns a random event id: 128 bits in 26 base32 characters.
func NewEventID() string { return rand.Text() }

// Clone returns a deep copy of e, sharing no memory with it.
func (e Event) Clone() Event {
	e.ActorChain = slices.Clone(e.ActorChain)
	e.Attributes = maps.Clone(e.Attributes)
	if e.Shadow != nil {
		s := *e.Shadow
		e.Shadow = &s
	}
	return e
}

// Validate checks what a caller supplies: a well-formed Type and the size
// and encoding (valid UTF-8 without NUL) of every field. EventID and Time
// may be empty (Record and Append fill them); the chain fields are not
// checked. The error wraps ErrInvalidEvent and names the field.
func (e Event) Validate() error {
	if err := validType(e.Type); err != nil {
		return invalid("type", err)
	}
	if !e.Time.IsZero() && (e.Time.Year() < 1 || e.Time.Year() > 9999) {
		return invalid("time", errors.New("year outside 1..9999"))
	}
	if e.Latency < 0 {
		return invalid("latency", errors.New("negative"))
	}
	type field struct{ name, value string }
	fields := []field{
		{"event_id", e.EventID}, {"subject", e.Subject}, {"client_id", e.ClientID},
		{"tenant", e.Tenant}, {"action", e.Action}, {"resource", e.Resource},
		{"decision", e.Decision}, {"reason_code", e.ReasonCode},
		{"policy_version", e.PolicyVersion}, {"request_id", e.RequestID}, {"trace_id", e.TraceID},
	}
	if e.Shadow != nil {
		fields = append(fields,
			field{"shadow.decision", e.Shadow.Decision},
			field{"shadow.reason_code", e.Shadow.ReasonCode},
			field{"shadow.policy_version", e.Shadow.PolicyVersion})
	}
	for _, f := range fields {
		if err := validText(f.value, MaxFieldBytes); err != nil {
			return invalid(f.name, err)
		}
	}
	if len(e.ActorChain) > MaxActorChain {
		return invalid("actor_chain", fmt.Errorf("%d actors, at most %d", len(e.ActorChain), MaxActorChain))
	}
	for i, a := range e.ActorChain {
		if a == "" {
			return invalid(fmt.Sprintf("actor_chain[%d]", i), errors.New("empty"))
		}
		if err := validText(a, MaxFieldBytes); err != nil {
			return invalid(fmt.Sprintf("actor_chain[%d]", i), err)
		}
	}
	if len(e.Attributes) > MaxAttributes {
		return invalid("attributes", fmt.Errorf("%d attributes, at most %d", len(e.Attributes), MaxAttributes))
	}
	for k, v := range e.Attributes {
		if k == "" {
			return invalid("attributes", errors.New("empty key"))
		}
		if err := validText(k, MaxAttributeKeyBytes); err != nil {
			return invalid("attributes key", err)
		}
		if err := validText(v, MaxFieldBytes); err != nil {
			return invalid("attributes["+k+"]", err)
		}
	}
	return nil
}

func invalid(field string, err error) error {
	return fmt.Errorf("audit: %s: %w: %w", field, err, ErrInvalidEvent)
}

// validType accepts a lowercase letter followed by lowercase letters,
// digits, '_' and '.'.
func validType(t Type) error {
	if t == "" {
		return errors.New("missing")
	}
	if len(t) > MaxTypeBytes {
		return fmt.Errorf("%d bytes, at most %d", len(t), MaxTypeBytes)
	}
	for i, c := range []byte(t) {
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && (('0' <= c && c <= '9') || c == '_' || c == '.'):
		default:
			return fmt.Errorf("%q is not a lowercase dotted name", t)
		}
	}
	return nil
}

// validText accepts valid UTF-8 without NUL (which PostgreSQL's text
// refuses) of at most maxBytes bytes.
func validText(s string, maxBytes int) error {
	if len(s) > maxBytes {
		return fmt.Errorf("%d bytes, at most %d", len(s), maxBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains NUL")
	}
	return nil
}
