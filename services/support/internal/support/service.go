package support

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// Actions the service asks its Authorizer about ("<resource_type>:<verb>",
// the permission catalog's names; the resource type is the prefix,
// "support", as the PDP requires).
const (
	// ActionWrite is OpenTicket: a customer opens a ticket for themselves.
	ActionWrite = "support:write"
	// ActionRead is ListTickets, CloseTicket and GetCustomerOverview.
	ActionRead = "support:read"
	// ActionImpersonate is StartImpersonation and EndImpersonation.
	ActionImpersonate = "support:impersonate"
	// ActionExport is ExportInvoices.
	ActionExport = "support:export"
)

// ResourceType is the authorization resource type of every support action:
// the actions' prefix (the PDP refuses any other). A check on one ticket
// names it by id; one without an id is about a collection of tickets.
const ResourceType = "support"

// Limits of the invoice listings.
const (
	// OverviewInvoices is how many invoices GetCustomerOverview shows (one
	// page of the invoice service).
	OverviewInvoices = 100
	// MaxExportInvoices bounds ExportInvoices.
	MaxExportInvoices = 1000
	// ExportTokenLifetime is the lifetime asked for the export job's
	// delegated token: long enough to page through the invoices, no longer.
	ExportTokenLifetime = time.Minute
)

// exportScopes are the scopes of the export job's delegated token.
var exportScopes = []string{"invoice:read"}

// Errors of the ports and of authorization.
var (
	// ErrNoCaller means a request reached the service without a verified
	// caller: a wiring bug, answered as unauthenticated, never served.
	ErrNoCaller = errors.New("no verified caller")
	// ErrDenied marks an Authorizer's refusal (as opposed to a decision
	// that could not be had); the error carrying it explains the refusal.
	ErrDenied = errors.New("not permitted")
	// ErrIssuerUnavailable means the issuer did not answer usably: not
	// reachable, too slow, a server error, or a refusal the caller cannot
	// fix (the support service's own client is misconfigured).
	ErrIssuerUnavailable = errors.New("issuer unavailable")
	// ErrCallerTokenRejected means the issuer did not accept the caller's
	// token as a subject token (invalid_grant: revoked or expired there).
	ErrCallerTokenRejected = errors.New("the issuer rejected the caller's token")
	// ErrInvoicesUnavailable means the invoice service did not answer
	// usably.
	ErrInvoicesUnavailable = errors.New("invoice service unavailable")
)

// RefusedError is a refusal by another Gatehouse component, made for the
// caller and safe to show them: the issuer's policy refusing an exchange,
// or the invoice service refusing a token. Reason is a reason code
// (docs/reference/reason-codes.md).
type RefusedError struct {
	// By names the component, for logs: "issuer" or "invoice service".
	By string
	// Reason is the reason code the component gave.
	Reason string
}

// Error implements error.
func (e *RefusedError) Error() string { return e.By + " refused: " + e.Reason }

// Caller is the verified principal a request runs as. Its Tenant scopes
// every store query; it comes from the verified token, never the request.
type Caller struct {
	Subject string
	Tenant  string
	// Token is the caller's verified bearer token: the subject token of
	// the exchanges made on their behalf. Never log it.
	Token string
	// Scopes are the scopes of the caller's token: an exchange can never
	// carry more.
	Scopes []string
}

func (c Caller) check() error {
	if c.Subject == "" || c.Tenant == "" || c.Token == "" {
		return ErrNoCaller
	}
	return nil
}

// Resource is what a Check is about.
type Resource struct {
	Type string
	// ID is empty for collection-level checks.
	ID     string
	Tenant string
	// Attributes are facts a policy may use; values are string.
	Attributes map[string]any
}

// Check is one authorization question.
type Check struct {
	Action   string
	Resource Resource
}

// Authorizer decides Checks; the policy lives behind it, not here.
type Authorizer interface {
	// Authorize returns nil only when the action is permitted. A refusal
	// is an error matching ErrDenied; any other error means no decision
	// could be had (also no). The service returns it wrapped, so the
	// adapter that made it can map it to its transport.
	Authorize(ctx context.Context, c Check) error
	// Filter decides many Checks at once and reports, per check, whether
	// it is permitted. An error means no decision could be had.
	Filter(ctx context.Context, checks []Check) ([]bool, error)
}

