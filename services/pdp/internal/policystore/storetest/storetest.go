// Package storetest is the contract suite every policystore.Store passes,
// so that the memory and postgres stores stay interchangeable.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// signalTimeout bounds the wait for a Subscribe channel.
const signalTimeout = 5 * time.Second

// Run runs the contract suite; newStore returns a fresh, empty store for
// each subtest.
func Run(t *testing.T, newStore func(t *testing.T) policystore.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s policystore.Store)
	}{
		{"PutBundle", testPutBundle},
		{"PutBundleInvalid", testPutBundleInvalid},
		{"BundleIsCopied", testBundleIsCopied},
		{"ListBundles", testListBundles},
		{"RolloutLifecycle", testRolloutLifecycle},
		{"RolloutStale", testRolloutStale},
		{"RolloutUnknownRevision", testRolloutUnknownRevision},
		{"RolloutInvalid", testRolloutInvalid},
		{"RolloutConcurrent", testRolloutConcurrent},
		{"History", testHistory},
		{"Subscribe", testSubscribe},
		{"SubscribeCoalesces", testSubscribeCoalesces},
		{"Report", testReport},
		{"ReportOrder", testReportOrder},
		{"ReportPairs", testReportPairs},
		{"RecordDroppedOnly", testRecordDroppedOnly},
		{"RecordComparisonsInvalid", testRecordComparisonsInvalid},
		{"ReportInvalid", testReportInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newStore(t))
		})
	}
	t.Run("Loosens", testLoosens)
}

// newBundle returns a valid bundle of revision with content.
func newBundle(revision, content string) policystore.Bundle {
	sum := sha256.Sum256([]byte(content))
	return policystore.Bundle{
		Revision: revision, Digest: hex.EncodeToString(sum[:]), Tarball: []byte(content),
		SigningKeyID: "gatehouse-demo", UploadedBy: "alice",
	}
}

// putBundles stores a bundle for each revision.
func putBundles(t *testing.T, s policystore.Store, revisions ...string) {
	t.Helper()
	for _, rev := range revisions {
		if _, err := s.PutBundle(t.Context(), newBundle(rev, "tarball of "+rev)); err != nil {
			t.Fatalf("PutBundle(%q) = %v", rev, err)
		}
	}
}

// checkRecent fails unless got is a time set by the store during the test.
func checkRecent(t *testing.T, what string, got time.Time) {
	t.Helper()
	now := time.Now()
	if got.IsZero() || got.Before(now.Add(-time.Hour)) || got.After(now.Add(time.Minute)) {
		t.Errorf("%s = %v, want about now (%v)", what, got, now)
	}
}

