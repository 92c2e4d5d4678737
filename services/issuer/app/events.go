package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/exchange"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// events connects what the issuer does to what others must learn of it:
// every revocation becomes an event of the revocation feed (gateways) and
// an audit event; every issued token and every login and consent change an
// audit event.
type events struct {
	revocations store.RevocationLog
	audit       audit.Emitter
	logger      *slog.Logger
	// maxTokenLifetime bounds how long a revocation without listed tokens
	// (a consent, a family with no live access token) stays relevant.
	maxTokenLifetime time.Duration
}

var _ token.Observer = (*events)(nil)

// Issued implements token.Observer: one token.issued (or token.refreshed)
// audit event, never the token. A token exchange is not recorded here: the
// exchange grant records its own token.exchanged event, with the actor
// chain and the decision, for refused exchanges too.
func (e *events) Issued(ctx context.Context, ev token.Issued) {
	if ev.GrantType == exchange.GrantType {
		return
	}
	typ := audit.TypeTokenIssued
	if ev.GrantType == "refresh_token" {
		typ = audit.TypeTokenRefreshed
	}
	e.record(ctx, audit.Event{
		Type:     typ,
		Subject:  ev.Subject,
		ClientID: ev.ClientID,
		Tenant:   ev.Tenant,
		Attributes: map[string]string{
			"grant_type":    ev.GrantType,
			"jti":           ev.JTI,
			"grant_id":      ev.RequestID,
			"scopes":        strings.Join(ev.Scopes, " "),
			"audience":      strings.Join(ev.Audience, " "),
			"expires_at":    ev.ExpiresAt.UTC().Format(time.RFC3339),
			"refresh_token": strconv.FormatBool(ev.RefreshToken),
			"id_token":      strconv.FormatBool(ev.IDToken),
		},
	})
}

// Revoked implements token.Observer: the revocation is appended to the
// feed's log first (an error fails the revocation, so the caller retries
// and no gateway misses it), then audited.
func (e *events) Revoked(ctx context.Context, r token.Revocation) error {
	ev := revocation.Event{
		Kind:      revocation.Kind(r.Kind),
		ID:        r.ID,
		Subject:   r.Subject,
		ClientID:  r.ClientID,
		RevokedAt: r.RevokedAt,
		Reason:    r.Reason,
	}
	return e.publish(ctx, ev, r.Tokens)
}

// consentWithdrawn revokes every grant resting on c and publishes one
// consent event covering them (and, by IssuedBefore, any token of the
// subject and client issued before now that the issuer no longer lists).
// The event is published before the grants' access tokens are deleted
// (store.RevokeAndPublish), so a failed publication leaves them to a retry
// instead of losing them.
func (e *events) consentWithdrawn(ctx context.Context, grants store.GrantStore, c consent.Consent) error {
	ids, err := grants.RequestIDsForConsent(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("issuer: consent %s: %w", c.ID, err)
	}
	err = store.RevokeAndPublish(ctx, grants, ids, func(ctx context.Context, tokens []tokensession.Record) error {
		now := time.Now().UTC()
		return e.publish(ctx, revocation.Event{
			Kind:         revocation.KindConsent,
			ID:           c.ID,
			Subject:      c.Subject,
			ClientID:     c.ClientID,
			Tenant:       c.Tenant,
			IssuedBefore: now,
			RevokedAt:    now,
			Reason:       token.RevocationReasonConsent,
		}, tokens)
	})
	if err != nil {
		return fmt.Errorf("issuer: consent %s: %w", c.ID, err)
	}
	return nil
}

// signedOut revokes every grant the browser session s authorized and
// publishes one session event listing their live access tokens before
// deleting them (store.RevokeAndPublish): a sign-out whose publication
// failed keeps the browser session, and its retry publishes them.
func (e *events) signedOut(ctx context.Context, grants store.GrantStore, s browsersession.Session) error {
	ids, err := grants.RequestIDsForSession(ctx, s.ID)
	if err != nil {
		return fmt.Errorf("issuer: sign-out: %w", err)
	}
	err = store.RevokeAndPublish(ctx, grants, ids, func(ctx context.Context, tokens []tokensession.Record) error {
		return e.publish(ctx, revocation.Event{
			Kind:      revocation.KindSession,
			ID:        s.ID,
			Subject:   s.Subject,
			Tenant:    s.Tenant,
			RevokedAt: time.Now().UTC(),
			Reason:    "user_logout",
		}, tokens)
	})
	if err != nil {
		return fmt.Errorf("issuer: sign-out: %w", err)
	}
	return nil
}

