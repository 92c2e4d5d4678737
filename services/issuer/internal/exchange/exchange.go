// Package exchange is the issuer's OAuth 2.0 Token Exchange grant (RFC
// 8693), a fosite token endpoint handler composed into the token package's
// provider. A confidential client trades a Gatehouse access token (the
// subject token) for a new, narrower one that says who acts:
//
//   - impersonation (requested_subject, a Gatehouse extension): the party
//     of the subject token (a support agent) gets a token whose sub is
//     another user, with act naming the agent;
//   - delegation (actor_token): the subject token's user stays the sub and
//     the actor token's party is named in act.
//
// Both tokens are verified as this issuer's access tokens and must not be
// revoked; audience, scopes and lifetime are only ever narrowed; the act
// claim nests the previous actors; the PDP decides every exchange (action
// token:exchange); and every exchange, allowed or refused, is an audit
// event. The new token is an RFC 9068 JWT like every other, stored with
// the subject token's grant, so whatever revokes that grant revokes it too.
package exchange

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// GrantType is the grant_type of a token exchange.
const GrantType = client.GrantTokenExchange

// TokenTypeAccessToken is the only token type exchanged and issued (RFC
// 8693 §3).
const TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token" //nolint:gosec // G101: a token type URN, not a credential

// Modes of an exchange.
const (
	ModeImpersonation = "impersonation"
	ModeDelegation    = "delegation"
)

// MaxImpersonationLifetime bounds an impersonation token's lifetime.
const MaxImpersonationLifetime = 15 * time.Minute

// maxActorDepth is the deepest act chain a token may carry: libs/accesstoken
// refuses deeper ones, so an exchange never issues one.
const maxActorDepth = 8

// descriptionNotPermitted is the error_description of every refusal by
// policy, whatever the rule: the reason_code member says which.
const descriptionNotPermitted = "token exchange not permitted"

// Users looks up the user to impersonate; store.UserStore is one.
type Users interface {
	// GetUser returns the user with username, or store.ErrNotFound.
	GetUser(ctx context.Context, username string) (*user.User, error)
}

