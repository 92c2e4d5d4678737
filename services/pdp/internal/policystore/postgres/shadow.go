package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// divergenceColumns are the policy_divergences columns RecordComparisons
// writes, in order.
var divergenceColumns = []string{
	"active", "candidate", "decision_id", "active_decision", "active_reason",
	"candidate_decision", "candidate_reason", "subject", "tenant", "action", "resource", "occurred_at",
}

// RecordComparisons implements policystore.Store.
func (s *Store) RecordComparisons(ctx context.Context, active, candidate string, comps []policystore.Comparison, dropped int64) error {
	if err := policystore.CheckComparisons(active, candidate, comps, dropped); err != nil {
		return err
	}
	if len(comps) == 0 && dropped == 0 {
		return nil
	}
	var divergent [][]any
	for _, c := range comps {
		if !c.Agreed() {
			divergent = append(divergent, []any{
				active, candidate, c.DecisionID, c.ActiveDecision, c.ActiveReason,
				c.CandidateDecision, c.CandidateReason, c.Subject, c.Tenant, c.Action, c.Resource, c.Time,
			})
		}
	}
	agreed := len(comps) - len(divergent)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO policy_shadow_counts (active, candidate, compared, agreed, dropped)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (active, candidate) DO UPDATE SET
				compared = policy_shadow_counts.compared + EXCLUDED.compared,
				agreed = policy_shadow_counts.agreed + EXCLUDED.agreed,
				dropped = policy_shadow_counts.dropped + EXCLUDED.dropped`,
			active, candidate, len(comps), agreed, dropped); err != nil {
			return err
		}
		if len(divergent) == 0 {
			return nil
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"policy_divergences"}, divergenceColumns, pgx.CopyFromRows(divergent))
		return err
	})
	if err != nil {
		return fmt.Errorf("policy store: record comparisons: %w", err)
	}
	return nil
}

// Report implements policystore.Store. Both reads run in one snapshot, so
// the counts and the groups agree. Groups and samples are ordered in SQL,
// comparing text by bytes (COLLATE "C"), as the memory store does.
func (s *Store) Report(ctx context.Context, active, candidate string, samplesPerGroup int) (policystore.Report, error) {
	if err := policystore.CheckReport(active, candidate, samplesPerGroup); err != nil {
		return policystore.Report{}, err
	}
	r := policystore.Report{Active: active, Candidate: candidate}
	txOpts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, s.pool, txOpts, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			SELECT compared, agreed, dropped FROM policy_shadow_counts
			WHERE active = $1 AND candidate = $2`, active, candidate).Scan(&r.Compared, &r.Agreed, &r.Dropped)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, err := tx.Query(ctx, `
			SELECT transition, active_reason, candidate_reason, n,
			       decision_id, active_decision, candidate_decision, subject, tenant, action, resource, occurred_at
			FROM (
				SELECT *, active_decision || '->' || candidate_decision AS transition,
				       count(*) OVER g AS n,
				       row_number() OVER (g ORDER BY occurred_at DESC, id DESC) AS rank
				FROM policy_divergences
				WHERE active = $1 AND candidate = $2
				WINDOW g AS (PARTITION BY active_decision, candidate_decision, active_reason, candidate_reason)
			) AS d
			WHERE rank <= $3
			ORDER BY n DESC, transition COLLATE "C", active_reason COLLATE "C", candidate_reason COLLATE "C", rank`,
			active, candidate, samplesPerGroup)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				g policystore.DivergenceGroup
				c policystore.Comparison
			)
			if err := rows.Scan(&g.Transition, &g.ActiveReason, &g.CandidateReason, &g.Count,
				&c.DecisionID, &c.ActiveDecision, &c.CandidateDecision, &c.Subject, &c.Tenant, &c.Action, &c.Resource, &c.Time); err != nil {
				return err
			}
			c.ActiveReason, c.CandidateReason, c.Time = g.ActiveReason, g.CandidateReason, c.Time.UTC()
			if n := len(r.Groups); n == 0 || !sameGroup(r.Groups[n-1], g) {
				r.Groups = append(r.Groups, g)
			}
			last := &r.Groups[len(r.Groups)-1]
			last.Samples = append(last.Samples, c)
		}
		return rows.Err()
	})
	if err != nil {
		return policystore.Report{}, fmt.Errorf("policy store: report: %w", err)
	}
	return r, nil
}

func sameGroup(a, b policystore.DivergenceGroup) bool {
	return a.Transition == b.Transition && a.ActiveReason == b.ActiveReason && a.CandidateReason == b.CandidateReason
}
