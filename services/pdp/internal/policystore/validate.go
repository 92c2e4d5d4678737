package policystore

// The argument checks of every Store method, shared by the implementations
// so that they refuse exactly the same arguments.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxRevisionBytes bounds a revision.
	maxRevisionBytes = 128
	// maxFieldBytes bounds every other string a store keeps.
	maxFieldBytes = 1024
)

// decisionStates are the decisions a Comparison may hold.
var decisionStates = map[string]bool{"allow": true, "deny": true, "not_applicable": true, "indeterminate": true}

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// checkRevision accepts a non-empty revision of at most maxRevisionBytes
// of UTF-8 without control characters.
func checkRevision(field, rev string) error {
	switch {
	case rev == "":
		return invalid("%s is empty", field)
	case len(rev) > maxRevisionBytes:
		return invalid("%s is longer than %d bytes", field, maxRevisionBytes)
	case !utf8.ValidString(rev) || strings.ContainsFunc(rev, unicode.IsControl):
		return invalid("%s is not UTF-8 without control characters", field)
	}
	return nil
}

// checkOptionalRevision accepts "" or a revision.
func checkOptionalRevision(field, rev string) error {
	if rev == "" {
		return nil
	}
	return checkRevision(field, rev)
}

// checkText accepts at most maxFieldBytes of UTF-8 without NUL (which
// PostgreSQL's text cannot hold).
func checkText(field, s string) error {
	switch {
	case len(s) > maxFieldBytes:
		return invalid("%s is longer than %d bytes", field, maxFieldBytes)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return invalid("%s is not UTF-8 without NUL", field)
	}
	return nil
}

// CheckBundle checks the argument of PutBundle.
func CheckBundle(b Bundle) error {
	if err := checkRevision("revision", b.Revision); err != nil {
		return err
	}
	if len(b.Tarball) == 0 || len(b.Tarball) > MaxBundleBytes {
		return invalid("bundle %q: tarball of %d bytes, want 1 to %d", b.Revision, len(b.Tarball), MaxBundleBytes)
	}
	sum := sha256.Sum256(b.Tarball)
	if b.Digest != hex.EncodeToString(sum[:]) {
		return invalid("bundle %q: digest is not the lowercase hex SHA-256 of the tarball", b.Revision)
	}
	if err := checkText("signing key id", b.SigningKeyID); err != nil {
		return err
	}
	return checkText("uploaded by", b.UploadedBy)
}

// CheckUpdate checks the arguments of UpdateRollout. Generation,
// UpdatedBy and UpdatedAt of next are set by the store and not checked.
func CheckUpdate(expected int64, next Rollout, change Change) error {
	if expected < 0 {
		return invalid("negative generation %d", expected)
	}
	if err := checkRevision("active", next.Active); err != nil {
		return err
	}
	if err := checkOptionalRevision("candidate", next.Candidate); err != nil {
		return err
	}
	if err := checkOptionalRevision("previous", next.Previous); err != nil {
		return err
	}
	switch next.Mode {
	case ModeNone:
		if next.Candidate != "" || next.CanaryPercent != 0 {
			return invalid("mode none takes no candidate and no canary percent")
		}
	case ModeShadow, ModeCanary:
		if next.Candidate == "" || next.Candidate == next.Active {
			return invalid("mode %s needs a candidate other than the active revision", next.Mode)
		}
		if next.Mode == ModeShadow && next.CanaryPercent != 0 {
			return invalid("mode shadow takes no canary percent")
		}
		if next.Mode == ModeCanary && (next.CanaryPercent < 1 || next.CanaryPercent > 100) {
			return invalid("canary percent %d outside 1 to 100", next.CanaryPercent)
		}
	default:
		return invalid("unknown mode %q", next.Mode)
	}
	switch change.Action {
	case ActionInit, ActionShadow, ActionCanary,
		ActionPromote, ActionRollback:
	default:
		return invalid("unknown action %q", change.Action)
	}
	if change.CanaryPercent < 0 || change.CanaryPercent > 100 {
		return invalid("change canary percent %d outside 0 to 100", change.CanaryPercent)
	}
	if err := checkText("actor", change.Actor); err != nil {
		return err
	}
	if err := checkOptionalRevision("change from", change.From); err != nil {
		return err
	}
	return checkOptionalRevision("change to", change.To)
}

// RolloutRevisions lists the revisions r names, each of which must be a
// stored bundle.
func RolloutRevisions(r Rollout) []string {
	revs := []string{r.Active}
	for _, rev := range []string{r.Candidate, r.Previous} {
		if rev != "" {
			revs = append(revs, rev)
		}
	}
	return revs
}

// CheckHistoryLimit checks the argument of History.
func CheckHistoryLimit(limit int) error {
	if limit < 1 || limit > MaxHistoryLimit {
		return invalid("history limit %d outside 1 to %d", limit, MaxHistoryLimit)
	}
	return nil
}

// CheckComparisons checks the arguments of RecordComparisons.
func CheckComparisons(active, candidate string, comps []Comparison, dropped int64) error {
	if err := checkPair(active, candidate); err != nil {
		return err
	}
	if dropped < 0 {
		return invalid("negative dropped count %d", dropped)
	}
	for i, c := range comps {
		if c.DecisionID == "" {
			return invalid("comparison %d: empty decision id", i)
		}
		if !decisionStates[c.ActiveDecision] || !decisionStates[c.CandidateDecision] {
			return invalid("comparison %d: decisions %q and %q, want allow, deny, not_applicable or indeterminate",
				i, c.ActiveDecision, c.CandidateDecision)
		}
		if c.Time.IsZero() {
			return invalid("comparison %d: zero time", i)
		}
		for _, f := range []struct{ name, value string }{
			{"decision id", c.DecisionID}, {"active reason", c.ActiveReason}, {"candidate reason", c.CandidateReason},
			{"subject", c.Subject}, {"tenant", c.Tenant}, {"action", c.Action}, {"resource", c.Resource},
		} {
			if err := checkText(fmt.Sprintf("comparison %d: %s", i, f.name), f.value); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckReport checks the arguments of Report.
func CheckReport(active, candidate string, samplesPerGroup int) error {
	if err := checkPair(active, candidate); err != nil {
		return err
	}
	if samplesPerGroup < 1 || samplesPerGroup > MaxSamplesPerGroup {
		return invalid("samples per group %d outside 1 to %d", samplesPerGroup, MaxSamplesPerGroup)
	}
	return nil
}

func checkPair(active, candidate string) error {
	if err := checkRevision("active", active); err != nil {
		return err
	}
	return checkRevision("candidate", candidate)
}