// Store persists tickets and sessions. Every read and write is scoped to
// one tenant: an id of another tenant is not found.
type Store interface {
	// CreateTicket inserts t, or returns ErrDuplicateID when its id is
	// taken (in any tenant).
	CreateTicket(ctx context.Context, t Ticket) error
	// GetTicket returns ticket id of tenant, or ErrTicketNotFound.
	GetTicket(ctx context.Context, tenant, id string) (Ticket, error)
	// ListTickets returns up to limit tickets matching f, ordered by
	// (CreateTime, ID), starting strictly after after when it is not nil.
	// limit must be positive.
	ListTickets(ctx context.Context, f TicketFilter, after *Cursor, limit int) ([]Ticket, error)
	// CloseTicket closes the open ticket id of tenant as subject by at,
	// and ends (EndTime at) every session on it that is still active at
	// at, in one step; it returns the closed ticket and the sessions it
	// ended. ErrTicketNotFound when tenant has no such ticket,
	// ErrTicketClosed (changing nothing) when it is closed already: of
	// concurrent closes exactly one succeeds.
	CloseTicket(ctx context.Context, tenant, id, subject string, at time.Time) (Ticket, []Session, error)
	// CreateSession inserts s if its ticket (s.TicketID in s.Tenant) is
	// open, atomically with respect to CloseTicket: ErrTicketNotFound or
	// ErrTicketClosed otherwise, ErrDuplicateID when the id is taken.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns session id of tenant, or ErrSessionNotFound.
	GetSession(ctx context.Context, tenant, id string) (Session, error)
	// EndSession ends the session id of tenant at at if it is active at
	// at, and returns it: ErrSessionNotFound when there is none,
	// ErrSessionOver (changing nothing) when it ended or expired already.
	EndSession(ctx context.Context, tenant, id string, at time.Time) (Session, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}

// ImpersonationRequest is what the support service states to the issuer
// when an agent starts impersonating a ticket's customer.
type ImpersonationRequest struct {
	// AgentToken is the agent's own access token (the subject token).
	AgentToken string
	// Customer is the subject to act as (requested_subject).
	Customer string
	TicketID string
	Access   Access
	// Scopes of the new token, sorted.
	Scopes   []string
	Lifetime time.Duration
}

// Issuer obtains and revokes tokens at the Gatehouse issuer. Its errors
// are ErrIssuerUnavailable, ErrCallerTokenRejected or a *RefusedError,
// wrapped with detail for the log.
type Issuer interface {
	// Impersonate exchanges the agent's token for one acting as the
	// customer, with the agent in its act claim.
	Impersonate(ctx context.Context, r ImpersonationRequest) (IssuedToken, error)
	// Delegate exchanges subjectToken, with the export job's own token as
	// actor token, for a token saying "the export job acting for the
	// subject".
	Delegate(ctx context.Context, subjectToken string, scopes []string, lifetime time.Duration) (IssuedToken, error)
	// Revoke revokes an access token the support service obtained (RFC
	// 7009).
	Revoke(ctx context.Context, token string) error
}

// Invoices reads invoices from the invoice service. Its errors are
// ErrInvoicesUnavailable or a *RefusedError, wrapped with detail.
type Invoices interface {
	// List returns up to limit invoices that cred may read, following the
	// invoice service's pages, as the invoice service returned them.
	List(ctx context.Context, cred Credential, limit int) ([]*invoicev1.Invoice, error)
}

// Service runs the support use cases: validate, authorize, then act,
// always within the caller's tenant. It is safe for concurrent use.
type Service struct {
	store    Store
	authz    Authorizer
	issuer   Issuer
	invoices Invoices
	logger   *slog.Logger
	tokens   *vault
	now      func() time.Time
}

// Option adjusts a Service.
type Option func(*Service)

// WithClock makes the Service read the time from now (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// NewService returns a Service. Impersonation tokens are held in its
// memory only: a new Service (a restarted process) holds none.
func NewService(store Store, authz Authorizer, issuer Issuer, invoices Invoices, logger *slog.Logger, opts ...Option) *Service {
	s := &Service{store: store, authz: authz, issuer: issuer, invoices: invoices, logger: logger, tokens: newVault(), now: time.Now}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// OpenTicket opens a ticket for the caller in their tenant, once the
// caller is permitted support:write. access "" means AccessRead.
func (s *Service) OpenTicket(ctx context.Context, caller Caller, summary string, access Access) (Ticket, error) {
	if err := caller.check(); err != nil {
		return Ticket{}, err
	}
	summary, err := NormalizeSummary(summary)
	if err != nil {
		return Ticket{}, err
	}
	switch access {
	case "":
		access = AccessRead
	case AccessRead, AccessWrite:
	default:
		return Ticket{}, invalid("access must be read or write")
	}
	t := Ticket{
		ID:         NewTicketID(),
		Tenant:     caller.Tenant,
		Customer:   caller.Subject,
		Summary:    summary,
		Status:     StatusOpen,
		Access:     access,
		CreateTime: s.timestamp(),
	}
	res := t.resource()
	res.ID = "" // not created yet
	if err := s.authorize(ctx, ActionWrite, res); err != nil {
		return Ticket{}, err
	}
	if err := s.store.CreateTicket(ctx, t); err != nil {
		return Ticket{}, fmt.Errorf("open ticket: %w", err)
	}
	return t, nil
}

// ListTickets returns a page of the tickets the caller may see, oldest
// first: every ticket of the tenant when the caller is permitted
// support:read on the tenant's tickets (an agent), else the caller's own
// when permitted support:read on those (a customer). status "" lists
// every state. Tickets of the page the PDP does not permit one by one are
// left out; the next-page token follows the store's order.
func (s *Service) ListTickets(ctx context.Context, caller Caller, pageSize int, pageToken string, status Status) (TicketPage, error) {
	if err := caller.check(); err != nil {
		return TicketPage{}, err
	}
	limit, err := clampPageSize(pageSize)
	if err != nil {
		return TicketPage{}, err
	}
	var after *Cursor
	if pageToken != "" {
		c, err := DecodePageToken(pageToken)
		if err != nil {
			return TicketPage{}, err
		}
		after = &c
	}
	switch status {
	case "", StatusOpen, StatusClosed:
	default:
		return TicketPage{}, invalid("status must be open or closed")
	}
	filter := TicketFilter{Tenant: caller.Tenant, Status: status}
	err = s.authorize(ctx, ActionRead, tenantTickets(caller))
	if errors.Is(err, ErrDenied) {
		// Not the tenant's tickets: perhaps the caller's own.
		if err := s.authorize(ctx, ActionRead, ownTickets(caller)); err != nil {
			return TicketPage{}, err
		}
		filter.Customer = caller.Subject
	} else if err != nil {
		return TicketPage{}, err
	}
	tickets, err := s.store.ListTickets(ctx, filter, after, limit+1)
	if err != nil {
		return TicketPage{}, fmt.Errorf("list tickets: %w", err)
	}
	var page TicketPage
	if len(tickets) > limit {
		tickets = tickets[:limit]
		last := tickets[limit-1]
		page.NextPageToken = EncodePageToken(Cursor{CreateTime: last.CreateTime, ID: last.ID})
	}
	if len(tickets) == 0 {
		return page, nil
	}
	checks := make([]Check, len(tickets))
	for i, t := range tickets {
		checks[i] = Check{Action: ActionRead, Resource: t.resource()}
	}
	permitted, err := s.authz.Filter(ctx, checks)
	if err != nil {
		return TicketPage{}, fmt.Errorf("authorize %s: %w", ActionRead, err)
	}
	page.Tickets = make([]Ticket, 0, len(tickets))
	for i, t := range tickets {
		if permitted[i] {
			page.Tickets = append(page.Tickets, t)
		}
	}
	return page, nil
}

// CloseTicket closes ticket id of the caller's tenant once the caller is
// permitted support:read on it (its customer, or an agent), ends every
// active session on it, and revokes the tokens of those sessions that
// this process holds. A revocation that fails is logged, not returned:
// the ticket is closed either way and the token expires within 15 minutes.
func (s *Service) CloseTicket(ctx context.Context, caller Caller, id string) (Ticket, error) {
	t, err := s.loadTicket(ctx, caller, id)
	if err != nil {
		return Ticket{}, err
	}
	if err := s.authorize(ctx, ActionRead, t.resource()); err != nil {
		return Ticket{}, err
	}
	if t.Status != StatusOpen {
		return Ticket{}, fmt.Errorf("close ticket %s: %w", t.ID, ErrTicketClosed)
	}
	closed, ended, err := s.store.CloseTicket(ctx, caller.Tenant, t.ID, caller.Subject, s.timestamp())
	if err != nil {
		return Ticket{}, fmt.Errorf("close ticket: %w", err)
	}
	for _, sess := range ended {
		s.logSession(ctx, "impersonation session ended: ticket closed", sess, slog.String("closed_by", caller.Subject))
		if cred, ok := s.tokens.get(sess.ID, s.now()); ok {
			s.revokeQuietly(ctx, sess, cred.Token)
		}
		s.tokens.forget(sess.ID)
	}
	return closed, nil
}

// StartImpersonation starts a session in which the caller (an agent) acts
// as the customer of ticket ticketID, once the caller is permitted
// support:impersonate on the ticket and it is open: the caller's token is
// exchanged at the issuer for a token whose subject is the customer and
// whose act claim names the caller, for ttlSeconds (0: 15 minutes) and
// scopes (none: what the ticket's access grants). It returns the session
// and the token; the token is held in memory for GetCustomerOverview and
// EndImpersonation, and its jti stored with the session.
func (s *Service) StartImpersonation(ctx context.Context, caller Caller, ticketID string, ttlSeconds int, scopes []string) (Session, string, error) {
	if err := caller.check(); err != nil {
		return Session{}, "", err
	}
	if err := ValidateTicketID(ticketID); err != nil {
		return Session{}, "", err
	}
	ttl, err := SessionTTL(ttlSeconds)
	if err != nil {
		return Session{}, "", err
	}
	scopes, err = NormalizeScopes(scopes)
	if err != nil {
		return Session{}, "", err
	}
	t, err := s.loadTicket(ctx, caller, ticketID)
	if err != nil {
		return Session{}, "", err
	}
	if err := s.authorize(ctx, ActionImpersonate, t.resource()); err != nil {
		return Session{}, "", err
	}
	if t.Status != StatusOpen {
		return Session{}, "", fmt.Errorf("impersonate on ticket %s: %w", t.ID, ErrTicketClosed)
	}
	if len(scopes) == 0 {
		// What the ticket grants, as far as the agent's own token reaches:
		// a write ticket gives an agent whose console may only read a
		// read-only session, not a refused one.
		scopes = slices.DeleteFunc(t.Access.Scopes(), func(s string) bool { return !slices.Contains(caller.Scopes, s) })
		if len(scopes) == 0 {
			scopes = t.Access.Scopes() // the issuer explains what is missing
		}
	}
	tok, err := s.issuer.Impersonate(ctx, ImpersonationRequest{
		AgentToken: caller.Token, Customer: t.Customer, TicketID: t.ID, Access: t.Access, Scopes: scopes, Lifetime: ttl,
	})
	if err != nil {
		return Session{}, "", fmt.Errorf("impersonate: %w", err)
	}
	now := s.now()
	sess := Session{
		ID: NewSessionID(), TicketID: t.ID, Tenant: t.Tenant, Customer: t.Customer, Agent: caller.Subject,
		JTI: tok.JTI, Scopes: tok.Scopes, StartTime: now.UTC().Truncate(time.Microsecond), ExpireTime: tok.Expiry.UTC().Truncate(time.Microsecond),
	}
	if tok.Subject != t.Customer || tok.Tenant != t.Tenant || tok.ActorSubject != caller.Subject || tok.JTI == "" || !sess.ExpireTime.After(sess.StartTime) {
		s.revokeQuietly(ctx, sess, tok.Token)
		return Session{}, "", fmt.Errorf("%w: the exchanged token does not act as the ticket's customer for the agent (sub %q, tenant %q, act %q)",
			ErrIssuerUnavailable, tok.Subject, tok.Tenant, tok.ActorSubject)
	}
	// Held before the row exists: a CloseTicket that ends the session the
	// moment it is stored finds the token to revoke.
	s.tokens.put(sess.ID, tok.Credential(), sess.ExpireTime, now)
	if err := s.store.CreateSession(ctx, sess); err != nil {
		s.tokens.forget(sess.ID)
		s.revokeQuietly(ctx, sess, tok.Token)
		return Session{}, "", fmt.Errorf("start impersonation: %w", err)
	}
	s.logSession(ctx, "impersonation session started", sess)
	return sess, tok.Token, nil
}

// EndImpersonation ends the caller's session id once the caller is
// permitted support:impersonate on its ticket: its token is revoked at the
// issuer first (if that fails, nothing changes and the caller may retry),
// then the session is marked ended. When this process does not hold the
// token (it restarted since the session started) the session is marked
// ended all the same, and the token stays valid until its expiry, at most
// 15 minutes: the issuer's revocation endpoint takes a token, not a jti.
func (s *Service) EndImpersonation(ctx context.Context, caller Caller, id string) (Session, error) {
	sess, t, err := s.loadSession(ctx, caller, id)
	if err != nil {
		return Session{}, err
	}
	if err := s.authorize(ctx, ActionImpersonate, t.resource()); err != nil {
		return Session{}, err
	}
	now := s.now()
	if !sess.Active(now) {
		return Session{}, fmt.Errorf("end session %s: %w", sess.ID, ErrSessionOver)
	}
	cred, held := s.tokens.get(sess.ID, now)
	if held {
		if err := s.issuer.Revoke(ctx, cred.Token); err != nil {
			return Session{}, fmt.Errorf("end session %s: revoke: %w", sess.ID, err)
		}
	}
	ended, err := s.store.EndSession(ctx, caller.Tenant, sess.ID, now.UTC().Truncate(time.Microsecond))
	if err != nil {
		return Session{}, fmt.Errorf("end session: %w", err)
	}
	s.tokens.forget(sess.ID)
	if held {
		s.logSession(ctx, "impersonation session ended", ended)
	} else {
		s.logger.WarnContext(ctx, "impersonation session ended without revoking its token: this process does not hold it (restarted?); it stays valid until it expires",
			slog.String("session_id", ended.ID), slog.String("jti", ended.JTI), slog.Time("expire_time", ended.ExpireTime))
	}
	return ended, nil
}

// CustomerOverview returns the caller's session id and the customer's
// invoices, read from the invoice service with the session's
// impersonation token, once the caller is permitted support:read on the
// session's ticket.
func (s *Service) CustomerOverview(ctx context.Context, caller Caller, id string) (Session, []*invoicev1.Invoice, error) {
	sess, t, err := s.loadSession(ctx, caller, id)
	if err != nil {
		return Session{}, nil, err
	}
	if err := s.authorize(ctx, ActionRead, t.resource()); err != nil {
		return Session{}, nil, err
	}
	now := s.now()
	if !sess.Active(now) {
		return Session{}, nil, fmt.Errorf("overview of session %s: %w", sess.ID, ErrSessionOver)
	}
	cred, ok := s.tokens.get(sess.ID, now)
	if !ok {
		return Session{}, nil, fmt.Errorf("overview of session %s: %w", sess.ID, ErrTokenNotHeld)
	}
	invs, err := s.invoices.List(ctx, cred, OverviewInvoices)
	if err != nil {
		return Session{}, nil, fmt.Errorf("overview: %w", err)
	}
	return sess, invs, nil
}

// Export is the result of the export job.
type Export struct {
	// Actor is the client that acted for the caller.
	Actor    string
	Invoices []*invoicev1.Invoice
}

// ExportInvoices runs the export job for the caller, once the caller is
// permitted support:export: it exchanges the caller's token, with the
// export job's own token as actor token, for a delegated token (subject
// the caller, act the export job) and reads up to MaxExportInvoices of the
// caller's tenant's invoices with it.
func (s *Service) ExportInvoices(ctx context.Context, caller Caller) (Export, error) {
	if err := caller.check(); err != nil {
		return Export{}, err
	}
	if err := s.authorize(ctx, ActionExport, Resource{Type: ResourceType, Tenant: caller.Tenant}); err != nil {
		return Export{}, err
	}
	tok, err := s.issuer.Delegate(ctx, caller.Token, exportScopes, ExportTokenLifetime)
	if err != nil {
		return Export{}, fmt.Errorf("export: %w", err)
	}
	if tok.Subject != caller.Subject || tok.Tenant != caller.Tenant || tok.ActorClientID == "" {
		return Export{}, fmt.Errorf("%w: the delegated token does not act for the caller (sub %q, tenant %q, act client %q)",
			ErrIssuerUnavailable, tok.Subject, tok.Tenant, tok.ActorClientID)
	}
	s.logger.InfoContext(ctx, "export: delegated token obtained", slog.String("subject", tok.Subject), slog.String("tenant", tok.Tenant),
		slog.String("actor_client_id", tok.ActorClientID), slog.String("jti", tok.JTI))
	invs, err := s.invoices.List(ctx, tok.Credential(), MaxExportInvoices)
	if err != nil {
		return Export{}, fmt.Errorf("export: %w", err)
	}
	return Export{Actor: tok.ActorClientID, Invoices: invs}, nil
}

// loadTicket returns ticket id of the caller's tenant, not yet authorized.
// "Not found" goes only to callers permitted to read at least their own
// tickets; anyone else is denied as they would be for an existing id.
func (s *Service) loadTicket(ctx context.Context, caller Caller, id string) (Ticket, error) {
	if err := caller.check(); err != nil {
		return Ticket{}, err
	}
	if err := ValidateTicketID(id); err != nil {
		return Ticket{}, err
	}
	t, err := s.store.GetTicket(ctx, caller.Tenant, id)
	if errors.Is(err, ErrTicketNotFound) {
		if aerr := s.authorize(ctx, ActionRead, ownTickets(caller)); aerr != nil {
			return Ticket{}, aerr
		}
		return Ticket{}, err
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("get ticket: %w", err)
	}
	return t, nil
}

// loadSession returns the caller's session id and its ticket, not yet
// authorized. A session of another agent is not found, as one of another
// tenant is: an agent acts only through their own sessions.
func (s *Service) loadSession(ctx context.Context, caller Caller, id string) (Session, Ticket, error) {
	if err := caller.check(); err != nil {
		return Session{}, Ticket{}, err
	}
	if err := ValidateSessionID(id); err != nil {
		return Session{}, Ticket{}, err
	}
	sess, err := s.store.GetSession(ctx, caller.Tenant, id)
	if err == nil && sess.Agent != caller.Subject {
		err = fmt.Errorf("session %q of another agent: %w", id, ErrSessionNotFound)
	}
	if errors.Is(err, ErrSessionNotFound) {
		if aerr := s.authorize(ctx, ActionRead, ownTickets(caller)); aerr != nil {
			return Session{}, Ticket{}, aerr
		}
		return Session{}, Ticket{}, err
	}
	if err != nil {
		return Session{}, Ticket{}, fmt.Errorf("get session: %w", err)
	}
	t, err := s.store.GetTicket(ctx, caller.Tenant, sess.TicketID)
	if err != nil {
		return Session{}, Ticket{}, fmt.Errorf("get ticket of session %s: %w", sess.ID, err)
	}
	return sess, t, nil
}

// tenantTickets is every ticket of the caller's tenant, as a collection:
// customer "" means every customer's (only agents may read those).
func tenantTickets(caller Caller) Resource {
	return Resource{Type: ResourceType, Tenant: caller.Tenant, Attributes: map[string]any{"customer": ""}}
}

// ownTickets is the caller's own tickets, as a collection.
func ownTickets(caller Caller) Resource {
	return Resource{Type: ResourceType, Tenant: caller.Tenant, Attributes: map[string]any{"customer": caller.Subject}}
}

// resource describes t to the PDP.
func (t Ticket) resource() Resource {
	return Resource{
		Type:   ResourceType,
		ID:     t.ID,
		Tenant: t.Tenant,
		Attributes: map[string]any{
			"status":   string(t.Status),
			"customer": t.Customer,
			"access":   string(t.Access),
		},
	}
}

func (s *Service) authorize(ctx context.Context, action string, res Resource) error {
	if err := s.authz.Authorize(ctx, Check{Action: action, Resource: res}); err != nil {
		return fmt.Errorf("authorize %s: %w", action, err)
	}
	return nil
}

// revokeQuietly revokes a token of sess that is being given up, even when
// the request was cancelled meanwhile; a failure is logged, not returned.
func (s *Service) revokeQuietly(ctx context.Context, sess Session, token string) {
	if err := s.issuer.Revoke(context.WithoutCancel(ctx), token); err != nil {
		s.logger.ErrorContext(ctx, "cannot revoke an impersonation token: it stays valid until it expires",
			slog.String("session_id", sess.ID), slog.String("jti", sess.JTI), slog.Time("expire_time", sess.ExpireTime), slog.Any("error", err))
	}
}

func (s *Service) logSession(ctx context.Context, msg string, sess Session, attrs ...any) {
	s.logger.InfoContext(ctx, msg, append([]any{
		slog.String("session_id", sess.ID), slog.String("ticket_id", sess.TicketID), slog.String("tenant", sess.Tenant),
		slog.String("customer", sess.Customer), slog.String("agent", sess.Agent), slog.String("jti", sess.JTI),
		slog.Any("scopes", sess.Scopes), slog.Time("expire_time", sess.ExpireTime),
	}, attrs...)...)
}

// timestamp is now at the precision every store keeps.
func (s *Service) timestamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id, which outbound calls
// pass on (X-Request-Id) so one request can be followed across services.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
