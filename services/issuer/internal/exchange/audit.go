package exchange

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

// Decisions of a token.exchanged event.
const (
	decisionAllow = "ALLOW"
	decisionDeny  = "DENY"
)

// attempt is what is known of an exchange so far, for its audit event.
// It holds no token.
type attempt struct {
	requestID, clientID string
	// sourceIP is the token request's peer address (PDP input only).
	sourceIP string
	mode     string
	// subject, tenant and chain describe the token to issue (chain
	// outermost actor first).
	subject, tenant      string
	chain                []string
	subjectJTI, actorJTI string
	ticketID             string
	ticketAccess         string
	audience, scopes     []string
	// requestedScope is the scope parameter as sent.
	requestedScope string
	// decision is the PDP's, when it was asked.
	decision enforce.Decision
	started  time.Time
}

// attemptOf rebuilds the attempt of a validated exchange from its request
// and session.
func attemptOf(ar fosite.AccessRequester, sess *token.Session) *attempt {
	x := sess.Exchange
	tenant, _ := sess.JWTClaims.Extra["tenant"].(string)
	return &attempt{
		requestID: x.RequestID, clientID: ar.GetClient().GetID(), mode: x.Mode,
		subject: sess.JWTClaims.Subject, tenant: tenant, chain: chainOfClaim(sess.JWTClaims.Extra["act"]),
		subjectJTI: x.SubjectJTI, actorJTI: x.ActorJTI, ticketID: x.TicketID, ticketAccess: x.TicketAccess,
		audience: ar.GetGrantedAudience(), scopes: ar.GetGrantedScopes(),
		requestedScope: strings.Join(ar.GetRequestedScopes(), " "),
		decision: enforce.Decision{
			State: authzv1.Decision_DECISION_ALLOW, DecisionID: x.DecisionID,
			PolicyVersion: x.PolicyVersion, ReasonCode: x.ReasonCode,
		},
		started: ar.GetRequestedAt(),
	}
}

// chainOfClaim lists the subjects of an act claim, outermost first.
func chainOfClaim(act any) []string {
	var out []string
	for m, ok := act.(map[string]any); ok && len(out) < maxActorDepth+1; m, ok = m["act"].(map[string]any) {
		sub, _ := m["sub"].(string)
		out = append(out, sub)
	}
	return out
}

// allowed records the exchange that issued the token of sess.
func (h *handler) allowed(ctx context.Context, at *attempt, sess *token.Session) {
	ev := at.event(h.cfg.Now())
	ev.Decision = decisionAllow
	ev.ReasonCode = at.decision.ReasonCode
	ev.Attributes["jti"] = sess.JWTClaims.JTI
	ev.Attributes["expires_at"] = sess.GetExpiresAt(fosite.AccessToken).UTC().Format(time.RFC3339)
	h.cfg.Audit(ctx, ev)
}

// refused records an exchange refused with err (the token endpoint logs
// the detail the client is not told). Never a token.
func (h *handler) refused(ctx context.Context, at *attempt, err error) {
	rfcErr := fosite.ErrorToRFC6749Error(err)
	ev := at.event(h.cfg.Now())
	ev.Decision = decisionDeny
	ev.ReasonCode = refusalReason(err, rfcErr)
	ev.Attributes["error"] = rfcErr.ErrorField
	if at.decision.State != authzv1.Decision_DECISION_UNSPECIFIED {
		ev.Attributes["pdp_decision"] = strings.TrimPrefix(at.decision.State.String(), "DECISION_")
	}
	h.cfg.Audit(ctx, ev)
}

// refusalReason is a refusal's reason code: the policy's, or what went
// wrong with the tokens or the PDP, or else the OAuth error code.
func refusalReason(err error, rfcErr *fosite.RFC6749Error) string {
	if d, ok := errors.AsType[*token.PolicyDenial](err); ok {
		return d.ReasonCode
	}
	switch {
	case errors.Is(err, errTokenRevoked):
		return reason.TokenRevoked
	case errors.Is(err, errTokenInvalid):
		return reason.InvalidToken
	case errors.Is(err, enforce.ErrPDPUnavailable):
		return reason.PDPUnavailable
	}
	return rfcErr.ErrorField
}

// event is the token.exchanged event of at, without its outcome.
func (at *attempt) event(now time.Time) audit.Event {
	attrs := map[string]string{
		"grant_type":      GrantType,
		"mode":            at.mode,
		"subject_jti":     at.subjectJTI,
		"actor_jti":       at.actorJTI,
		"scopes":          strings.Join(at.scopes, " "),
		"requested_scope": at.requestedScope,
		"audience":        strings.Join(at.audience, " "),
		"decision_id":     at.decision.DecisionID,
	}
	if at.ticketID != "" {
		attrs["ticket_id"], attrs["ticket_access"] = at.ticketID, at.ticketAccess
	}
	for k, v := range attrs {
		if v == "" {
			delete(attrs, k)
		}
	}
	var resource string
	if at.subject != "" {
		resource = ResourceType + "/" + at.subject
	}
	var latency time.Duration
	if !at.started.IsZero() {
		latency = max(now.Sub(at.started), 0)
	}
	return audit.Event{
		Type:          audit.TypeTokenExchanged,
		Subject:       at.subject,
		ActorChain:    at.chain,
		ClientID:      at.clientID,
		Tenant:        at.tenant,
		Action:        Action,
		Resource:      resource,
		PolicyVersion: at.decision.PolicyVersion,
		RequestID:     at.requestID,
		Latency:       latency,
		Attributes:    attrs,
	}
}
