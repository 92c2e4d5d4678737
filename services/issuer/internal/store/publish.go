package store

import (
	"context"
	"fmt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// RevokeAndPublish revokes the requests ids in the order that loses no
// publication of their access tokens: it ends their grants
// (GrantStore.MarkRequestRevoked: no token can be issued from them any
// more), lists their access token sessions, hands them to publish, and only
// then deletes them (RevokeRequest). publish gets every session listed,
// possibly none.
//
// Should publish or a deletion fail, the error is returned and the
// sessions not yet deleted stay: a retry lists them and publishes them
// again, so a revocation may be published twice but is never lost. Were
// the sessions deleted before publish succeeded, a retry would find
// nothing left to publish and report success.
func RevokeAndPublish(ctx context.Context, g GrantStore, ids []string, publish func(context.Context, []tokensession.Record) error) error {
	var tokens []tokensession.Record
	for _, id := range ids {
		if err := g.MarkRequestRevoked(ctx, id); err != nil {
			return fmt.Errorf("revoke grant: %w", err)
		}
		// Complete: the grant is revoked, so no session of it can be
		// stored any more.
		recs, err := g.RequestTokenSessions(ctx, id)
		if err != nil {
			return fmt.Errorf("revoke grant: %w", err)
		}
		tokens = append(tokens, recs...)
	}
	if err := publish(ctx, tokens); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := g.RevokeRequest(ctx, id); err != nil {
			return fmt.Errorf("revoke grant: %w", err)
		}
	}
	return nil
}