func testPutBundle(t *testing.T, s policystore.Store) {
	ctx := t.Context()
	b := newBundle("v1", "first")
	created, err := s.PutBundle(ctx, b)
	if err != nil || !created {
		t.Fatalf("first PutBundle = %v, %v; want true, nil", created, err)
	}
	if created, err := s.PutBundle(ctx, b); err != nil || created {
		t.Fatalf("same PutBundle again = %v, %v; want false, nil", created, err)
	}
	other := newBundle("v1", "second")
	if _, err := s.PutBundle(ctx, other); !errors.Is(err, policystore.ErrRevisionConflict) {
		t.Fatalf("PutBundle of v1 with other content = %v, want ErrRevisionConflict", err)
	}
	got, err := s.Bundle(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	checkRecent(t, "UploadedAt", got.UploadedAt)
	got.UploadedAt = time.Time{}
	if !bundlesEqual(got, b) {
		t.Fatalf("Bundle(v1) = %+v, want %+v", got, b)
	}
	if _, err := s.Bundle(ctx, "v2"); !errors.Is(err, policystore.ErrNotFound) {
		t.Fatalf("Bundle(v2) = %v, want ErrNotFound", err)
	}
	// The largest bundle and the longest revision are accepted.
	large := newBundle(strings.Repeat("r", 128), strings.Repeat("x", policystore.MaxBundleBytes))
	if created, err := s.PutBundle(ctx, large); err != nil || !created {
		t.Fatalf("PutBundle of the largest bundle = %v, %v; want true, nil", created, err)
	}
	if got, err := s.Bundle(ctx, large.Revision); err != nil || !bytes.Equal(got.Tarball, large.Tarball) {
		t.Fatalf("Bundle of the largest bundle = %d bytes, %v", len(got.Tarball), err)
	}
}

func bundlesEqual(a, b policystore.Bundle) bool {
	return a.Revision == b.Revision && a.Digest == b.Digest && bytes.Equal(a.Tarball, b.Tarball) &&
		a.SigningKeyID == b.SigningKeyID && a.UploadedBy == b.UploadedBy && a.UploadedAt.Equal(b.UploadedAt)
}

func testPutBundleInvalid(t *testing.T, s policystore.Store) {
	tests := []struct {
		name   string
		bundle func() policystore.Bundle
	}{
		{"empty revision", func() policystore.Bundle { return newBundle("", "x") }},
		{"revision over 128 bytes", func() policystore.Bundle { return newBundle(strings.Repeat("r", 129), "x") }},
		{"revision with newline", func() policystore.Bundle { return newBundle("v1\nv2", "x") }},
		{"revision with DEL", func() policystore.Bundle { return newBundle("v1\x7f", "x") }},
		{"revision not UTF-8", func() policystore.Bundle { return newBundle("v\xff", "x") }},
		{"digest of other content", func() policystore.Bundle {
			b := newBundle("v1", "x")
			b.Digest = newBundle("v1", "y").Digest
			return b
		}},
		{"uppercase digest", func() policystore.Bundle {
			b := newBundle("v1", "x")
			b.Digest = strings.ToUpper(b.Digest)
			return b
		}},
		{"empty digest", func() policystore.Bundle {
			b := newBundle("v1", "x")
			b.Digest = ""
			return b
		}},
		{"empty tarball", func() policystore.Bundle { return newBundle("v1", "") }},
		{"tarball too large", func() policystore.Bundle {
			return newBundle("v1", strings.Repeat("x", policystore.MaxBundleBytes+1))
		}},
		{"uploader too long", func() policystore.Bundle {
			b := newBundle("v1", "x")
			b.UploadedBy = strings.Repeat("u", 1025)
			return b
		}},
		{"signing key id with NUL", func() policystore.Bundle {
			b := newBundle("v1", "x")
			b.SigningKeyID = "k\x00"
			return b
		}},
	}
	for _, tc := range tests {
		b := tc.bundle()
		if created, err := s.PutBundle(t.Context(), b); !errors.Is(err, policystore.ErrInvalid) || created {
			t.Errorf("%s: PutBundle = %v, %v; want false, ErrInvalid", tc.name, created, err)
		}
	}
	infos, err := s.ListBundles(t.Context())
	if err != nil || len(infos) != 0 {
		t.Fatalf("ListBundles after invalid puts = %v, %v; want none", infos, err)
	}
}

func testBundleIsCopied(t *testing.T, s policystore.Store) {
	ctx := t.Context()
	b := newBundle("v1", "content")
	if _, err := s.PutBundle(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Tarball[0] = 'X'
	got, err := s.Bundle(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	got.Tarball[1] = 'Y'
	again, err := s.Bundle(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Tarball) != "content" {
		t.Fatalf("stored tarball = %q after callers changed theirs, want %q", again.Tarball, "content")
	}
}

func testListBundles(t *testing.T, s policystore.Store) {
	ctx := t.Context()
	if infos, err := s.ListBundles(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("ListBundles of an empty store = %v, %v; want none", infos, err)
	}
	var want []policystore.Bundle
	for i, rev := range []string{"v1", "v3", "v2"} {
		b := newBundle(rev, strings.Repeat("z", i+10))
		b.UploadedBy, b.SigningKeyID = "uploader-"+rev, "key-"+rev
		if _, err := s.PutBundle(ctx, b); err != nil {
			t.Fatal(err)
		}
		want = append([]policystore.Bundle{b}, want...)
	}
	infos, err := s.ListBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(want) {
		t.Fatalf("ListBundles = %d bundles, want %d", len(infos), len(want))
	}
	for i, info := range infos {
		w := want[i]
		if info.Revision != w.Revision || info.Digest != w.Digest || info.SizeBytes != int64(len(w.Tarball)) ||
			info.SigningKeyID != w.SigningKeyID || info.UploadedBy != w.UploadedBy {
			t.Errorf("ListBundles[%d] = %+v, want %s (newest first) of %d bytes", i, info, w.Revision, len(w.Tarball))
		}
		checkRecent(t, "UploadedAt", info.UploadedAt)
	}
	if !infos[0].UploadedAt.After(infos[2].UploadedAt) && !infos[0].UploadedAt.Equal(infos[2].UploadedAt) {
		t.Errorf("newest bundle uploaded at %v, before the oldest (%v)", infos[0].UploadedAt, infos[2].UploadedAt)
	}
}

// update calls UpdateRollout and fails the test on an error.
func update(t *testing.T, s policystore.Store, expected int64, next policystore.Rollout, change policystore.Change) policystore.Rollout {
	t.Helper()
	got, err := s.UpdateRollout(t.Context(), expected, next, change)
	if err != nil {
		t.Fatalf("UpdateRollout(%d, %+v) = %v", expected, next, err)
	}
	return got
}

// checkRollout compares got with want, whose UpdatedAt is ignored, and
// checks that got.UpdatedAt is recent.
func checkRollout(t *testing.T, what string, got, want policystore.Rollout) {
	t.Helper()
	checkRecent(t, what+".UpdatedAt", got.UpdatedAt)
	got.UpdatedAt = time.Time{}
	if got != want {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

// checkUnchanged fails unless the rollout is still at generation and the
// history holds exactly generation entries.
func checkUnchanged(t *testing.T, s policystore.Store, generation int64) {
	t.Helper()
	r, err := s.Rollout(t.Context())
	if err != nil || r.Generation != generation {
		t.Fatalf("Rollout = generation %d, %v; want generation %d (nothing written)", r.Generation, err, generation)
	}
	h, err := s.History(t.Context(), policystore.MaxHistoryLimit)
	if err != nil || len(h) != int(generation) {
		t.Fatalf("History = %d entries, %v; want %d (nothing written)", len(h), err, generation)
	}
}

func testRolloutLifecycle(t *testing.T, s policystore.Store) {
	ctx := t.Context()
	r, err := s.Rollout(ctx)
	if err != nil || r != (policystore.Rollout{}) {
		t.Fatalf("Rollout of an empty store = %+v, %v; want the zero Rollout", r, err)
	}
	putBundles(t, s, "v1", "v2")
	steps := []struct {
		next   policystore.Rollout
		change policystore.Change
	}{
		{
			// Generation, UpdatedBy and UpdatedAt are the store's to set.
			policystore.Rollout{Active: "v1", Mode: policystore.ModeNone, Generation: 42, UpdatedBy: "mallory", UpdatedAt: time.Unix(1, 0)},
			policystore.Change{Action: policystore.ActionInit, Actor: "pdp", To: "v1"},
		},
		{
			policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow},
			policystore.Change{Action: policystore.ActionShadow, Actor: "alice", From: "v1", To: "v2"},
		},
		{
			policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 100},
			policystore.Change{Action: policystore.ActionCanary, Actor: "alice", From: "v1", To: "v2", CanaryPercent: 100},
		},
		{
			policystore.Rollout{Active: "v2", Mode: policystore.ModeNone, Previous: "v1"},
			policystore.Change{Action: policystore.ActionPromote, Actor: "bob", From: "v1", To: "v2", Forced: true},
		},
		{
			policystore.Rollout{Active: "v1", Mode: policystore.ModeNone, Previous: "v2"},
			policystore.Change{Action: policystore.ActionRollback, Actor: "carol", From: "v2", To: "v1"},
		},
	}
	for i, step := range steps {
		gen := int64(i)
		got := update(t, s, gen, step.next, step.change)
		want := step.next
		want.Generation, want.UpdatedBy, want.UpdatedAt = gen+1, step.change.Actor, time.Time{}
		checkRollout(t, fmt.Sprintf("UpdateRollout #%d", i+1), got, want)
		read, err := s.Rollout(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !read.UpdatedAt.Equal(got.UpdatedAt) {
			t.Errorf("Rollout.UpdatedAt = %v, UpdateRollout returned %v", read.UpdatedAt, got.UpdatedAt)
		}
		checkRollout(t, fmt.Sprintf("Rollout after #%d", i+1), read, want)
	}
}

func testRolloutStale(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1", "v2")
	init := policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}
	update(t, s, 0, init, policystore.Change{Action: policystore.ActionInit, Actor: "pdp"})
	shadow := policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow}
	for _, expected := range []int64{0, 2, 7} {
		_, err := s.UpdateRollout(t.Context(), expected, shadow, policystore.Change{Action: policystore.ActionShadow, Actor: "alice"})
		if !errors.Is(err, policystore.ErrStaleGeneration) {
			t.Errorf("UpdateRollout(%d) at generation 1 = %v, want ErrStaleGeneration", expected, err)
		}
	}
	checkUnchanged(t, s, 1)
	if r, _ := s.Rollout(t.Context()); r.Candidate != "" || r.Mode != policystore.ModeNone {
		t.Fatalf("Rollout = %+v after stale updates, want the init state", r)
	}
}

func testRolloutUnknownRevision(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1")
	init := policystore.Change{Action: policystore.ActionInit, Actor: "pdp"}
	if _, err := s.UpdateRollout(t.Context(), 0, policystore.Rollout{Active: "v9", Mode: policystore.ModeNone}, init); !errors.Is(err, policystore.ErrNotFound) {
		t.Fatalf("UpdateRollout with an unknown active = %v, want ErrNotFound", err)
	}
	checkUnchanged(t, s, 0)
	update(t, s, 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, init)
	for name, next := range map[string]policystore.Rollout{
		"candidate": {Active: "v1", Candidate: "v9", Mode: policystore.ModeShadow},
		"previous":  {Active: "v1", Mode: policystore.ModeNone, Previous: "v9"},
	} {
		if _, err := s.UpdateRollout(t.Context(), 1, next, policystore.Change{Action: policystore.ActionShadow}); !errors.Is(err, policystore.ErrNotFound) {
			t.Errorf("UpdateRollout with an unknown %s = %v, want ErrNotFound", name, err)
		}
	}
	checkUnchanged(t, s, 1)
}

func testRolloutInvalid(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1", "v2")
	valid := policystore.Change{Action: policystore.ActionInit, Actor: "pdp"}
	tests := []struct {
		name     string
		expected int64
		next     policystore.Rollout
		change   policystore.Change
	}{
		{"negative generation", -1, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, valid},
		{"empty active", 0, policystore.Rollout{Mode: policystore.ModeNone}, valid},
		{"empty mode", 0, policystore.Rollout{Active: "v1"}, valid},
		{"unknown mode", 0, policystore.Rollout{Active: "v1", Mode: "blue-green"}, valid},
		{"none with candidate", 0, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeNone}, valid},
		{"none with percent", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone, CanaryPercent: 5}, valid},
		{"shadow without candidate", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeShadow}, valid},
		{"shadow of the active", 0, policystore.Rollout{Active: "v1", Candidate: "v1", Mode: policystore.ModeShadow}, valid},
		{"shadow with percent", 0, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow, CanaryPercent: 10}, valid},
		{"canary without candidate", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeCanary, CanaryPercent: 10}, valid},
		{"canary of the active", 0, policystore.Rollout{Active: "v1", Candidate: "v1", Mode: policystore.ModeCanary, CanaryPercent: 10}, valid},
		{"canary of 0 percent", 0, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary}, valid},
		{"canary of 101 percent", 0, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 101}, valid},
		{"canary of -5 percent", 0, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: -5}, valid},
		{"active with control character", 0, policystore.Rollout{Active: "v1\t", Mode: policystore.ModeNone}, valid},
		{"unknown action", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, policystore.Change{Action: "deploy", Actor: "pdp"}},
		{"empty action", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, policystore.Change{Actor: "pdp"}},
		{"actor too long", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone},
			policystore.Change{Action: policystore.ActionInit, Actor: strings.Repeat("a", 1025)}},
		{"change percent over 100", 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone},
			policystore.Change{Action: policystore.ActionInit, CanaryPercent: 101}},
	}
	for _, tc := range tests {
		if _, err := s.UpdateRollout(t.Context(), tc.expected, tc.next, tc.change); !errors.Is(err, policystore.ErrInvalid) {
			t.Errorf("%s: UpdateRollout = %v, want ErrInvalid", tc.name, err)
		}
	}
	checkUnchanged(t, s, 0)
}

