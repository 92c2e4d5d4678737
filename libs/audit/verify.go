package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// ErrTampered is wrapped by Verify's error when the chain is not intact.
var ErrTampered = errors.New("audit chain tampered")

// ProblemKind classifies what Verify found wrong.
type ProblemKind string

// Kinds of Problem.
const (
	// ProblemChanged: an event's fields no longer match its Hash (or the
	// last event's Hash no longer matches the chain head).
	ProblemChanged ProblemKind = "changed"
	// ProblemRemoved: events are missing: a gap in Seq, a chain that does
	// not start at 1, or one that ends before its head.
	ProblemRemoved ProblemKind = "removed"
	// ProblemInserted: an event that is not part of the chain: a repeated
	// Seq, or events past the chain head.
	ProblemInserted ProblemKind = "inserted"
	// ProblemBrokenLink: an event's PrevHash is not its predecessor's Hash:
	// the predecessor was replaced by an event with a recomputed hash, or
	// events were removed or inserted and the rest renumbered and rehashed.
	ProblemBrokenLink ProblemKind = "broken_link"
)

// Problem is the first place where a chain is not intact. It is the error
// Verify returns for it, and wraps ErrTampered.
type Problem struct {
	// Kind says what is wrong.
	Kind ProblemKind
	// Seq is the first Seq affected: the changed event, the first missing
	// one, the inserted one, or the one whose link is broken.
	Seq int64
	// Detail explains the finding for a human.
	Detail string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("audit: chain not intact at seq %d: %s: %s", p.Seq, p.Kind, p.Detail)
}

// Unwrap returns ErrTampered.
func (p *Problem) Unwrap() error { return ErrTampered }

// Report is the result of Verify.
type Report struct {
	// Checked counts the events whose hash and link were verified.
	Checked int64
	// Verified is the last event whose hash and link to its predecessor
	// check out: the end of the chain when Problem is nil.
	Verified Head
	// Problem is the first problem found, nil for an intact chain.
	Problem *Problem
}

// Verify walks s's chain from the first event, recomputes every hash,
// checks every link and compares the end with s's head. It returns the
// first problem both in the Report and as the error (a *Problem wrapping
// ErrTampered), or another error when s cannot be read. Events appended
// while Verify runs are verified too, up to the head Verify reads after its
// walk.
//
// Verify detects any change to a stored event, the removal of any event,
// and an event inserted anywhere but at the end with the head moved along.
// An attacker who can rewrite the whole table can rebuild a consistent
// chain: compare Report.Verified with a head recorded elsewhere to rule that
// out (see docs/audit.md).
func Verify(ctx context.Context, s Store) (Report, error) {
	var v verifier
	if err := v.walk(ctx, s, math.MaxInt64); err != nil || v.problem != nil {
		return v.report(err)
	}
	head, err := s.Head(ctx)
	if err != nil {
		return v.report(fmt.Errorf("audit: verify: read head: %w", err))
	}
	if v.last.Seq < head.Seq { // appended while we walked
		if err := v.walk(ctx, s, head.Seq); err != nil || v.problem != nil {
			return v.report(err)
		}
	}
	switch {
	case v.last.Seq > head.Seq:
		v.problem = &Problem{Kind: ProblemInserted, Seq: head.Seq + 1,
			Detail: fmt.Sprintf("the log goes on to seq %d past its head at seq %d", v.last.Seq, head.Seq)}
	case v.last.Seq < head.Seq:
		v.problem = &Problem{Kind: ProblemRemoved, Seq: v.last.Seq + 1,
			Detail: fmt.Sprintf("the log ends at seq %d but its head is at seq %d", v.last.Seq, head.Seq)}
	case v.last.Hash != head.Hash:
		v.problem = &Problem{Kind: ProblemChanged, Seq: head.Seq,
			Detail: "the last event's hash is not the one recorded in the chain head"}
	}
	return v.report(nil)
}

// verifier holds Verify's progress: the intact prefix so far.
type verifier struct {
	last    Head
	checked int64
	problem *Problem
}

// walk checks events after v.last up to and including seq until, stopping
// at the end of the log or the first problem.
func (v *verifier) walk(ctx context.Context, s Store, until int64) error {
	for v.last.Seq < until {
		page, err := s.List(ctx, Query{AfterSeq: v.last.Seq, Limit: MaxListLimit})
		if err != nil {
			return fmt.Errorf("audit: verify: list after seq %d: %w", v.last.Seq, err)
		}
		for _, e := range page {
			if e.Seq > until {
				return nil
			}
			if v.problem = v.check(e); v.problem != nil {
				return nil
			}
		}
		if len(page) < MaxListLimit {
			return nil
		}
	}
	return nil
}

// check verifies that e follows v.last and advances v.last to it.
func (v *verifier) check(e Event) *Problem {
	switch want := v.last.Seq + 1; {
	case e.Seq > want:
		detail := fmt.Sprintf("events %d to %d are missing", want, e.Seq-1)
		if e.Seq == want+1 {
			detail = fmt.Sprintf("event %d is missing", want)
		}
		return &Problem{Kind: ProblemRemoved, Seq: want, Detail: detail}
	case e.Seq < want:
		return &Problem{Kind: ProblemInserted, Seq: e.Seq,
			Detail: fmt.Sprintf("seq %d appears again after seq %d", e.Seq, v.last.Seq)}
	}
	hash, err := e.ComputeHash()
	if err != nil {
		return &Problem{Kind: ProblemChanged, Seq: e.Seq, Detail: err.Error()}
	}
	if hash != e.Hash {
		return &Problem{Kind: ProblemChanged, Seq: e.Seq,
			Detail: fmt.Sprintf("event %s does not match its hash", e.EventID)}
	}
	if e.PrevHash != v.last.Hash {
		detail := fmt.Sprintf("prev_hash is not the hash of the event at seq %d", v.last.Seq)
		if v.last.Seq == 0 {
			detail = "the first event's prev_hash is not empty"
		}
		return &Problem{Kind: ProblemBrokenLink, Seq: e.Seq, Detail: detail}
	}
	v.last = Head{Seq: e.Seq, Hash: e.Hash}
	v.checked++
	return nil
}

func (v *verifier) report(err error) (Report, error) {
	r := Report{Checked: v.checked, Verified: v.last, Problem: v.problem}
	if err == nil && v.problem != nil {
		err = v.problem
	}
	return r, err
}