// Config is what the grant needs.
type Config struct {
	// Issuer is the issuer identifier: the iss every exchanged token must carry.
	Issuer string
	// Keys verifies the subject and actor tokens' signatures.
	Keys KeySource
	// Tokens tells whether a token is revoked (its session is gone).
	Tokens TokenSessions
	// Users looks up requested_subject.
	Users Users
	// PDP decides every exchange.
	PDP Decider
	// Audit records one token.exchanged event per exchange (the issuer
	// adds the trace id). Required.
	Audit func(ctx context.Context, e audit.Event)
	// MaxTokenLifetime caps every token's lifetime, as the provider's;
	// tokens claiming a longer one are refused. Zero means one hour.
	MaxTokenLifetime time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Grant is the token exchange grant; TokenGrant composes it into a
// token.Provider.
type Grant struct {
	cfg Config
}

// New returns the grant for cfg.
func New(cfg Config) (*Grant, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("issuer is empty"))
	}
	if cfg.Keys == nil || cfg.Tokens == nil || cfg.Users == nil || cfg.PDP == nil || cfg.Audit == nil {
		errs = append(errs, errors.New("keys, tokens, users, pdp and audit are required"))
	}
	if cfg.MaxTokenLifetime < 0 {
		errs = append(errs, errors.New("max token lifetime is negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	if cfg.MaxTokenLifetime == 0 {
		cfg.MaxTokenLifetime = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Grant{cfg: cfg}, nil
}

// TokenGrant returns the grant for token.Config.Grants.
func (g *Grant) TokenGrant() token.Grant {
	return token.Grant{Type: GrantType, Factory: g.factory}
}

// factory is the compose.Factory of the handler: it signs with the
// provider's access-token strategy and stores with its storage.
func (g *Grant) factory(config fosite.Configurator, storage, strategy any) any {
	h := &handler{cfg: g.cfg}
	st, okStorage := storage.(oauth2.AccessTokenStorage)
	sg, okStrategy := strategy.(oauth2.AccessTokenStrategy)
	lifespans, okConfig := config.(oauth2.HandleHelperConfigProvider)
	if okStorage && okStrategy && okConfig {
		h.issue = &oauth2.HandleHelper{AccessTokenStrategy: sg, AccessTokenStorage: st, Config: lifespans}
	}
	return h
}

// handler is the fosite.TokenEndpointHandler of the grant.
type handler struct {
	cfg Config
	// issue signs and stores tokens; nil if the provider handed over the
	// wrong storage or strategy (every request is then a server error).
	issue *oauth2.HandleHelper
}

var _ fosite.TokenEndpointHandler = (*handler)(nil)

// CanHandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (h *handler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne(GrantType)
}

// CanSkipClientAuth implements fosite.TokenEndpointHandler: never; the
// client must authenticate (RFC 8693 §2.1).
func (h *handler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool { return false }

// HandleTokenEndpointRequest implements fosite.TokenEndpointHandler: it
// validates the exchange, asks the PDP and prepares the new token's
// session. A refusal is audited here.
func (h *handler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	at := &attempt{clientID: ar.GetClient().GetID(), started: h.cfg.Now()}
	at.requestID, at.sourceIP = fromRequest(ctx, ar.GetID())
	if err := h.handle(ctx, ar, at); err != nil {
		h.refused(ctx, at, err)
		return err
	}
	return nil
}

// handle does HandleTokenEndpointRequest's work, noting in at what the
// audit event needs: the client's right to the grant, the parameters, the
// exchange's plan, the PDP's decision, then the new token's session.
func (h *handler) handle(ctx context.Context, ar fosite.AccessRequester, at *attempt) error {
	c, ok := ar.GetClient().(*client.Client)
	if !ok || h.issue == nil {
		return fosite.ErrServerError.WithDebugf("exchange: client is %T, issuer configured %t", ar.GetClient(), h.issue != nil)
	}
	sess, ok := ar.GetSession().(*token.Session)
	if !ok {
		return fosite.ErrServerError.WithDebugf("exchange: session is %T, want *token.Session", ar.GetSession())
	}
	if c.IsPublic() {
		return fosite.ErrInvalidClient.WithDescription("Token exchange requires client authentication; a public client cannot use it.").WithHint("")
	}
	if !c.GetGrantTypes().Has(GrantType) {
		return fosite.ErrUnauthorizedClient.WithDescription("The client is not allowed to use token exchange.").WithHint("")
	}
	p, err := parseParams(ar.GetRequestForm())
	if err != nil {
		return err
	}
	at.mode, at.ticketID, at.ticketAccess = p.mode(), p.ticketID, p.ticketAccess
	at.requestedScope = strings.Join(ar.GetRequestedScopes(), " ")
	now := h.cfg.Now()
	pl, err := h.prepare(ctx, c, p, ar.GetRequestedScopes(), now, at)
	if err != nil {
		return err
	}
	d, err := h.decide(ctx, c, p, pl, now, at)
	if err != nil {
		return err
	}

	// The new token: a session of its own, in the subject token's grant.
	ar.SetID(pl.subject.record.RequestID)
	for _, s := range pl.scopes {
		ar.GrantScope(s)
	}
	for _, a := range pl.audience {
		ar.GrantAudience(a)
	}
	sess.Subject = pl.target.subject
	sess.JWTClaims = &jwt.JWTClaims{Subject: pl.target.subject, Extra: pl.target.claims(c.ID)}
	sess.LifetimeLimit = pl.lifetime
	sess.Exchange = &token.ExchangeRecord{
		Mode: p.mode(), RequestID: at.requestID,
		SubjectJTI: at.subjectJTI, ActorJTI: at.actorJTI,
		TicketID: p.ticketID, TicketAccess: p.ticketAccess,
		DecisionID: d.DecisionID, PolicyVersion: d.PolicyVersion, ReasonCode: d.ReasonCode,
	}
	return nil
}

// plan is a validated exchange, before the PDP's decision.
type plan struct {
	// subject and actor (delegation only) are the presented tokens.
	subject, actor *presented
	// target is the token to issue.
	target           newToken
	audience, scopes []string
	lifetime         time.Duration
}

// prepare verifies the presented tokens and works out the new token: its
// subject and actor chain (at most maxActorDepth), the tenant a
// tenant-bound client is limited to, may_act, and the narrowed audience,
// scopes and lifetime.
func (h *handler) prepare(ctx context.Context, c *client.Client, p params, requested []string, now time.Time, at *attempt) (plan, error) {
	var pl plan
	var err error
	if pl.subject, err = h.verifyParam(ctx, p.subjectToken, paramSubjectToken, now); err != nil {
		return pl, err
	}
	at.subjectJTI = pl.subject.claims.ID
	if p.actorToken != "" {
		if pl.actor, err = h.verifyParam(ctx, p.actorToken, paramActorToken, now); err != nil {
			return pl, err
		}
		at.actorJTI = pl.actor.claims.ID
	}
	if pl.target, err = h.target(ctx, c, p, pl.subject, pl.actor); err != nil {
		return pl, err
	}
	at.subject, at.tenant, at.chain = pl.target.subject, pl.target.tenant, chain(pl.target.act)
	if depth := len(at.chain); depth > maxActorDepth {
		return pl, denied(reason.ActorChainTooLong, fmt.Sprintf("act chain of %d actors, at most %d", depth, maxActorDepth))
	}
	if c.Tenant != "" && (pl.subject.claims.Tenant != c.Tenant || pl.target.tenant != c.Tenant) {
		// A tenant-bound client serves its tenant only, whoever asks.
		return pl, denied(reason.TenantMismatch, fmt.Sprintf("client of tenant %s, subject token of %s, new token for %s", c.Tenant, pl.subject.claims.Tenant, pl.target.tenant))
	}
	if m := pl.subject.mayAct; m != nil && !m.permits(pl.target.act.Subject, pl.target.act.ClientID) {
		return pl, denied(reason.ActorNotPermitted, fmt.Sprintf("may_act names %q, the acting party is %q", m.Subject, pl.target.act.Subject))
	}
	if pl.audience, err = narrowAudience(p.target, pl.subject.claims.Audience, c.GetAudience()); err != nil {
		return pl, err
	}
	if pl.scopes, err = narrowScopes(requested, pl.subject.claims.Scopes, c.GetScopes()); err != nil {
		return pl, err
	}
	at.audience, at.scopes = pl.audience, pl.scopes
	pl.lifetime, err = h.lifetime(ctx, c, p)
	return pl, err
}

// decide asks the PDP about pl. Only an ALLOW without obligations permits;
// any other answer is a refusal by policy with its reason code, and no
// answer in time is 503 temporarily_unavailable.
func (h *handler) decide(ctx context.Context, c *client.Client, p params, pl plan, now time.Time, at *attempt) (enforce.Decision, error) {
	in := decisionInput{
		requestID: at.requestID, now: now, sourceIP: at.sourceIP,
		mode: p.mode(), clientID: c.ID, subject: pl.subject.claims,
		newSubject: pl.target.subject, newTenant: pl.target.tenant, newRoles: pl.target.roles,
		audience: pl.audience, scopes: pl.scopes, lifetime: pl.lifetime,
		ticketID: p.ticketID, ticketAccess: p.ticketAccess,
	}
	if pl.actor != nil {
		in.actor = pl.actor.claims
	}
	d, err := h.cfg.PDP.Check(ctx, checkRequest(in))
	at.decision = d
	if err != nil {
		return d, fosite.ErrTemporarilyUnavailable.WithDescription("The policy decision point is unavailable; retry later.").WithWrap(err).WithDebug(err.Error())
	}
	if !d.Allowed() {
		code := d.ReasonCode
		switch {
		case d.State == authzv1.Decision_DECISION_ALLOW:
			code = reason.UnsupportedObligation
		case code == "":
			code = reason.EvaluationError
		}
		return d, denied(code, fmt.Sprintf("pdp %s (decision %s, policy %s)", d.State, d.DecisionID, d.PolicyVersion))
	}
	return d, nil
}

// PopulateTokenEndpointResponse implements fosite.TokenEndpointHandler: it
// signs and stores the token, answers with it (no refresh token:
// RFC 8693 §2.2.1 leaves that open and an exchange never issues one) and
// audits the exchange.
func (h *handler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	sess, ok := ar.GetSession().(*token.Session)
	if !ok || sess.Exchange == nil || h.issue == nil {
		return fosite.ErrServerError.WithDebugf("exchange: session is %T without an exchange record", ar.GetSession())
	}
	at := attemptOf(ar, sess)
	if _, err := h.issue.IssueAccessToken(ctx, sess.LifetimeLimit, ar, resp); err != nil {
		if errors.Is(err, store.ErrRevoked) {
			// The subject token's grant was revoked since it was checked.
			err = fosite.ErrInvalidGrant.WithDescription("The subject_token is invalid, expired or revoked.").WithWrap(fmt.Errorf("%w: %w", errTokenRevoked, err)).WithDebug(err.Error())
		}
		h.refused(ctx, at, err)
		return err
	}
	resp.SetTokenType("Bearer")
	resp.SetExtra("issued_token_type", TokenTypeAccessToken)
	h.allowed(ctx, at, sess)
	return nil
}

// verifyParam verifies the token of parameter name; a refusal is
// invalid_grant naming the parameter, the cause only in the log.
func (h *handler) verifyParam(ctx context.Context, raw, name string, now time.Time) (*presented, error) {
	tok, err := h.verify(ctx, raw, now)
	switch {
	case errors.Is(err, errStore):
		return nil, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	case err != nil:
		return nil, fosite.ErrInvalidGrant.WithDescription("The "+name+" is invalid, expired or revoked.").WithWrap(err).WithDebugf("%s: %s", name, err)
	}
	return tok, nil
}

// newToken describes the token an exchange issues.
type newToken struct {
	subject, tenant string
	roles           []string
	// act is the acting party, with the previous chain nested.
	act *accesstoken.Actor
}

// claims returns the token's claims besides those fosite sets: client_id,
// tenant, roles and act. No acr, amr or auth_time: an exchange carries no
// authentication, and never upgrades one.
func (t newToken) claims(clientID string) map[string]any {
	extra := map[string]any{
		"client_id": clientID,
		"tenant":    t.tenant,
		"act":       actClaim(t.act),
	}
	if len(t.roles) > 0 {
		extra["roles"] = slices.Clone(t.roles)
	}
	return extra
}

// target works out the new token's subject, tenant, roles and actor.
// Impersonation: the user requested_subject names (from the user store),
// acted for by the subject token's party, whose own act chain nests below.
// Delegation: the subject token's party, acted for by the actor token's,
// with the subject token's act chain nested below (RFC 8693 §4.1). The
// actor token must have been issued to the requesting client: it proves
// that the client is the actor.
func (h *handler) target(ctx context.Context, c *client.Client, p params, subject, actor *presented) (newToken, error) {
	if actor != nil {
		switch {
		case actor.claims.ClientID != c.ID:
			return newToken{}, fosite.ErrInvalidGrant.WithDescription("The actor_token was not issued to this client.").WithHint("").
				WithDebugf("actor_token of client %s", actor.claims.ClientID)
		case actor.claims.Subject == subject.claims.Subject:
			return newToken{}, invalidRequest("actor_token and subject_token name the same party.")
		}
		return newToken{
			subject: subject.claims.Subject,
			tenant:  subject.claims.Tenant,
			roles:   subject.claims.Roles,
			act:     &accesstoken.Actor{Subject: actor.claims.Subject, ClientID: actor.claims.ClientID, Actor: subject.claims.Actor},
		}, nil
	}
	if p.requestedSubject == subject.claims.Subject {
		return newToken{}, invalidRequest("requested_subject names the subject_token's own subject.")
	}
	u, err := h.cfg.Users.GetUser(ctx, p.requestedSubject)
	if errors.Is(err, store.ErrNotFound) {
		// As a refusal by policy, without saying who exists.
		return newToken{}, fosite.ErrInvalidGrant.WithDescription(descriptionNotPermitted).WithHint("").WithDebug("requested_subject is not a user")
	}
	if err != nil {
		return newToken{}, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	return newToken{
		subject: u.Username,
		tenant:  u.Tenant,
		roles:   u.Roles,
		act:     &accesstoken.Actor{Subject: subject.claims.Subject, ClientID: subject.claims.ClientID, Actor: subject.claims.Actor},
	}, nil
}

// lifetime is the new token's lifetime in whole seconds: the client's
// access-token lifespan, capped by the issuer's maximum, requested_lifetime
// and, for impersonation, MaxImpersonationLifetime (a longer
// requested_lifetime is refused rather than cut).
func (h *handler) lifetime(ctx context.Context, c *client.Client, p params) (time.Duration, error) {
	if p.mode() == ModeImpersonation && p.lifetime > MaxImpersonationLifetime {
		return 0, invalidRequest(fmt.Sprintf("requested_lifetime exceeds %d seconds, the longest an impersonation token lives.", int(MaxImpersonationLifetime/time.Second)))
	}
	life := fosite.GetEffectiveLifespan(c, fosite.GrantType(GrantType), fosite.AccessToken, h.issue.Config.GetAccessTokenLifespan(ctx))
	life = min(life, h.cfg.MaxTokenLifetime)
	if p.lifetime > 0 {
		life = min(life, p.lifetime)
	}
	if p.mode() == ModeImpersonation {
		life = min(life, MaxImpersonationLifetime)
	}
	life = life.Truncate(time.Second)
	if life < time.Second {
		return 0, fosite.ErrServerError.WithDebugf("exchange: lifetime %s", life)
	}
	return life, nil
}

// narrowAudience is the new token's audience: the one target asked for,
// or by default every audience of the subject token the client may
// request. Only the subject token's audiences can be kept, and only those
// the client is registered for: anything else is invalid_target.
func narrowAudience(target string, subject, allowed []string) ([]string, error) {
	if target != "" {
		if !slices.Contains(subject, target) || !slices.Contains(allowed, target) {
			return nil, invalidTarget("The requested audience is not among the subject_token's audiences that this client may request.")
		}
		return []string{target}, nil
	}
	var out []string
	for _, a := range subject {
		if slices.Contains(allowed, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, invalidTarget("None of the subject_token's audiences is one this client may request.")
	}
	return out, nil
}

// narrowScopes is the new token's scopes, sorted: those requested, each of
// which the subject token must hold and the client be allowed; by default
// every scope that is both. Anything wider is invalid_scope.
func narrowScopes(requested, subject, allowed []string) ([]string, error) {
	var out []string
	if len(requested) == 0 {
		for _, s := range subject {
			if slices.Contains(allowed, s) {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil, fosite.ErrInvalidScope.WithDescription("None of the subject_token's scopes is one this client may request.")
		}
	}
	for _, s := range requested {
		if !slices.Contains(subject, s) || !slices.Contains(allowed, s) {
			return nil, fosite.ErrInvalidScope.WithDescription(fmt.Sprintf("The scope %q is not held by the subject_token or not allowed for this client: an exchange only narrows scopes.", truncate(s)))
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// actClaim is the act claim of a (RFC 8693 §4.1): {"sub", "client_id",
// "act": <the previous actor>}.
func actClaim(a *accesstoken.Actor) map[string]any {
	m := map[string]any{"sub": a.Subject}
	if a.ClientID != "" {
		m["client_id"] = a.ClientID
	}
	if a.Actor != nil {
		m["act"] = actClaim(a.Actor)
	}
	return m
}

// chain lists the subjects of a's chain, outermost (the current actor) first.
func chain(a *accesstoken.Actor) []string {
	var out []string
	for ; a != nil; a = a.Actor {
		out = append(out, a.Subject)
	}
	return out
}

// denied is the refusal of an exchange by policy: invalid_grant with the
// fixed description and, as its cause, the reason code the token endpoint
// shows as "reason_code"; detail goes to the log only.
func denied(code, detail string) error {
	return fosite.ErrInvalidGrant.WithDescription(descriptionNotPermitted).WithHint("").
		WithWrap(&token.PolicyDenial{ReasonCode: code}).WithDebugf("%s: %s", code, detail)
}

func truncate(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
