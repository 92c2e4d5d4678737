package audit_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
)

// goldenEvent and its encoding pin version 1 of the canonical encoding;
// goldenHash was computed outside Go (printf '%s' "$json" | sha256sum).
// docs/audit.md shows the same example.
var (
	goldenEvent = audit.Event{
		EventID:     "EVT1",
		Time:        time.Date(2030, 1, 2, 4, 4, 5, 123456000, time.FixedZone("CET", 3600)),
		Type:        audit.TypeTokenIssued,
		Subject:     "alice",
		ClientID:    "invoice-web",
		Tenant:      "acme",
		Latency:     1500 * time.Microsecond,
		Attributes:  map[string]string{"jti": "j-1", "grant_type": "authorization_code", "note": `<a&b> "q"`},
		Seq:         7,
		PrevHash:    "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
		HashVersion: 1,
	}
	goldenEncoding = `{"action":"","actor_chain":[],"attributes":{"grant_type":"authorization_code","jti":"j-1","note":"<a&b> \"q\""},` +
		`"client_id":"invoice-web","decision":"","event_id":"EVT1","latency_ns":1500000,"policy_version":"",` +
		`"prev_hash":"5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef","reason_code":"","request_id":"",` +
		`"resource":"","seq":7,"shadow":null,"subject":"alice","tenant":"acme","time":"2030-01-02T03:04:05.123456Z",` +
		`"trace_id":"","type":"token.issued","v":1}`
	goldenHash = "1f8d02269b4bd4fe94bd2051f70c9c1f32ce7b2463be44c270002170238b5acc"
)

func TestCanonicalEncodingGolden(t *testing.T) {
	t.Parallel()
	got, err := goldenEvent.CanonicalEncoding()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != goldenEncoding {
		t.Errorf("CanonicalEncoding =\n%s\nwant\n%s", got, goldenEncoding)
	}
	hash, err := goldenEvent.ComputeHash()
	if err != nil || hash != goldenHash {
		t.Errorf("ComputeHash = %q, %v; want %q", hash, err, goldenHash)
	}
}

func TestCanonicalEncodingKeysSorted(t *testing.T) {
	t.Parallel()
	e := fullEvent()
	e.Seq, e.HashVersion = 1, 1
	b, err := e.CanonicalEncoding()
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	assertKeysSorted(t, "event", b)
	assertKeysSorted(t, "shadow", top["shadow"])
	if len(top) != 20 {
		t.Errorf("encoding has %d keys, want 20 (19 fields and v)", len(top))
	}
}

// assertKeysSorted checks that the keys of the JSON object in b appear in
// sorted order.
func assertKeysSorted(t *testing.T, what string, b []byte) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s: not an object: %v", what, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(keys) {
		t.Errorf("%s keys not sorted: %v", what, keys)
	}
}

