package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// Limits the PolicyAdminService documents; checked here too so that a
// mistyped number is a usage error, not a round trip.
const (
	maxHistoryLimit = 500
	maxSamples      = 20
)

// digestWidth is how much of a bundle's SHA-256 policy list shows.
const digestWidth = 12

func policyList(ctx context.Context, c *cli, cmd *command, args []string) error {
	if _, err := c.parseN(cmd, c.newFlagSet(cmd), args, 0); err != nil {
		return err
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	bundles, err := call(ctx, c, "list bundles", client.ListBundles, &authzv1.ListBundlesRequest{})
	if err != nil {
		return err
	}
	rollout, err := call(ctx, c, "get rollout", client.GetRollout, &authzv1.GetRolloutRequest{})
	if err != nil {
		return err
	}
	r := rollout.GetRollout()
	t := newTable()
	t.row("REVISION", "STATE", "DIGEST", "SIZE", "SIGNING KEY", "UPLOADED BY", "UPLOADED AT")
	for _, b := range bundles.GetBundles() {
		t.row(b.GetRevision(), bundleState(r, b.GetRevision()), shortDigest(b.GetDigest()),
			strconv.FormatInt(b.GetSizeBytes(), 10), b.GetSigningKeyId(), b.GetUploadedBy(), formatTime(b.GetUploadedAt()))
	}
	if len(bundles.GetBundles()) == 0 {
		c.progress("no bundles stored")
	}
	return t.writeTo(c.stdout)
}

// bundleState says what role revision plays in r.
func bundleState(r *authzv1.Rollout, revision string) string {
	switch revision {
	case r.GetActive():
		return "active"
	case r.GetCandidate():
		return "candidate (" + modeName(r) + ")"
	case r.GetPrevious():
		return "previous"
	}
	return ""
}

func shortDigest(d string) string {
	if len(d) > digestWidth {
		return d[:digestWidth]
	}
	return d
}

func policyStatus(ctx context.Context, c *cli, cmd *command, args []string) error {
	if _, err := c.parseN(cmd, c.newFlagSet(cmd), args, 0); err != nil {
		return err
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "get rollout", client.GetRollout, &authzv1.GetRolloutRequest{})
	if err != nil {
		return err
	}
	return c.writeRollout(res.GetRollout())
}

// writeRollout writes r as a two-column table.
func (c *cli) writeRollout(r *authzv1.Rollout) error {
	t := newTable()
	t.row("generation", strconv.FormatInt(r.GetGeneration(), 10))
	t.row("mode", modeName(r))
	t.row("active", r.GetActive())
	t.row("candidate", r.GetCandidate())
	t.row("previous", r.GetPrevious())
	t.row("updated by", r.GetUpdatedBy())
	t.row("updated at", formatTime(r.GetUpdatedAt()))
	return t.writeTo(c.stdout)
}

// modeName is "none", "shadow" or "canary N%".
func modeName(r *authzv1.Rollout) string {
	name := strings.ToLower(strings.TrimPrefix(r.GetMode().String(), "ROLLOUT_MODE_"))
	if r.GetMode() == authzv1.RolloutMode_ROLLOUT_MODE_CANARY {
		name += fmt.Sprintf(" %d%%", r.GetCanaryPercent())
	}
	return name
}

func policyHistory(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	limit := fs.Int("limit", 0, fmt.Sprintf("at most this many entries, 1..%d (default: the PDP's, 50)", maxHistoryLimit))
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	if *limit < 0 || *limit > maxHistoryLimit {
		return cmd.usageErr("-limit must be within 1..%d", maxHistoryLimit)
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "list history", client.ListHistory, &authzv1.ListHistoryRequest{Limit: int32(*limit)}) //nolint:gosec // G115: range checked above
	if err != nil {
		return err
	}
	t := newTable()
	t.row("GENERATION", "TIME", "ACTION", "FROM", "TO", "ACTOR", "NOTE")
	for _, e := range res.GetEntries() {
		var note []string
		if e.GetCanaryPercent() > 0 {
			note = append(note, fmt.Sprintf("%d%%", e.GetCanaryPercent()))
		}
		if e.GetForced() {
			note = append(note, "forced")
		}
		t.row(strconv.FormatInt(e.GetGeneration(), 10), formatTime(e.GetTime()), e.GetAction(),
			e.GetFromRevision(), e.GetToRevision(), e.GetActor(), strings.Join(note, ", "))
	}
	return t.writeTo(c.stdout)
}

func policyShadow(ctx context.Context, c *cli, cmd *command, args []string) error {
	pos, err := c.parseN(cmd, c.newFlagSet(cmd), args, 1)
	if err != nil {
		return err
	}
	if len(pos) == 0 || pos[0] == "" {
		return cmd.usageErr("REVISION is required")
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "shadow", client.StartShadow, &authzv1.StartShadowRequest{Revision: pos[0]})
	if err != nil {
		return err
	}
	r := res.GetRollout()
	if err := c.printf("%s is in shadow beside the active %s; the active bundle decides\n\n", r.GetCandidate(), r.GetActive()); err != nil {
		return err
	}
	return c.writeRollout(r)
}

func policyCanary(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	percent := fs.Int("percent", 0, "share of principals, 1..100, the candidate decides for (required)")
	pos, err := c.parseN(cmd, fs, args, 1)
	if err != nil {
		return err
	}
	if *percent < 1 || *percent > 100 {
		return cmd.usageErr("-percent must be within 1..100")
	}
	req := &authzv1.StartCanaryRequest{Percent: int32(*percent)} //nolint:gosec // G115: range checked above
	if len(pos) == 1 {
		req.Revision = pos[0]
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "canary", client.StartCanary, req)
	if err != nil {
		return err
	}
	r := res.GetRollout()
	if err := c.printf("%s decides for %d%% of principals; %s for the rest\n\n", r.GetCandidate(), r.GetCanaryPercent(), r.GetActive()); err != nil {
		return err
	}
	return c.writeRollout(r)
}

func policyPromote(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	force := fs.Bool("force", false, "promote despite deny->allow divergences in the report (audited as forced)")
	expect := fs.String("expect", "", "refuse unless the candidate is this revision")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	if *force {
		c.progress("forcing the promotion whatever the shadow report says; the PDP audits it as forced")
	}
	res, err := call(ctx, c, "promote", client.Promote, &authzv1.PromoteRequest{Force: *force, ExpectedCandidate: *expect})
	if err != nil {
		return err
	}
	r := res.GetRollout()
	if err := c.printf("%s is now the active bundle (previous: %s)\n\n", r.GetActive(), orDash(r.GetPrevious())); err != nil {
		return err
	}
	return c.writeRollout(r)
}

func policyRollback(ctx context.Context, c *cli, cmd *command, args []string) error {
	if _, err := c.parseN(cmd, c.newFlagSet(cmd), args, 0); err != nil {
		return err
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "rollback", client.Rollback, &authzv1.RollbackRequest{})
	if err != nil {
		return err
	}
	r := res.GetRollout()
	if err := c.printf("rolled back: %s is the active bundle\n\n", r.GetActive()); err != nil {
		return err
	}
	return c.writeRollout(r)
}

func policyReport(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	samples := fs.Int("samples", 0, fmt.Sprintf("samples shown per divergence group, 1..%d (default: the PDP's, 3)", maxSamples))
	pos, err := c.parseN(cmd, fs, args, 1)
	if err != nil {
		return err
	}
	if *samples < 0 || *samples > maxSamples {
		return cmd.usageErr("-samples must be within 1..%d", maxSamples)
	}
	req := &authzv1.GetReportRequest{SamplesPerGroup: int32(*samples)} //nolint:gosec // G115: range checked above
	if len(pos) == 1 {
		req.Candidate = pos[0]
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	rep, err := call(ctx, c, "get report", client.GetReport, req)
	if err != nil {
		return err
	}
	return c.writeReport(rep)
}

// writeReport writes the summary, the divergence groups and, under a
// heading per group, its samples.
func (c *cli) writeReport(rep *authzv1.GetReportResponse) error {
	summary := newTable()
	summary.row("active", rep.GetActive())
	summary.row("candidate", rep.GetCandidate())
	summary.row("compared", strconv.FormatInt(rep.GetCompared(), 10))
	summary.row("agreed", strconv.FormatInt(rep.GetAgreed(), 10))
	summary.row("agreement", fmt.Sprintf("%.2f%%", 100*rep.GetAgreementRate()))
	summary.row("dropped", strconv.FormatInt(rep.GetDropped(), 10))
	if err := summary.writeTo(c.stdout); err != nil {
		return err
	}
	groups := rep.GetGroups()
	if len(groups) == 0 {
		return c.printf("\nno divergences\n")
	}
	t := newTable()
	t.row("TRANSITION", "ACTIVE REASON", "CANDIDATE REASON", "COUNT")
	var loosening int64
	for _, g := range groups {
		t.row(g.GetTransition(), g.GetActiveReasonCode(), g.GetCandidateReasonCode(), strconv.FormatInt(g.GetCount(), 10))
		if g.GetTransition() == "deny->allow" {
			loosening += g.GetCount()
		}
	}
	if err := c.printf("\n"); err != nil {
		return err
	}
	if err := t.writeTo(c.stdout); err != nil {
		return err
	}
	for _, g := range groups {
		if len(g.GetSamples()) == 0 {
			continue
		}
		if err := c.printf("\nsamples of %s (%s -> %s):\n", g.GetTransition(), orDash(g.GetActiveReasonCode()), orDash(g.GetCandidateReasonCode())); err != nil {
			return err
		}
		s := newTable()
		s.row("  TIME", "DECISION ID", "SUBJECT", "TENANT", "ACTION", "RESOURCE")
		for _, sm := range g.GetSamples() {
			s.row("  "+orDash(formatTime(sm.GetTime())), sm.GetDecisionId(), sm.GetSubject(), sm.GetTenant(), sm.GetAction(), sm.GetResource())
		}
		if err := s.writeTo(c.stdout); err != nil {
			return err
		}
	}
	if loosening > 0 {
		return c.printf("\n%d deny->allow divergences: promote is refused unless forced\n", loosening)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