func (e *events) publish(ctx context.Context, ev revocation.Event, tokens []tokensession.Record) error {
	if ev.RevokedAt.IsZero() {
		ev.RevokedAt = time.Now().UTC()
	}
	ev.ExpiresAt = ev.RevokedAt
	if !ev.IssuedBefore.IsZero() {
		ev.ExpiresAt = ev.RevokedAt.Add(e.maxTokenLifetime)
	}
	for _, t := range tokens {
		if t.ExpiresAt.After(ev.RevokedAt) {
			ev.JTIs = append(ev.JTIs, t.JTI)
			ev.ExpiresAt = maxTime(ev.ExpiresAt, t.ExpiresAt)
		}
		if ev.Subject == "" {
			ev.Subject = t.Subject
		}
		if ev.ClientID == "" {
			ev.ClientID = t.ClientID
		}
	}
	if ev.Kind == revocation.KindToken {
		ev.JTIs = []string{ev.ID}
	}
	slices.Sort(ev.JTIs)
	ev.JTIs = slices.Compact(ev.JTIs)
	// An event lists at most MaxJTIs: more (a grant refreshed very often)
	// go out as several events of the one revocation. Refused, they would
	// fail the revocation on every retry, and as revocations are published
	// before they are made, the grant could never be revoked.
	jtis := ev.JTIs
	for {
		part := ev
		part.JTIs = jtis[:min(len(jtis), revocation.MaxJTIs)]
		if err := e.append(ctx, part); err != nil {
			return err
		}
		jtis = jtis[len(part.JTIs):]
		if len(jtis) == 0 {
			return nil
		}
	}
}

// append records ev in the revocation log, then audits it.
func (e *events) append(ctx context.Context, ev revocation.Event) error {
	stored, err := e.revocations.Append(ctx, ev)
	if err != nil && !errors.Is(err, revocation.ErrInvalid) {
		return fmt.Errorf("issuer: publish revocation: %w", err)
	}
	if err != nil {
		// An event the feed refuses is a bug here, not in the caller's
		// request: log it loudly and fail the revocation.
		e.logger.ErrorContext(ctx, "revocation event refused", slog.String("kind", string(ev.Kind)), slog.String("error", err.Error()))
		return fmt.Errorf("issuer: publish revocation: %w", err)
	}
	e.record(ctx, audit.Event{
		Type:       audit.TypeTokenRevoked,
		Subject:    ev.Subject,
		ClientID:   ev.ClientID,
		Tenant:     ev.Tenant,
		ReasonCode: ev.Reason,
		Attributes: map[string]string{
			"kind":   string(ev.Kind),
			"id":     ev.ID,
			"jtis":   strings.Join(ev.JTIs, " "),
			"cursor": strconv.FormatInt(stored.Cursor, 10),
		},
	})
	return nil
}

// keyCreated returns the signing-key ring's OnCreated hook: one key.created
// audit event per new key, naming who rotated (by: the schedule or the
// CLI, unless the context names an admin API client) and the predecessor
// whose retirement the rotation scheduled.
func (e *events) keyCreated(by string) func(context.Context, signingkey.Record) {
	return func(ctx context.Context, rec signingkey.Record) {
		e.record(ctx, audit.Event{
			Type:    audit.TypeKeyCreated,
			Subject: "issuer",
			Attributes: map[string]string{
				"kid":         rec.KID,
				"alg":         rec.Algorithm,
				"predecessor": rec.Predecessor,
				"activate_at": rec.ActivateAt.UTC().Format(time.RFC3339),
				"rotated_by":  rotatedBy(ctx, by),
			},
		})
	}
}

// browserAudit records the login and consent pages' events.
func (e *events) browserAudit(ctx context.Context, typ string, attrs map[string]string) {
	ev := audit.Event{Type: audit.Type(typ), Attributes: map[string]string{}}
	for k, v := range attrs {
		switch k {
		case "subject":
			ev.Subject = v
		case "client_id":
			ev.ClientID = v
		case "tenant":
			ev.Tenant = v
		case "reason":
			ev.ReasonCode = v
		default:
			ev.Attributes[k] = v
		}
	}
	e.record(ctx, ev)
}

// record hands ev to the audit recorder with the request's trace id. The
// recorder blocks when its queue is full (back-pressure) and never drops;
// an error here means the context ended first, which is logged.
func (e *events) record(ctx context.Context, ev audit.Event) {
	ev.TraceID = telemetry.TraceID(ctx)
	if err := e.audit.Record(ctx, ev); err != nil {
		e.logger.ErrorContext(ctx, "audit event not recorded", slog.String("type", string(ev.Type)), slog.String("error", err.Error()))
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