func testRolloutConcurrent(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1", "v2")
	update(t, s, 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, policystore.Change{Action: policystore.ActionInit, Actor: "pdp"})
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.UpdateRollout(t.Context(), 1,
				policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: i + 1},
				policystore.Change{Action: policystore.ActionCanary, Actor: fmt.Sprintf("admin-%d", i), CanaryPercent: i + 1})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("updates %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, policystore.ErrStaleGeneration):
			t.Errorf("update %d = %v, want nil or ErrStaleGeneration", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no update won")
	}
	r, err := s.Rollout(t.Context())
	if err != nil || r.Generation != 2 || r.CanaryPercent != winner+1 || r.UpdatedBy != fmt.Sprintf("admin-%d", winner) {
		t.Fatalf("Rollout = %+v, %v; want generation 2 written by admin-%d", r, err, winner)
	}
	h, err := s.History(t.Context(), policystore.MaxHistoryLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Generation != 2 || h[0].Actor != r.UpdatedBy || h[1].Generation != 1 {
		t.Fatalf("History = %+v, want generation 2 by %s, then 1", h, r.UpdatedBy)
	}
}

func testHistory(t *testing.T, s policystore.Store) {
	ctx := t.Context()
	if h, err := s.History(ctx, 10); err != nil || len(h) != 0 {
		t.Fatalf("History of an empty store = %v, %v; want none", h, err)
	}
	for _, limit := range []int{0, -1, policystore.MaxHistoryLimit + 1} {
		if _, err := s.History(ctx, limit); !errors.Is(err, policystore.ErrInvalid) {
			t.Errorf("History(%d) = %v, want ErrInvalid", limit, err)
		}
	}
	putBundles(t, s, "v1", "v2")
	changes := []policystore.Change{
		{Action: policystore.ActionInit, Actor: "pdp", To: "v1"},
		{Action: policystore.ActionShadow, Actor: "alice", From: "v1", To: "v2"},
		{Action: policystore.ActionCanary, Actor: "alice", From: "v1", To: "v2", CanaryPercent: 30},
		{Action: policystore.ActionPromote, Actor: "bob", From: "v1", To: "v2", Forced: true},
		{Action: policystore.ActionRollback, Actor: "carol", From: "v2", To: "v1"},
	}
	states := []policystore.Rollout{
		{Active: "v1", Mode: policystore.ModeNone},
		{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow},
		{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 30},
		{Active: "v2", Mode: policystore.ModeNone, Previous: "v1"},
		{Active: "v1", Mode: policystore.ModeNone, Previous: "v2"},
	}
	written := make([]policystore.Rollout, len(changes))
	for i := range changes {
		written[i] = update(t, s, int64(i), states[i], changes[i])
	}
	for _, limit := range []int{1, 2, 5, policystore.MaxHistoryLimit} {
		h, err := s.History(ctx, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != min(limit, len(changes)) {
			t.Fatalf("History(%d) = %d entries, want %d", limit, len(h), min(limit, len(changes)))
		}
		for j, e := range h {
			i := len(changes) - 1 - j // newest first
			if e.Generation != int64(i+1) || e.Change != changes[i] || !e.Time.Equal(written[i].UpdatedAt) {
				t.Errorf("History(%d)[%d] = %+v, want generation %d, %+v at %v", limit, j, e, i+1, changes[i], written[i].UpdatedAt)
			}
		}
	}
}

// waitSignal fails unless ch receives a value within signalTimeout.
func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed, want a value", what)
		}
	case <-time.After(signalTimeout):
		t.Fatalf("%s: no value within %v", what, signalTimeout)
	}
}

