// Package memory is an in-process policystore.Store for the demo and unit
// tests. Nothing survives a restart and nothing is shared between
// processes: use the postgres store when several PDP replicas run.
package memory

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// Store keeps the policy state in maps guarded by one lock, which makes
// every method atomic. It copies what goes in and what comes out.
type Store struct {
	mu      sync.Mutex
	bundles map[string]policystore.Bundle
	// order holds the stored revisions, oldest first.
	order   []string
	rollout policystore.Rollout
	// history holds the changes, oldest first.
	history []policystore.HistoryEntry
	subs    map[chan struct{}]struct{}
	shadow  map[pair]*shadowStats
	// seq numbers recorded comparisons, to order samples of equal time.
	seq int64
}

var _ policystore.Store = (*Store)(nil)

type pair struct{ active, candidate string }

// shadowStats is what Report needs of one pair: the counts and, per
// divergence group, its count and newest samples. Older samples are
// forgotten, so memory stays bounded.
type shadowStats struct {
	compared, agreed, dropped int64
	groups                    map[groupKey]*group
}

type groupKey struct{ transition, activeReason, candidateReason string }

type group struct {
	count int64
	// samples holds at most MaxSamplesPerGroup, newest first.
	samples []sample
}

type sample struct {
	comp policystore.Comparison
	seq  int64
}

// New returns an empty store.
func New() *Store {
	return &Store{
		bundles: make(map[string]policystore.Bundle),
		subs:    make(map[chan struct{}]struct{}),
		shadow:  make(map[pair]*shadowStats),
	}
}

// now is the store's clock, at the precision PostgreSQL keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// PutBundle implements policystore.Store.
func (s *Store) PutBundle(_ context.Context, b policystore.Bundle) (bool, error) {
	if err := policystore.CheckBundle(b); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.bundles[b.Revision]; ok {
		if old.Digest != b.Digest {
			return false, fmt.Errorf("bundle %q: %w", b.Revision, policystore.ErrRevisionConflict)
		}
		return false, nil
	}
	b.Tarball = bytes.Clone(b.Tarball)
	b.UploadedAt = now()
	s.bundles[b.Revision] = b
	s.order = append(s.order, b.Revision)
	return true, nil
}

// Bundle implements policystore.Store.
func (s *Store) Bundle(_ context.Context, revision string) (policystore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bundles[revision]
	if !ok {
		return policystore.Bundle{}, fmt.Errorf("bundle %q: %w", revision, policystore.ErrNotFound)
	}
	b.Tarball = bytes.Clone(b.Tarball)
	return b, nil
}

// ListBundles implements policystore.Store.
func (s *Store) ListBundles(context.Context) ([]policystore.BundleInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	infos := make([]policystore.BundleInfo, 0, len(s.order))
	for _, rev := range slices.Backward(s.order) {
		b := s.bundles[rev]
		infos = append(infos, policystore.BundleInfo{
			Revision: b.Revision, Digest: b.Digest, SizeBytes: int64(len(b.Tarball)),
			SigningKeyID: b.SigningKeyID, UploadedBy: b.UploadedBy, UploadedAt: b.UploadedAt,
		})
	}
	return infos, nil
}

// Rollout implements policystore.Store.
func (s *Store) Rollout(context.Context) (policystore.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rollout, nil
}

// UpdateRollout implements policystore.Store.
func (s *Store) UpdateRollout(_ context.Context, expected int64, next policystore.Rollout, change policystore.Change) (policystore.Rollout, error) {
	if err := policystore.CheckUpdate(expected, next, change); err != nil {
		return policystore.Rollout{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rev := range policystore.RolloutRevisions(next) {
		if _, ok := s.bundles[rev]; !ok {
			return policystore.Rollout{}, fmt.Errorf("rollout names bundle %q: %w", rev, policystore.ErrNotFound)
		}
	}
	if s.rollout.Generation != expected {
		return policystore.Rollout{}, fmt.Errorf("expected generation %d, current %d: %w",
			expected, s.rollout.Generation, policystore.ErrStaleGeneration)
	}
	next.Generation, next.UpdatedBy, next.UpdatedAt = expected+1, change.Actor, now()
	s.rollout = next
	s.history = append(s.history, policystore.HistoryEntry{Generation: next.Generation, Change: change, Time: next.UpdatedAt})
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a value is pending already: it stands for this change too
		}
	}
	return next, nil
}

// History implements policystore.Store.
func (s *Store) History(_ context.Context, limit int) ([]policystore.HistoryEntry, error) {
	if err := policystore.CheckHistoryLimit(limit); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := make([]policystore.HistoryEntry, 0, min(limit, len(s.history)))
	for _, e := range slices.Backward(s.history) {
		if len(entries) == limit {
			break
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// Subscribe implements policystore.Store. Each subscriber has a channel
// with room for one value; a change finding it full adds nothing.
func (s *Store) Subscribe(ctx context.Context) (<-chan struct{}, error) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, ch)
		close(ch)
	})
	return ch, nil
}

// RecordComparisons implements policystore.Store.
func (s *Store) RecordComparisons(_ context.Context, active, candidate string, comps []policystore.Comparison, dropped int64) error {
	if err := policystore.CheckComparisons(active, candidate, comps, dropped); err != nil {
		return err
	}
	if len(comps) == 0 && dropped == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.shadow[pair{active, candidate}]
	if st == nil {
		st = &shadowStats{groups: make(map[groupKey]*group)}
		s.shadow[pair{active, candidate}] = st
	}
	st.dropped += dropped
	for _, c := range comps {
		st.compared++
		if c.Agreed() {
			st.agreed++
			continue
		}
		key := groupKey{c.Transition(), c.ActiveReason, c.CandidateReason}
		g := st.groups[key]
		if g == nil {
			g = &group{}
			st.groups[key] = g
		}
		g.count++
		s.seq++
		c.Time = c.Time.UTC().Truncate(time.Microsecond)
		g.samples = append(g.samples, sample{comp: c, seq: s.seq})
		slices.SortFunc(g.samples, newestFirst)
		g.samples = g.samples[:min(len(g.samples), policystore.MaxSamplesPerGroup)]
	}
	return nil
}

func newestFirst(a, b sample) int {
	if c := b.comp.Time.Compare(a.comp.Time); c != 0 {
		return c
	}
	return cmp.Compare(b.seq, a.seq)
}

// Report implements policystore.Store.
func (s *Store) Report(_ context.Context, active, candidate string, samplesPerGroup int) (policystore.Report, error) {
	if err := policystore.CheckReport(active, candidate, samplesPerGroup); err != nil {
		return policystore.Report{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := policystore.Report{Active: active, Candidate: candidate}
	st := s.shadow[pair{active, candidate}]
	if st == nil {
		return r, nil
	}
	r.Compared, r.Agreed, r.Dropped = st.compared, st.agreed, st.dropped
	for key, g := range st.groups {
		dg := policystore.DivergenceGroup{
			Transition: key.transition, ActiveReason: key.activeReason, CandidateReason: key.candidateReason,
			Count: g.count,
		}
		for _, smp := range g.samples[:min(len(g.samples), samplesPerGroup)] {
			dg.Samples = append(dg.Samples, smp.comp)
		}
		r.Groups = append(r.Groups, dg)
	}
	slices.SortFunc(r.Groups, func(a, b policystore.DivergenceGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Transition, b.Transition),
			cmp.Compare(a.ActiveReason, b.ActiveReason), cmp.Compare(a.CandidateReason, b.CandidateReason))
	})
	return r, nil
}
