// Package reason holds Gatehouse's stable reason codes: the snake_case values
// a decision's reason_code and an edge error's ErrorInfo.reason carry. The same
// codes are listed, with their meaning, in docs/reference/reason-codes.md; add
// a code in both places.
package reason

// Codes decided by the PDP.
const (
	// Allowed: a policy permits the request.
	Allowed = "allowed"
	// InsufficientScope: the token lacks a scope the action needs.
	InsufficientScope = "insufficient_scope"
	// RoleNotPermitted: none of the principal's roles grants the action.
	RoleNotPermitted = "role_not_permitted"
	// TenantMismatch: the resource belongs to another tenant.
	TenantMismatch = "tenant_mismatch"
	// NoApplicablePolicy: no policy covers the action or resource type.
	NoApplicablePolicy = "no_applicable_policy"
	// MissingAttribute: a required input field is absent.
	MissingAttribute = "missing_attribute"
	// InvalidAttribute: an input field is malformed.
	InvalidAttribute = "invalid_attribute"
	// EvaluationError: the policy could not be evaluated.
	EvaluationError = "evaluation_error"
	// StepUpRequired: the action needs a stronger or fresher authentication;
	// the decision's step_up obligation says which acr and max_age.
	StepUpRequired = "step_up_required"
	// TicketRequired: an impersonation (token exchange) names no support
	// ticket, or one stated by a client that is not trusted to state tickets.
	TicketRequired = "ticket_required"
	// NoOpenTicket: impersonation needs an open support ticket; this one is
	// closed.
	NoOpenTicket = "no_open_ticket"
	// LifetimeExceeded: the exchanged token would live longer than policy
	// allows (impersonation 900 s, a delegate its own maximum).
	LifetimeExceeded = "lifetime_exceeded"
	// ScopeNotPermitted: a scope requested in a token exchange is not
	// permitted to it (impersonation: read-only unless the ticket grants
	// write, never approval or admin scopes; delegation: the delegate's).
	ScopeNotPermitted = "scope_not_permitted"
	// ReexchangeNotPermitted: the token is itself the product of an exchange
	// (it has an act claim) and may not start an impersonation.
	ReexchangeNotPermitted = "reexchange_not_permitted"
	// ActorNotPermitted: the acting party may not act for this subject: not a
	// delegate, not for this audience, or the subject is an administrator;
	// or someone acts for the principal where only they may act.
	ActorNotPermitted = "actor_not_permitted"
	// ActorChainTooLong: the subject token already carries the longest actor
	// chain a delegation may extend.
	ActorChainTooLong = "actor_chain_too_long"
)

// Codes decided at the edge (gateway) or in a service before or around the PDP.
const (
	// MissingToken: no bearer token was presented.
	MissingToken = "missing_token"
	// InvalidToken: the token is malformed, forged, expired or not for us.
	InvalidToken = "invalid_token"
	// TokenRevoked: the token verifies, but the issuer's revocation feed
	// revoked it (the token, its refresh family, session, consent or client).
	TokenRevoked = "token_revoked"
	// RevocationFeedStale: the gateway has not heard from the issuer's
	// revocation feed for longer than it may; sensitive routes are denied
	// until it has.
	RevocationFeedStale = "revocation_feed_stale"
	// IdentityMismatch: identity headers disagree with the verified token.
	IdentityMismatch = "identity_mismatch"
	// RouteNotConfigured: no route covers the requested procedure or path.
	RouteNotConfigured = "route_not_configured"
	// PDPUnavailable: the PDP did not answer in time; the request is denied.
	PDPUnavailable = "pdp_unavailable"
	// RateLimited: the client or source address sent more requests than its
	// rate allows; retry after the Retry-After seconds.
	RateLimited = "rate_limited"
	// BatchTooLarge: a BatchCheck has more items than the PDP accepts; the
	// whole batch is refused.
	BatchTooLarge = "batch_too_large"
	// InvalidRequest: the request body or parameters are malformed.
	InvalidRequest = "invalid_request"
	// ResourceNotFound: no such resource in the caller's tenant.
	ResourceNotFound = "resource_not_found"
	// AlreadyApproved: the invoice is approved already; an invoice is
	// approved once.
	AlreadyApproved = "already_approved"
	// UpstreamUnavailable: the service behind the gateway did not answer.
	UpstreamUnavailable = "upstream_unavailable"
	// IssuerUnavailable: the issuer's signing keys could not be fetched, so
	// no token can be verified; the request is denied.
	IssuerUnavailable = "issuer_unavailable"
	// UnsupportedObligation: the PDP attached an obligation this enforcement
	// point cannot fulfil; the request is denied rather than half-enforced.
	UnsupportedObligation = "unsupported_obligation"
	// NotImpersonating: the support service has no active impersonation
	// session by that id for the caller (ended, expired, or another agent's).
	NotImpersonating = "not_impersonating"
)

// Codes of the PDP's PolicyAdminService (policy bundles and rollouts).
const (
	// BundleUnsigned: a bundle has no .signatures.json; it is refused.
	BundleUnsigned = "bundle_unsigned"
	// BundleSignatureInvalid: a bundle's signature does not verify with
	// the PDP's verification key, or a file does not match its signed hash.
	BundleSignatureInvalid = "bundle_signature_invalid"
	// BundleInvalid: a bundle is not a readable OPA bundle, has no
	// revision, or does not compile into a policy with a decision rule.
	BundleInvalid = "bundle_invalid"
	// BundleTooLarge: a bundle is larger than the PDP accepts.
	BundleTooLarge = "bundle_too_large"
	// RevisionConflict: that revision is stored with other content;
	// revisions are immutable.
	RevisionConflict = "revision_conflict"
	// UnknownRevision: no stored bundle has that revision.
	UnknownRevision = "unknown_revision"
	// RolloutConflict: the rollout changed meanwhile or is not in a state
	// that allows the step (no candidate to promote, nothing to roll back).
	RolloutConflict = "rollout_conflict"
	// ShadowDivergence: promotion refused because the candidate allows
	// requests the active bundle does not (deny->allow divergences).
	ShadowDivergence = "shadow_divergence"
)