// waitClosed fails unless ch is closed within signalTimeout (values still
// pending are drained).
func waitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	timeout := time.After(signalTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("channel not closed within %v of cancelling its context", signalTimeout)
		}
	}
}

func testSubscribe(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1", "v2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	first, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, policystore.Change{Action: policystore.ActionInit, Actor: "pdp"})
	waitSignal(t, first, "first subscriber after init")
	waitSignal(t, second, "second subscriber after init")
	update(t, s, 1, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow}, policystore.Change{Action: policystore.ActionShadow, Actor: "alice"})
	waitSignal(t, first, "first subscriber after shadow")
	cancel()
	waitClosed(t, first)
	waitClosed(t, second)
}

// testSubscribeCoalesces: changes never wait for a subscriber that does
// not read, and it still learns of them.
func testSubscribeCoalesces(t *testing.T, s policystore.Store) {
	putBundles(t, s, "v1", "v2")
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, policystore.Change{Action: policystore.ActionInit, Actor: "pdp"})
	for gen := int64(1); gen <= 4; gen++ {
		next := policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: int(gen)}
		update(t, s, gen, next, policystore.Change{Action: policystore.ActionCanary, Actor: "alice"})
	}
	waitSignal(t, ch, "after five changes")
}

// at returns a comparison time: base plus seconds.
func at(seconds int) time.Time {
	return time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC).Add(time.Duration(seconds) * time.Second)
}

