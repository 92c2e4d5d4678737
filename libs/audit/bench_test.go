package audit_test

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/libs/audit"
)

// discardStore accepts and forgets, so BenchmarkRecord measures the
// Recorder, not a store.
type discardStore struct{ audit.Store }

func (discardStore) Append(_ context.Context, events ...audit.Event) ([]audit.Event, error) {
	return events, nil
}

// BenchmarkRecord measures the caller's side of Record: validate, copy,
// fill id and time, enqueue.
func BenchmarkRecord(b *testing.B) {
	r, err := audit.NewRecorder(discardStore{}, audit.RecorderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := audit.Event{
		Type: audit.TypeTokenIssued, Subject: "alice", ClientID: "invoice-web", Tenant: "acme",
		RequestID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Attributes: map[string]string{"jti": "j-1", "grant_type": "authorization_code", "scope": "openid invoice:read"},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Record(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := r.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkComputeHash measures hashing one fully populated event.
func BenchmarkComputeHash(b *testing.B) {
	e := fullEvent()
	e.Seq, e.HashVersion = 1, audit.CurrentHashVersion
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.ComputeHash(); err != nil {
			b.Fatal(err)
		}
	}
}
