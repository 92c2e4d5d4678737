package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// revocationReasonCompleted is the reason of the events that complete a
// revocation left unfinished: its grant was revoked, but the publication
// of its access tokens failed and nobody retried it. Why the grant was
// revoked is not stored, so the event does not claim it.
const revocationReasonCompleted = "revocation_completed"

const (
	// revocationCompletionInterval is how often each replica completes
	// unfinished revocations: how long, at worst, a revoked access token
	// stays valid at the gateways after its publication failed.
	revocationCompletionInterval = 5 * time.Second
	// revocationCompletionBatch bounds the revocations one round completes,
	// so a backlog (after the revocation log was down) drains over several
	// rounds instead of flooding the log and the feed at once.
	revocationCompletionBatch = 100
	// revocationCompletionTimeout bounds one round.
	revocationCompletionTimeout = 30 * time.Second
)

// startRevocationCompletion runs completeRevocations every interval until
// Close.
//
// A revocation ends its grant first, then publishes the grant's access
// tokens and only then deletes their sessions (store.RevokeAndPublish).
// When the publication fails, the caller's retry finishes the job; but
// some callers do not retry: a withdrawn consent is gone before its
// revocation runs, and a reused refresh token is retried only if the
// family is presented again. This loop finishes those revocations.
func (a *App) startRevocationCompletion(ctx context.Context, grants store.GrantStore, observer token.Observer, logger *slog.Logger, interval time.Duration) {
	a.completion = runEvery(ctx, interval, func(ctx context.Context) {
		roundCtx, cancel := context.WithTimeout(ctx, revocationCompletionTimeout)
		n, err := completeRevocations(roundCtx, grants, observer, time.Now(), revocationCompletionBatch)
		cancel()
		if n > 0 {
			logger.InfoContext(ctx, "unfinished revocations completed", slog.Int("grants", n))
		}
		if err != nil && ctx.Err() == nil {
			logger.ErrorContext(ctx, "completing unfinished revocations failed", slog.Any("error", err))
		}
	})
}

// completeRevocations finishes up to limit revocations left unfinished:
// grants revoked whose access token sessions expiring after now were
// never published and deleted. Each is revoked again as a refresh-family
// revocation (store.RevokeAndPublish, so a failure here leaves it for the
// next round) and reported to observer. It returns how many it completed
// and the errors of the others.
//
// It is safe beside a normal revocation of the same grant and on several
// replicas at once: each publishes before it deletes, so a token may be
// published twice, never deleted unpublished.
func completeRevocations(ctx context.Context, grants store.GrantStore, observer token.Observer, now time.Time, limit int) (int, error) {
	ids, err := grants.RevokedRequestsWithSessions(ctx, now, limit)
	if err != nil {
		return 0, fmt.Errorf("issuer: complete revocations: %w", err)
	}
	var (
		completed int
		errs      []error
	)
	for _, id := range ids {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		err := store.RevokeAndPublish(ctx, grants, []string{id}, func(ctx context.Context, tokens []tokensession.Record) error {
			revokedAt := time.Now().UTC()
			// Another revocation of the grant may have finished since the
			// listing: an event without a live token would tell nobody
			// anything.
			if !anyLiveAt(tokens, revokedAt) {
				return nil
			}
			return observer.Revoked(ctx, token.Revocation{
				Kind:      token.RevocationRefreshFamily,
				ID:        id,
				Reason:    revocationReasonCompleted,
				Tokens:    tokens,
				RevokedAt: revokedAt,
			})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("grant %s: %w", id, err))
			continue
		}
		completed++
	}
	if err := errors.Join(errs...); err != nil {
		return completed, fmt.Errorf("issuer: complete revocations: %w", err)
	}
	return completed, nil
}

// anyLiveAt reports whether one of tokens expires after t.
func anyLiveAt(tokens []tokensession.Record, t time.Time) bool {
	for _, rec := range tokens {
		if rec.ExpiresAt.After(t) {
			return true
		}
	}
	return false
}
