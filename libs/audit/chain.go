package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CurrentHashVersion is the canonical encoding Seal hashes new events with.
// A new encoding gets a new version; events keep the version they were
// sealed with, so old events stay verifiable.
const CurrentHashVersion = 1

// MaxAppendBatch bounds the events one Append call takes.
const MaxAppendBatch = 1000

// ErrUnknownHashVersion is wrapped by CanonicalEncoding's error for an event
// whose HashVersion this package does not know.
var ErrUnknownHashVersion = errors.New("unknown audit hash version")

// Head is the end of a chain: the last event's Seq and Hash, or zero values
// for an empty chain.
type Head struct {
	Seq  int64
	Hash string
}

// canonicalV1 is version 1 of the canonical encoding. Its fields are
// declared in the order of their JSON names, so encoding/json writes the
// keys sorted; TestCanonicalEncodingKeysSorted guards that.
type canonicalV1 struct {
	Action        string            `json:"action"`
	ActorChain    []string          `json:"actor_chain"`
	Attributes    map[string]string `json:"attributes"`
	ClientID      string            `json:"client_id"`
	Decision      string            `json:"decision"`
	EventID       string            `json:"event_id"`
	LatencyNS     int64             `json:"latency_ns"`
	PolicyVersion string            `json:"policy_version"`
	PrevHash      string            `json:"prev_hash"`
	ReasonCode    string            `json:"reason_code"`
	RequestID     string            `json:"request_id"`
	Resource      string            `json:"resource"`
	Seq           int64             `json:"seq"`
	Shadow        *canonicalShadow  `json:"shadow"`
	Subject       string            `json:"subject"`
	Tenant        string            `json:"tenant"`
	Time          string            `json:"time"`
	TraceID       string            `json:"trace_id"`
	Type          Type              `json:"type"`
	V             int               `json:"v"`
}

type canonicalShadow struct {
	Decision      string `json:"decision"`
	PolicyVersion string `json:"policy_version"`
	ReasonCode    string `json:"reason_code"`
}

// CanonicalEncoding returns the bytes Hash covers: every field of e but
// Hash, in the encoding e.HashVersion names. Version 1 is one JSON object
// with the keys sorted and no whitespace; strings escaped as encoding/json
// does with HTML escaping off; time as UTC RFC 3339 with up to nine
// fractional digits and trailing zeros dropped; latency as integer
// nanoseconds (latency_ns); an absent actor chain as [], absent attributes
// as {}, an absent shadow as null; and "v": 1. docs/audit.md has an example.
func (e Event) CanonicalEncoding() ([]byte, error) {
	if e.HashVersion != 1 {
		return nil, fmt.Errorf("audit: event %d: hash version %d: %w", e.Seq, e.HashVersion, ErrUnknownHashVersion)
	}
	c := canonicalV1{
		Action:        e.Action,
		ActorChain:    e.ActorChain,
		Attributes:    e.Attributes,
		ClientID:      e.ClientID,
		Decision:      e.Decision,
		EventID:       e.EventID,
		LatencyNS:     int64(e.Latency),
		PolicyVersion: e.PolicyVersion,
		PrevHash:      e.PrevHash,
		ReasonCode:    e.ReasonCode,
		RequestID:     e.RequestID,
		Resource:      e.Resource,
		Seq:           e.Seq,
		Subject:       e.Subject,
		Tenant:        e.Tenant,
		Time:          e.Time.UTC().Format(time.RFC3339Nano),
		TraceID:       e.TraceID,
		Type:          e.Type,
		V:             1,
	}
	if c.ActorChain == nil {
		c.ActorChain = []string{}
	}
	if c.Attributes == nil {
		c.Attributes = map[string]string{}
	}
	if e.Shadow != nil {
		c.Shadow = &canonicalShadow{
			Decision:      e.Shadow.Decision,
			PolicyVersion: e.Shadow.PolicyVersion,
			ReasonCode:    e.Shadow.ReasonCode,
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("audit: encode event %d: %w", e.Seq, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ComputeHash returns the lowercase hex SHA-256 of e's canonical encoding:
// what e.Hash must be.
func (e Event) ComputeHash() (string, error) {
	b, err := e.CanonicalEncoding()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Seal returns copies of events chained after head, for a Store to write:
// each gets the next Seq, the previous event's Hash as PrevHash, the current
// HashVersion and its own Hash. It fills an empty EventID and a zero Time,
// and keeps Time in UTC at microsecond precision (what PostgreSQL stores),
// and empty ActorChain and Attributes as nil. A Store calls Seal while it
// holds its chain head, so that no two appends chain after the same head.
//
// The error wraps ErrInvalidEvent for an invalid event or batch and
// ErrDuplicateEvent for an EventID that occurs twice in events; no event is
// sealed then.
func Seal(head Head, events []Event) ([]Event, error) {
	if len(events) > MaxAppendBatch {
		return nil, fmt.Errorf("audit: %d events in one append, at most %d: %w", len(events), MaxAppendBatch, ErrInvalidEvent)
	}
	now := time.Now()
	sealed := make([]Event, len(events))
	ids := make(map[string]struct{}, len(events))
	for i, e := range events {
		e = e.Clone()
		e.fill(now)
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("event %d of %d: %w", i+1, len(events), err)
		}
		if _, dup := ids[e.EventID]; dup {
			return nil, fmt.Errorf("audit: event id %q twice in one append: %w", e.EventID, ErrDuplicateEvent)
		}
		ids[e.EventID] = struct{}{}
		e.Time = e.Time.UTC().Truncate(time.Microsecond)
		if len(e.ActorChain) == 0 {
			e.ActorChain = nil
		}
		if len(e.Attributes) == 0 {
			e.Attributes = nil
		}
		e.Seq, e.PrevHash, e.HashVersion = head.Seq+1, head.Hash, CurrentHashVersion
		hash, err := e.ComputeHash()
		if err != nil {
			return nil, err
		}
		e.Hash = hash
		sealed[i] = e
		head = Head{Seq: e.Seq, Hash: e.Hash}
	}
	return sealed, nil
}

// fill sets an empty EventID and a zero Time.
func (e *Event) fill(now time.Time) {
	if e.EventID == "" {
		e.EventID = NewEventID()
	}
	if e.Time.IsZero() {
		e.Time = now
	}
}
