package storetest

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// RunKeyStore runs the store.KeyStore contract suite; newStore returns a
// fresh, empty store for each subtest.
func RunKeyStore(t *testing.T, newStore func(t *testing.T) store.KeyStore) {
	t.Helper()
	kek, err := signingkey.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	retention := time.Hour

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if keys := listKeys(t, s); len(keys) != 0 {
			t.Fatalf("ListKeys = %d keys, want none", len(keys))
		}
		deleted, err := s.DeleteExpiredKeys(t.Context(), t0)
		if err != nil || len(deleted) != 0 {
			t.Fatalf("DeleteExpiredKeys = %v, %v; want nothing", deleted, err)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		want := newRecord(t, kek, "", t0, t0)
		rotate(t, s, want, t0.Add(retention))
		got := listKeys(t, s)
		if len(got) != 1 {
			t.Fatalf("ListKeys = %d keys, want 1", len(got))
		}
		assertRecord(t, got[0], want)
		// What comes back still opens under the KEK.
		if _, err := kek.Open(got[0].KID, got[0].Sealed); err != nil {
			t.Fatalf("stored key does not open: %v", err)
		}
	})
	t.Run("RotateRetiresPredecessors", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := newRecord(t, kek, "", t0, t0)
		rotate(t, s, first, t0.Add(retention))
		second := newRecord(t, kek, first.KID, t0.Add(time.Hour), t0.Add(time.Hour+time.Minute))
		rotate(t, s, second, second.ActivateAt.Add(retention))
		// A third key before the second activates: the second retires at the
		// third's activation, the first keeps its earlier retirement.
		third := newRecord(t, kek, second.KID, t0.Add(time.Hour+30*time.Second), t0.Add(time.Hour+90*time.Second))
		rotate(t, s, third, third.ActivateAt.Add(retention))

		got := listKeys(t, s)
		if kids := kidsOf(got); !slices.Equal(kids, []string{third.KID, second.KID, first.KID}) {
			t.Fatalf("ListKeys order = %v, want newest first", kids)
		}
		first.RetireAt, first.ExpireAt = second.ActivateAt, second.ActivateAt.Add(retention)
		second.RetireAt, second.ExpireAt = third.ActivateAt, third.ActivateAt.Add(retention)
		assertRecord(t, got[0], third)
		assertRecord(t, got[1], second)
		assertRecord(t, got[2], first)
	})
	t.Run("Conflicts", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := newRecord(t, kek, "", t0, t0)
		rotate(t, s, first, t0.Add(retention))
		second := newRecord(t, kek, first.KID, t0.Add(time.Minute), t0.Add(2*time.Minute))
		rotate(t, s, second, second.ActivateAt.Add(retention))
		before := listKeys(t, s)

		for _, tc := range []struct {
			name string
			rec  signingkey.Record
		}{
			{name: "second first key", rec: newRecord(t, kek, "", t0.Add(time.Hour), t0.Add(time.Hour))},
			{name: "second successor", rec: newRecord(t, kek, first.KID, t0.Add(time.Hour), t0.Add(time.Hour))},
			{name: "kid taken", rec: func() signingkey.Record { r := second; r.Predecessor = second.KID + "x"; return r }()},
		} {
			err := s.RotateKeys(t.Context(), tc.rec, t0.Add(2*time.Hour))
			if !errors.Is(err, store.ErrConflict) || !errors.Is(err, signingkey.ErrRotationRace) {
				t.Errorf("%s: RotateKeys = %v, want ErrConflict and ErrRotationRace", tc.name, err)
			}
		}
		if after := listKeys(t, s); !reflect.DeepEqual(normalize(t, after), normalize(t, before)) {
			t.Fatalf("a rejected rotation changed the store:\nbefore %+v\nafter  %+v", before, after)
		}
	})
	t.Run("RejectsInvalidRecord", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		valid := newRecord(t, kek, "", t0, t0)
		for _, tc := range []struct {
			name string
			edit func(*signingkey.Record)
		}{
			{name: "no kid", edit: func(r *signingkey.Record) { r.KID = "" }},
			{name: "HS256", edit: func(r *signingkey.Record) { r.Algorithm = "HS256" }},
			{name: "no sealed key", edit: func(r *signingkey.Record) { r.Sealed = nil }},
			{name: "public JWK not JSON", edit: func(r *signingkey.Record) { r.PublicJWK = []byte("{") }},
			{name: "activates before created", edit: func(r *signingkey.Record) { r.ActivateAt = r.CreatedAt.Add(-time.Second) }},
			{name: "retire without expire", edit: func(r *signingkey.Record) { r.RetireAt = r.CreatedAt }},
		} {
			rec := valid
			tc.edit(&rec)
			if err := s.RotateKeys(t.Context(), rec, t0); err == nil {
				t.Errorf("%s: RotateKeys accepted the record", tc.name)
			}
		}
		if keys := listKeys(t, s); len(keys) != 0 {
			t.Fatalf("invalid records were stored: %d", len(keys))
		}
	})
	t.Run("DeleteExpiredKeys", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := newRecord(t, kek, "", t0, t0)
		rotate(t, s, first, t0.Add(retention))
		second := newRecord(t, kek, first.KID, t0.Add(time.Minute), t0.Add(time.Minute))
		rotate(t, s, second, second.ActivateAt.Add(retention)) // first expires at t0+1m+1h

		deleted, err := s.DeleteExpiredKeys(t.Context(), second.ActivateAt.Add(retention-time.Microsecond))
		if err != nil || len(deleted) != 0 {
			t.Fatalf("before expiry: DeleteExpiredKeys = %v, %v; want nothing", deleted, err)
		}
		deleted, err = s.DeleteExpiredKeys(t.Context(), second.ActivateAt.Add(retention))
		if err != nil || !slices.Equal(deleted, []string{first.KID}) {
			t.Fatalf("at expiry: DeleteExpiredKeys = %v, %v; want [%s]", deleted, err, first.KID)
		}
		if kids := kidsOf(listKeys(t, s)); !slices.Equal(kids, []string{second.KID}) {
			t.Fatalf("left %v, want the unretired key %s only", kids, second.KID)
		}
	})
	t.Run("ConcurrentRotationsCreateOneKey", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := newRecord(t, kek, "", t0, t0)
		rotate(t, s, first, t0.Add(retention))
		const n = 8
		recs := make([]signingkey.Record, n)
		for i := range recs {
			recs[i] = newRecord(t, kek, first.KID, t0.Add(time.Minute), t0.Add(2*time.Minute))
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.RotateKeys(t.Context(), recs[i], t0.Add(time.Hour)) })
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, signingkey.ErrRotationRace):
				t.Errorf("RotateKeys = %v, want nil or ErrRotationRace", err)
			}
		}
		if got := listKeys(t, s); wins != 1 || len(got) != 2 {
			t.Fatalf("%d rotations won, %d keys stored; want exactly one new key", wins, len(got))
		}
	})
}

