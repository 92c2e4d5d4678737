package invoice

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNoCaller means a request reached the service without a verified
// caller: a wiring bug, answered as unauthenticated, never served.
var ErrNoCaller = errors.New("no verified caller")

// Actions the service asks its Authorizer about ("<resource_type>:<verb>").
const (
	ActionRead    = "invoice:read"
	ActionWrite   = "invoice:write"
	ActionApprove = "invoice:approve"
)

// ResourceType is the authorization resource type of invoices.
const ResourceType = "invoice"

// Caller is the verified principal a request runs as. Its Tenant scopes
// every store query and every new invoice; it comes from the verified
// token, never from the request.
type Caller struct {
	Subject string
	Tenant  string
}

// Resource is what a Check is about.
type Resource struct {
	Type string
	// ID is empty for collection-level checks (create, list).
	ID     string
	Tenant string
	// Attributes are facts a policy may use; values are int64 or string.
	Attributes map[string]any
}

// Check is one authorization question.
type Check struct {
	Action   string
	Resource Resource
}

// Authorizer decides Checks; the policy lives behind it, not here.
type Authorizer interface {
	// Authorize returns nil only when the action is permitted. Any error (a
	// denial, an unreachable decision point) means no; the service returns
	// it wrapped, so the adapter that made it can map it to its transport.
	Authorize(ctx context.Context, c Check) error
	// Filter decides many Checks at once (one BatchCheck) and reports, per
	// check, whether it is permitted. An error means no decision could be
	// had: the caller gets nothing.
	Filter(ctx context.Context, checks []Check) ([]bool, error)
}