// TestHashCoversEveryField changes each field of Event in turn: every
// change but one to Hash itself must change the hash.
func TestHashCoversEveryField(t *testing.T) {
	t.Parallel()
	changes := map[string]func(*audit.Event){
		"EventID":       func(e *audit.Event) { e.EventID += "x" },
		"Time":          func(e *audit.Event) { e.Time = e.Time.Add(time.Microsecond) },
		"Type":          func(e *audit.Event) { e.Type = audit.TypeTokenRevoked },
		"Subject":       func(e *audit.Event) { e.Subject += "x" },
		"ActorChain":    func(e *audit.Event) { slices.Reverse(e.ActorChain) },
		"ClientID":      func(e *audit.Event) { e.ClientID += "x" },
		"Tenant":        func(e *audit.Event) { e.Tenant += "x" },
		"Action":        func(e *audit.Event) { e.Action += "x" },
		"Resource":      func(e *audit.Event) { e.Resource += "x" },
		"Decision":      func(e *audit.Event) { e.Decision += "x" },
		"ReasonCode":    func(e *audit.Event) { e.ReasonCode += "x" },
		"PolicyVersion": func(e *audit.Event) { e.PolicyVersion += "x" },
		"Shadow":        func(e *audit.Event) { e.Shadow = nil },
		"RequestID":     func(e *audit.Event) { e.RequestID += "x" },
		"TraceID":       func(e *audit.Event) { e.TraceID += "x" },
		"Latency":       func(e *audit.Event) { e.Latency++ },
		"Attributes":    func(e *audit.Event) { e.Attributes["jti"] += "x" },
		"Seq":           func(e *audit.Event) { e.Seq++ },
		"PrevHash":      func(e *audit.Event) { e.PrevHash = strings.Repeat("0", 64) },
		"HashVersion":   func(e *audit.Event) { e.HashVersion = 2 },
	}
	for f := range reflect.TypeFor[audit.Event]().Fields() {
		if _, ok := changes[f.Name]; !ok && f.Name != "Hash" {
			t.Errorf("field %s has no case in this test", f.Name)
		}
	}
	// Nested and empty-versus-absent cases.
	changes["Shadow.Decision"] = func(e *audit.Event) { e.Shadow.Decision += "x" }
	changes["Shadow.ReasonCode"] = func(e *audit.Event) { e.Shadow.ReasonCode += "x" }
	changes["Shadow.PolicyVersion"] = func(e *audit.Event) { e.Shadow.PolicyVersion += "x" }
	changes["Shadow empty"] = func(e *audit.Event) { e.Shadow = &audit.Shadow{} }
	changes["Attributes key"] = func(e *audit.Event) { e.Attributes["jti2"] = e.Attributes["jti"]; delete(e.Attributes, "jti") }
	changes["ActorChain shorter"] = func(e *audit.Event) { e.ActorChain = e.ActorChain[:1] }

	base := sealedFullEvent(t)
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := base.Clone()
			change(&e)
			hash, err := e.ComputeHash()
			if name == "HashVersion" {
				if !errors.Is(err, audit.ErrUnknownHashVersion) {
					t.Fatalf("ComputeHash = %v, want ErrUnknownHashVersion", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hash == base.Hash {
				t.Fatalf("changing %s left the hash unchanged", name)
			}
		})
	}
}

// TestHashIgnoresRepresentation: the same event in another representation
// hashes the same, so a store round trip keeps hashes valid.
func TestHashIgnoresRepresentation(t *testing.T) {
	t.Parallel()
	base := sealedFullEvent(t)
	tests := []struct {
		name   string
		change func(*audit.Event)
	}{
		{name: "Hash itself", change: func(e *audit.Event) { e.Hash = "whatever" }},
		{name: "time zone", change: func(e *audit.Event) { e.Time = e.Time.In(time.FixedZone("X", -7*3600)) }},
		{name: "attribute map rebuilt", change: func(e *audit.Event) {
			m := make(map[string]string)
			for _, k := range slices.Backward(slices.Sorted(maps.Keys(e.Attributes))) {
				m[k] = e.Attributes[k]
			}
			e.Attributes = m
		}},
	}
	for _, tc := range tests {
		e := base.Clone()
		tc.change(&e)
		if hash, err := e.ComputeHash(); err != nil || hash != base.Hash {
			t.Errorf("%s: hash %q, %v; want %q", tc.name, hash, err, base.Hash)
		}
	}
	empty := audit.Event{Type: audit.TypeDecision, HashVersion: 1}
	withEmpty := empty
	withEmpty.ActorChain, withEmpty.Attributes = []string{}, map[string]string{}
	a, errA := empty.ComputeHash()
	b, errB := withEmpty.ComputeHash()
	if errA != nil || errB != nil || a != b {
		t.Errorf("nil and empty collections hash differently: %q, %q (%v, %v)", a, b, errA, errB)
	}
}

