package audit_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	attrs := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	actors := func(n int) []string {
		a := make([]string, n)
		for i := range a {
			a[i] = fmt.Sprintf("actor-%d", i)
		}
		return a
	}
	long := strings.Repeat("x", audit.MaxFieldBytes)
	tests := []struct {
		name   string
		change func(*audit.Event)
		field  string // in the error; empty for a valid event
	}{
		{name: "full", change: func(*audit.Event) {}},
		{name: "type only", change: func(e *audit.Event) { *e = audit.Event{Type: audit.TypeDecision} }},
		{name: "custom type", change: func(e *audit.Event) { e.Type = "pdp.bundle_loaded.v2" }},
		{name: "fields at their limits", change: func(e *audit.Event) {
			e.Subject, e.Attributes, e.ActorChain = long, attrs(audit.MaxAttributes), actors(audit.MaxActorChain)
			e.Type = audit.Type("t" + strings.Repeat("y", audit.MaxTypeBytes-1))
		}},
		{name: "no type", change: func(e *audit.Event) { e.Type = "" }, field: "type"},
		{name: "uppercase type", change: func(e *audit.Event) { e.Type = "Token.issued" }, field: "type"},
		{name: "type starts with digit", change: func(e *audit.Event) { e.Type = "1token" }, field: "type"},
		{name: "type with dash", change: func(e *audit.Event) { e.Type = "token-issued" }, field: "type"},
		{name: "type too long", change: func(e *audit.Event) { e.Type = audit.Type(strings.Repeat("t", audit.MaxTypeBytes+1)) }, field: "type"},
		{name: "year 10000", change: func(e *audit.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, field: "time"},
		{name: "negative latency", change: func(e *audit.Event) { e.Latency = -1 }, field: "latency"},
		{name: "field too long", change: func(e *audit.Event) { e.Resource = long + "x" }, field: "resource"},
		{name: "invalid UTF-8", change: func(e *audit.Event) { e.Subject = "\xc3\x28" }, field: "subject"},
		{name: "NUL", change: func(e *audit.Event) { e.TraceID = "a\x00b" }, field: "trace_id"},
		{name: "event id too long", change: func(e *audit.Event) { e.EventID = long + "x" }, field: "event_id"},
		{name: "shadow field", change: func(e *audit.Event) { e.Shadow.ReasonCode = "\xff" }, field: "shadow.reason_code"},
		{name: "too many actors", change: func(e *audit.Event) { e.ActorChain = actors(audit.MaxActorChain + 1) }, field: "actor_chain"},
		{name: "empty actor", change: func(e *audit.Event) { e.ActorChain = []string{"sam", ""} }, field: "actor_chain[1]"},
		{name: "too many attributes", change: func(e *audit.Event) { e.Attributes = attrs(audit.MaxAttributes + 1) }, field: "attributes"},
		{name: "empty attribute key", change: func(e *audit.Event) { e.Attributes[""] = "v" }, field: "attributes"},
		{name: "attribute key too long", change: func(e *audit.Event) {
			e.Attributes[strings.Repeat("k", audit.MaxAttributeKeyBytes+1)] = "v"
		}, field: "attributes key"},
		{name: "attribute value too long", change: func(e *audit.Event) { e.Attributes["jti"] = long + "x" }, field: "attributes[jti]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := fullEvent()
			tc.change(&e)
			err := e.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, audit.ErrInvalidEvent) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate = %v, want ErrInvalidEvent naming %s", err, tc.field)
			}
		})
	}
}

func TestClone(t *testing.T) {
	t.Parallel()
	orig := fullEvent()
	c := orig.Clone()
	c.ActorChain[0], c.Attributes["jti"], c.Shadow.Decision = "x", "x", "x"
	if orig.ActorChain[0] != "sam" || orig.Attributes["jti"] != "j-1" || orig.Shadow.Decision != "ALLOW" {
		t.Fatalf("Clone shares memory with the original: %+v", orig)
	}
}

func TestNewEventID(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 1000 {
		id := audit.NewEventID()
		if len(id) != 26 || seen[id] {
			t.Fatalf("NewEventID = %q: want 26 characters, never repeated", id)
		}
		seen[id] = true
	}
}