// Store persists invoices. Every read is scoped to one tenant.
type Store interface {
	// Create inserts inv, or returns ErrDuplicateID when its id is taken
	// (in any tenant).
	Create(ctx context.Context, inv Invoice) error
	// Get returns the invoice id of tenant, or ErrNotFound, also when the
	// id belongs to another tenant.
	Get(ctx context.Context, tenant, id string) (Invoice, error)
	// List returns up to limit invoices of tenant ordered by (CreateTime,
	// ID), starting strictly after after when it is not nil. limit must
	// be positive.
	List(ctx context.Context, tenant string, after *Cursor, limit int) ([]Invoice, error)
	// Approve marks the draft invoice id of tenant approved by subject at
	// time at, and returns it. It returns ErrNotFound when tenant has no
	// such invoice (also when the id belongs to another tenant) and
	// ErrAlreadyApproved, changing nothing, when the invoice is not a
	// draft. Of concurrent approvals of one invoice exactly one succeeds.
	Approve(ctx context.Context, tenant, id, subject string, at time.Time) (Invoice, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}

// Service runs the invoice use cases: validate, authorize, then touch the
// store, always within the caller's tenant. It is safe for concurrent use.
type Service struct {
	store Store
	authz Authorizer
	now   func() time.Time
}

// NewService returns a Service over store that asks authz before every
// operation.
func NewService(store Store, authz Authorizer) *Service {
	return &Service{store: store, authz: authz, now: time.Now}
}

// Create stores a new draft invoice in the caller's tenant, created by the
// caller, after the caller is permitted invoice:write for its amount and
// currency.
func (s *Service) Create(ctx context.Context, caller Caller, d Draft) (Invoice, error) {
	if err := caller.check(); err != nil {
		return Invoice{}, err
	}
	d, err := d.Normalize()
	if err != nil {
		return Invoice{}, err
	}
	if err := s.authorize(ctx, ActionWrite, Resource{
		Type:   ResourceType,
		Tenant: caller.Tenant,
		Attributes: map[string]any{
			"amount_cents": d.AmountCents,
			"currency":     d.Currency,
		},
	}); err != nil {
		return Invoice{}, err
	}
	inv := Invoice{
		ID:          NewID(),
		Tenant:      caller.Tenant,
		Customer:    d.Customer,
		AmountCents: d.AmountCents,
		Currency:    d.Currency,
		Status:      StatusDraft,
		CreatedBy:   caller.Subject,
		CreateTime:  s.now().UTC().Truncate(time.Microsecond),
	}
	if err := s.store.Create(ctx, inv); err != nil {
		return Invoice{}, fmt.Errorf("create invoice: %w", err)
	}
	return inv, nil
}

// Get returns invoice id of the caller's tenant once the caller is
// permitted invoice:read on it. Another tenant's invoice is ErrNotFound.
func (s *Service) Get(ctx context.Context, caller Caller, id string) (Invoice, error) {
	inv, err := s.load(ctx, caller, id)
	if err != nil {
		return Invoice{}, err
	}
	if err := s.authorize(ctx, ActionRead, inv.resource()); err != nil {
		return Invoice{}, err
	}
	return inv, nil
}

// Approve approves the draft invoice id of the caller's tenant, as the
// caller, once the caller is permitted invoice:approve on it. The PDP sees
// the invoice's amount_cents and currency: approving a large amount may
// need a recent multi-factor sign-in, which the PDP asks for with a
// step_up obligation (the Authorizer's error says so). Another tenant's
// invoice is ErrNotFound; an invoice that is approved already is
// ErrAlreadyApproved, told only to callers permitted to approve it.
func (s *Service) Approve(ctx context.Context, caller Caller, id string) (Invoice, error) {
	inv, err := s.load(ctx, caller, id)
	if err != nil {
		return Invoice{}, err
	}
	res := inv.resource()
	res.Attributes["currency"] = inv.Currency
	if err := s.authorize(ctx, ActionApprove, res); err != nil {
		return Invoice{}, err
	}
	if inv.Status != StatusDraft {
		return Invoice{}, fmt.Errorf("approve invoice %s: %w", inv.ID, ErrAlreadyApproved)
	}
	// The amount the PDP saw cannot change meanwhile (no RPC changes it);
	// the status can, and the store approves only a draft.
	approved, err := s.store.Approve(ctx, caller.Tenant, inv.ID, caller.Subject, s.now().UTC().Truncate(time.Microsecond))
	if err != nil {
		return Invoice{}, fmt.Errorf("approve invoice: %w", err)
	}
	return approved, nil
}

// load returns invoice id of the caller's tenant, not yet authorized.
// "Not found" goes only to callers who may read their tenant's invoices at
// all; anyone else is denied as they would be for an existing id, so the
// answer reveals nothing about which ids exist.
func (s *Service) load(ctx context.Context, caller Caller, id string) (Invoice, error) {
	if err := caller.check(); err != nil {
		return Invoice{}, err
	}
	if err := ValidateID(id); err != nil {
		return Invoice{}, err
	}
	inv, err := s.store.Get(ctx, caller.Tenant, id)
	if errors.Is(err, ErrNotFound) {
		if aerr := s.authorize(ctx, ActionRead, Resource{Type: ResourceType, Tenant: caller.Tenant}); aerr != nil {
			return Invoice{}, aerr
		}
		return Invoice{}, err
	}
	if err != nil {
		return Invoice{}, fmt.Errorf("get invoice: %w", err)
	}
	return inv, nil
}

// resource describes inv to the PDP.
func (inv Invoice) resource() Resource {
	return Resource{
		Type:   ResourceType,
		ID:     inv.ID,
		Tenant: inv.Tenant,
		Attributes: map[string]any{
			"amount_cents": inv.AmountCents,
			"created_by":   inv.CreatedBy,
			"status":       string(inv.Status),
		},
	}
}

// List returns a page of the caller's tenant's invoices, oldest first,
// once the caller is permitted invoice:read on the tenant's invoices.
// pageSize 0 means DefaultPageSize; larger than MaxPageSize means
// MaxPageSize. pageToken is empty or a previous page's NextPageToken.
//
// Two checks: collection-level first (may the caller read the tenant's
// invoices at all? if not, the call is denied), then every invoice of the
// page in one BatchCheck; invoices the PDP does not permit are left out of
// the page. The next-page token follows the store's order, so filtered rows
// never stall pagination.
func (s *Service) List(ctx context.Context, caller Caller, pageSize int, pageToken string) (Page, error) {
	if err := caller.check(); err != nil {
		return Page{}, err
	}
	limit, err := clampPageSize(pageSize)
	if err != nil {
		return Page{}, err
	}
	var after *Cursor
	if pageToken != "" {
		c, err := DecodePageToken(pageToken)
		if err != nil {
			return Page{}, err
		}
		after = &c
	}
	if err := s.authorize(ctx, ActionRead, Resource{Type: ResourceType, Tenant: caller.Tenant}); err != nil {
		return Page{}, err
	}
	invs, err := s.store.List(ctx, caller.Tenant, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list invoices: %w", err)
	}
	var page Page
	if len(invs) > limit {
		invs = invs[:limit]
		last := invs[limit-1]
		page.NextPageToken = EncodePageToken(Cursor{CreateTime: last.CreateTime, ID: last.ID})
	}
	if len(invs) == 0 {
		return page, nil
	}
	checks := make([]Check, len(invs))
	for i, inv := range invs {
		checks[i] = Check{Action: ActionRead, Resource: inv.resource()}
	}
	permitted, err := s.authz.Filter(ctx, checks)
	if err != nil {
		return Page{}, fmt.Errorf("authorize %s: %w", ActionRead, err)
	}
	page.Invoices = make([]Invoice, 0, len(invs))
	for i, inv := range invs {
		if permitted[i] {
			page.Invoices = append(page.Invoices, inv)
		}
	}
	return page, nil
}

func (s *Service) authorize(ctx context.Context, action string, res Resource) error {
	if err := s.authz.Authorize(ctx, Check{Action: action, Resource: res}); err != nil {
		return fmt.Errorf("authorize %s: %w", action, err)
	}
	return nil
}

func (c Caller) check() error {
	if c.Subject == "" || c.Tenant == "" {
		return ErrNoCaller
	}
	return nil
}