func TestSeal(t *testing.T) {
	t.Parallel()
	head := audit.Head{Seq: 41, Hash: strings.Repeat("a", 64)}
	in := []audit.Event{fullEvent(), {Type: audit.TypeKeyCreated}}
	in[0].Time = time.Date(2030, 1, 2, 3, 4, 5, 999999999, time.FixedZone("CET", 3600))
	in[0].Seq, in[0].PrevHash, in[0].Hash = 1000, "forged", "forged" // overwritten
	before := time.Now()
	sealed, err := audit.Seal(head, in)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range sealed {
		if want := head.Seq + 1 + int64(i); e.Seq != want {
			t.Errorf("event %d: Seq %d, want %d", i, e.Seq, want)
		}
		prev := head.Hash
		if i > 0 {
			prev = sealed[i-1].Hash
		}
		if e.PrevHash != prev || e.HashVersion != audit.CurrentHashVersion {
			t.Errorf("event %d: PrevHash %q, HashVersion %d", i, e.PrevHash, e.HashVersion)
		}
		if hash, err := e.ComputeHash(); err != nil || hash != e.Hash {
			t.Errorf("event %d: Hash %q, computed %q, %v", i, e.Hash, hash, err)
		}
	}
	if want := time.Date(2030, 1, 2, 2, 4, 5, 999999000, time.UTC); !sealed[0].Time.Equal(want) || sealed[0].Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v (UTC, microseconds)", sealed[0].Time, want)
	}
	if sealed[1].EventID == "" || sealed[1].Time.Before(before.Truncate(time.Microsecond)) {
		t.Errorf("EventID %q, Time %v not filled", sealed[1].EventID, sealed[1].Time)
	}
	if in[1].EventID != "" || in[0].Seq != 1000 {
		t.Error("Seal changed its input")
	}
	sealed[0].Attributes["jti"] = "changed"
	if in[0].Attributes["jti"] == "changed" {
		t.Error("Seal's result shares memory with its input")
	}
}

func TestSealRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []audit.Event
		want   error
	}{
		{name: "invalid event", events: []audit.Event{{Type: audit.TypeDecision}, {Type: "BAD"}}, want: audit.ErrInvalidEvent},
		{name: "duplicate id", events: []audit.Event{{Type: audit.TypeDecision, EventID: "a"}, {Type: audit.TypeDecision, EventID: "a"}},
			want: audit.ErrDuplicateEvent},
		{name: "batch too large", events: make([]audit.Event, audit.MaxAppendBatch+1), want: audit.ErrInvalidEvent},
	}
	for _, tc := range tests {
		if got, err := audit.Seal(audit.Head{}, tc.events); !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: Seal = %d events, %v; want %v", tc.name, len(got), err, tc.want)
		}
	}
}

// fullEvent returns an event with every field a caller can set.
func fullEvent() audit.Event {
	return audit.Event{
		EventID:       "EVT-FULL",
		Time:          time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC),
		Type:          audit.TypeDecision,
		Subject:       "alice",
		ActorChain:    []string{"sam", "support-console"},
		ClientID:      "support-console",
		Tenant:        "acme",
		Action:        "invoice:approve",
		Resource:      "invoice/inv_123",
		Decision:      "DENY",
		ReasonCode:    "step_up_required",
		PolicyVersion: "v42",
		Shadow:        &audit.Shadow{Decision: "ALLOW", ReasonCode: "allowed", PolicyVersion: "v43"},
		RequestID:     "req-1",
		TraceID:       "4bf92f3577b34da6a3ce929d0e0e4736",
		Latency:       1234 * time.Microsecond,
		Attributes:    map[string]string{"jti": "j-1", "scope": "invoice:read", "family": "f-1"},
	}
}

func sealedFullEvent(t *testing.T) audit.Event {
	t.Helper()
	sealed, err := audit.Seal(audit.Head{Seq: 1, Hash: strings.Repeat("b", 64)}, []audit.Event{fullEvent()})
	if err != nil {
		t.Fatal(err)
	}
	return sealed[0]
}