func newRecord(t *testing.T, kek *signingkey.KEK, predecessor string, created, activate time.Time) signingkey.Record {
	t.Helper()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	r, err := signingkey.NewRecord(k, kek, predecessor, created, activate)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rotate(t *testing.T, s store.KeyStore, r signingkey.Record, retiredExpireAt time.Time) {
	t.Helper()
	if err := s.RotateKeys(t.Context(), r, retiredExpireAt); err != nil {
		t.Fatalf("RotateKeys(%s): %v", r.KID, err)
	}
}

func listKeys(t *testing.T, s store.KeyStore) []signingkey.Record {
	t.Helper()
	keys, err := s.ListKeys(t.Context())
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	return keys
}

func kidsOf(recs []signingkey.Record) []string {
	kids := make([]string, len(recs))
	for i, r := range recs {
		kids[i] = r.KID
	}
	return kids
}

// normalize decodes the public JWKs, which a store may re-encode (jsonb).
func normalize(t *testing.T, recs []signingkey.Record) []any {
	t.Helper()
	out := make([]any, len(recs))
	for i, r := range recs {
		var jwk map[string]any
		if err := json.Unmarshal(r.PublicJWK, &jwk); err != nil {
			t.Fatalf("kid %s: public JWK: %v", r.KID, err)
		}
		r.PublicJWK = nil
		out[i] = []any{r, jwk}
	}
	return out
}

func assertRecord(t *testing.T, got, want signingkey.Record) {
	t.Helper()
	if g, w := normalize(t, []signingkey.Record{got}), normalize(t, []signingkey.Record{want}); !reflect.DeepEqual(g, w) {
		t.Errorf("record %s =\n%+v\nwant\n%+v", want.KID, g, w)
	}
}