// comparison returns a comparison of one request.
func comparison(id, active, activeReason, candidate, candidateReason string, seconds int) policystore.Comparison {
	return policystore.Comparison{
		DecisionID: id, ActiveDecision: active, ActiveReason: activeReason,
		CandidateDecision: candidate, CandidateReason: candidateReason,
		Subject: "user:" + id, Tenant: "acme", Action: "invoice.read", Resource: "invoice/" + id,
		Time: at(seconds),
	}
}

func record(t *testing.T, s policystore.Store, active, candidate string, dropped int64, comps ...policystore.Comparison) {
	t.Helper()
	if err := s.RecordComparisons(t.Context(), active, candidate, comps, dropped); err != nil {
		t.Fatalf("RecordComparisons(%s, %s) = %v", active, candidate, err)
	}
}

func report(t *testing.T, s policystore.Store, active, candidate string, samples int) policystore.Report {
	t.Helper()
	r, err := s.Report(t.Context(), active, candidate, samples)
	if err != nil {
		t.Fatalf("Report(%s, %s, %d) = %v", active, candidate, samples, err)
	}
	if r.Active != active || r.Candidate != candidate {
		t.Fatalf("Report(%s, %s) is of %s and %s", active, candidate, r.Active, r.Candidate)
	}
	return r
}

// wantGroup is a DivergenceGroup with its samples' decision ids.
type wantGroup struct {
	transition, activeReason, candidateReason string
	count                                     int64
	samples                                   []string
}

// checkReport compares r with the counts and groups wanted; the samples
// must be the comparisons recorded (from recorded, by decision id).
func checkReport(t *testing.T, r policystore.Report, compared, agreed, dropped int64, groups []wantGroup, recorded map[string]policystore.Comparison) {
	t.Helper()
	if r.Compared != compared || r.Agreed != agreed || r.Dropped != dropped {
		t.Errorf("Report counts = compared %d, agreed %d, dropped %d; want %d, %d, %d",
			r.Compared, r.Agreed, r.Dropped, compared, agreed, dropped)
	}
	if len(r.Groups) != len(groups) {
		t.Fatalf("Report has %d groups, want %d: %+v", len(r.Groups), len(groups), r.Groups)
	}
	for i, g := range r.Groups {
		w := groups[i]
		if g.Transition != w.transition || g.ActiveReason != w.activeReason || g.CandidateReason != w.candidateReason || g.Count != w.count {
			t.Errorf("group %d = %s (%s, %s) x%d, want %s (%s, %s) x%d", i,
				g.Transition, g.ActiveReason, g.CandidateReason, g.Count,
				w.transition, w.activeReason, w.candidateReason, w.count)
		}
		var ids []string
		for _, smp := range g.Samples {
			ids = append(ids, smp.DecisionID)
			want := recorded[smp.DecisionID]
			if !want.Time.Equal(smp.Time) {
				t.Errorf("sample %s time = %v, want %v", smp.DecisionID, smp.Time, want.Time)
			}
			smp.Time, want.Time = time.Time{}, time.Time{}
			if smp != want {
				t.Errorf("sample = %+v, want %+v", smp, want)
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint(w.samples) {
			t.Errorf("group %d (%s) samples = %v, want %v", i, g.Transition, ids, w.samples)
		}
	}
}

func index(comps ...policystore.Comparison) map[string]policystore.Comparison {
	m := make(map[string]policystore.Comparison, len(comps))
	for _, c := range comps {
		m[c.DecisionID] = c
	}
	return m
}

func testReport(t *testing.T, s policystore.Store) {
	first := []policystore.Comparison{
		comparison("a1", "allow", "role_grants", "allow", "role_grants", 0),
		comparison("a2", "deny", "no_role", "deny", "no_role", 0),
		comparison("d1", "allow", "role_grants", "deny", "no_role", 1),
		comparison("d2", "allow", "role_grants", "deny", "no_role", 3),
		comparison("d3", "allow", "role_grants", "deny", "no_role", 2),
		comparison("d4", "deny", "no_role", "allow", "role_grants", 1),
		comparison("d5", "deny", "no_role", "allow", "role_grants", 5),
		comparison("d6", "allow", "role_grants", "allow", "scope_grants", 4),
		comparison("d7", "not_applicable", "no_applicable_policy", "indeterminate", "evaluation_error", 4),
	}
	// d8 has d2's time and was recorded later: it is the newer sample.
	d8 := comparison("d8", "allow", "role_grants", "deny", "no_role", 3)
	record(t, s, "v1", "v2", 3, first...)
	record(t, s, "v1", "v2", 2, d8)
	recorded := index(append(first, d8)...)

	r := report(t, s, "v1", "v2", 2)
	checkReport(t, r, 10, 2, 5, []wantGroup{
		{"allow->deny", "role_grants", "no_role", 4, []string{"d8", "d2"}},
		{"deny->allow", "no_role", "role_grants", 2, []string{"d5", "d4"}},
		{"allow->allow", "role_grants", "scope_grants", 1, []string{"d6"}},
		{"not_applicable->indeterminate", "no_applicable_policy", "evaluation_error", 1, []string{"d7"}},
	}, recorded)
	r = report(t, s, "v1", "v2", policystore.MaxSamplesPerGroup)
	if ids := r.Groups[0].Samples; len(ids) != 4 || ids[2].DecisionID != "d3" || ids[3].DecisionID != "d1" {
		t.Errorf("all samples of allow->deny = %+v, want d8, d2, d3, d1", ids)
	}
	if !r.Groups[1].Loosens() || r.Groups[0].Loosens() || r.Groups[2].Loosens() {
		t.Errorf("Loosens of the groups = %v, %v, %v; want false, true, false",
			r.Groups[0].Loosens(), r.Groups[1].Loosens(), r.Groups[2].Loosens())
	}
}

// testReportOrder: groups of equal count are ordered by transition, then
// reasons, comparing bytes (so "Zeta" sorts before "alpha").
func testReportOrder(t *testing.T, s policystore.Store) {
	comps := []policystore.Comparison{
		comparison("c1", "deny", "b", "allow", "a", 0),
		comparison("c2", "allow", "b", "deny", "b", 0),
		comparison("c3", "allow", "alpha", "deny", "z", 0),
		comparison("c4", "allow", "b", "deny", "a", 0),
		comparison("c5", "allow", "Zeta", "deny", "z", 0),
		comparison("c6", "indeterminate", "e", "deny", "d", 0),
		comparison("c7", "indeterminate", "e", "deny", "d", 1),
	}
	record(t, s, "v1", "v2", 0, comps...)
	checkReport(t, report(t, s, "v1", "v2", 1), 7, 0, 0, []wantGroup{
		{"indeterminate->deny", "e", "d", 2, []string{"c7"}},
		{"allow->deny", "Zeta", "z", 1, []string{"c5"}},
		{"allow->deny", "alpha", "z", 1, []string{"c3"}},
		{"allow->deny", "b", "a", 1, []string{"c4"}},
		{"allow->deny", "b", "b", 1, []string{"c2"}},
		{"deny->allow", "b", "a", 1, []string{"c1"}},
	}, index(comps...))
}

func testReportPairs(t *testing.T, s policystore.Store) {
	c12 := comparison("x1", "allow", "role_grants", "deny", "no_role", 0)
	c13 := comparison("x2", "deny", "no_role", "allow", "role_grants", 0)
	record(t, s, "v1", "v2", 1, c12)
	record(t, s, "v1", "v3", 0, c13, comparison("x3", "deny", "r", "deny", "r", 0))
	recorded := index(c12, c13)
	checkReport(t, report(t, s, "v1", "v2", 5), 1, 0, 1,
		[]wantGroup{{"allow->deny", "role_grants", "no_role", 1, []string{"x1"}}}, recorded)
	checkReport(t, report(t, s, "v1", "v3", 5), 2, 1, 0,
		[]wantGroup{{"deny->allow", "no_role", "role_grants", 1, []string{"x2"}}}, recorded)
	checkReport(t, report(t, s, "v2", "v1", 5), 0, 0, 0, nil, recorded)
	checkReport(t, report(t, s, "v7", "v8", 5), 0, 0, 0, nil, recorded)
}

func testRecordDroppedOnly(t *testing.T, s policystore.Store) {
	record(t, s, "v1", "v2", 4)
	record(t, s, "v1", "v2", 0)
	record(t, s, "v1", "v2", 3, []policystore.Comparison{}...)
	checkReport(t, report(t, s, "v1", "v2", 1), 0, 0, 7, nil, nil)
}

func testRecordComparisonsInvalid(t *testing.T, s policystore.Store) {
	tests := []struct {
		name              string
		active, candidate string
		dropped           int64
		edit              func(c *policystore.Comparison)
	}{
		{"empty decision id", "v1", "v2", 5, func(c *policystore.Comparison) { c.DecisionID = "" }},
		{"upper-case decision", "v1", "v2", 5, func(c *policystore.Comparison) { c.ActiveDecision = "ALLOW" }},
		{"empty candidate decision", "v1", "v2", 5, func(c *policystore.Comparison) { c.CandidateDecision = "" }},
		{"unknown decision", "v1", "v2", 5, func(c *policystore.Comparison) { c.CandidateDecision = "permit" }},
		{"subject too long", "v1", "v2", 5, func(c *policystore.Comparison) { c.Subject = strings.Repeat("s", 1025) }},
		{"resource too long", "v1", "v2", 5, func(c *policystore.Comparison) { c.Resource = strings.Repeat("r", 1025) }},
		{"reason not UTF-8", "v1", "v2", 5, func(c *policystore.Comparison) { c.ActiveReason = "\xff" }},
		{"tenant with NUL", "v1", "v2", 5, func(c *policystore.Comparison) { c.Tenant = "a\x00b" }},
		{"zero time", "v1", "v2", 5, func(c *policystore.Comparison) { c.Time = time.Time{} }},
		{"empty active", "", "v2", 5, func(*policystore.Comparison) {}},
		{"empty candidate", "v1", "", 5, func(*policystore.Comparison) {}},
		{"negative dropped", "v1", "v2", -1, func(*policystore.Comparison) {}},
	}
	for _, tc := range tests {
		bad := comparison("bad", "allow", "r", "deny", "r", 1)
		tc.edit(&bad)
		// A valid divergence first: the batch is all or nothing.
		batch := []policystore.Comparison{comparison("good", "allow", "r", "deny", "q", 0), bad}
		if err := s.RecordComparisons(t.Context(), tc.active, tc.candidate, batch, tc.dropped); !errors.Is(err, policystore.ErrInvalid) {
			t.Errorf("%s: RecordComparisons = %v, want ErrInvalid", tc.name, err)
		}
	}
	checkReport(t, report(t, s, "v1", "v2", 1), 0, 0, 0, nil, nil)
}

func testReportInvalid(t *testing.T, s policystore.Store) {
	for _, tc := range []struct {
		active, candidate string
		samples           int
	}{
		{"v1", "v2", 0},
		{"v1", "v2", -1},
		{"v1", "v2", policystore.MaxSamplesPerGroup + 1},
		{"", "v2", 1},
		{"v1", "", 1},
		{"v1", strings.Repeat("v", 129), 1},
	} {
		if _, err := s.Report(t.Context(), tc.active, tc.candidate, tc.samples); !errors.Is(err, policystore.ErrInvalid) {
			t.Errorf("Report(%q, %q, %d) = %v, want ErrInvalid", tc.active, tc.candidate, tc.samples, err)
		}
	}
}

func testLoosens(t *testing.T) {
	t.Parallel()
	for transition, want := range map[string]bool{
		"deny->allow":           true,
		"not_applicable->allow": true,
		"indeterminate->allow":  true,
		"allow->allow":          false,
		"allow->deny":           false,
		"deny->not_applicable":  false,
		"allow->indeterminate":  false,
		"deny->deny":            false,
	} {
		if got := (policystore.DivergenceGroup{Transition: transition}).Loosens(); got != want {
			t.Errorf("Loosens of %s = %v, want %v", transition, got, want)
		}
	}
}
