// Package invoice is the invoice domain: what an invoice is, which input is
// valid, and the Service that creates, reads, lists and approves invoices of
// the caller's tenant after asking an Authorizer. It knows nothing of Connect,
// SQL or the PDP's wire format; adapters plug in through Store and Authorizer.
package invoice

import (
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors. Callers branch on them with errors.Is; the messages of
// errors wrapping ErrInvalid are written for the client and never echo input.
var (
	// ErrInvalid means the request is malformed (a field breaks a rule).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound means no invoice with that id exists in the caller's
	// tenant. Another tenant's invoice is reported the same way, so callers
	// cannot learn that it exists.
	ErrNotFound = errors.New("invoice not found")
	// ErrDuplicateID means a store already holds an invoice with that id.
	ErrDuplicateID = errors.New("duplicate invoice id")
	// ErrAlreadyApproved means the invoice is approved already: an invoice
	// is approved once.
	ErrAlreadyApproved = errors.New("invoice already approved")
)

// Status is an invoice's lifecycle state.
type Status string

// Invoice states. Invoices start as drafts; approving one makes it
// approved, for good.
const (
	StatusDraft    Status = "draft"
	StatusApproved Status = "approved"
)

// Invoice is one invoice of one tenant.
type Invoice struct {
	ID       string
	Tenant   string
	Customer string
	// AmountCents is the amount in the smallest currency unit.
	AmountCents int64
	// Currency is an ISO 4217 code such as "EUR".
	Currency string
	Status   Status
	// CreatedBy is the subject of the token that created the invoice.
	CreatedBy string
	// CreateTime has microsecond precision (what PostgreSQL stores) and is
	// in UTC, so every store returns exactly what it was given.
	CreateTime time.Time
	// ApprovedBy is the subject that approved the invoice; empty for a
	// draft.
	ApprovedBy string
	// ApproveTime is when the invoice was approved (microsecond precision,
	// UTC); zero for a draft.
	ApproveTime time.Time
}

// Draft is the caller-supplied part of a new invoice. Tenant, id, creator,
// status and time are never taken from the caller.
type Draft struct {
	Customer    string
	AmountCents int64
	Currency    string
}

// Limits of a valid Draft.
const (
	MaxCustomerRunes = 200
	MaxAmountCents   = 1_000_000_000_000
)

var currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)

// Normalize returns d with the customer trimmed, or an error wrapping
// ErrInvalid naming the first rule d breaks.
func (d Draft) Normalize() (Draft, error) {
	d.Customer = strings.TrimSpace(d.Customer)
	switch {
	case d.Customer == "":
		return Draft{}, invalid("customer is required")
	case !utf8.ValidString(d.Customer):
		return Draft{}, invalid("customer must be valid UTF-8")
	case utf8.RuneCountInString(d.Customer) > MaxCustomerRunes:
		return Draft{}, invalid(fmt.Sprintf("customer must be at most %d characters", MaxCustomerRunes))
	case strings.IndexFunc(d.Customer, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return Draft{}, invalid("customer must contain printable characters only")
	case d.AmountCents < 1 || d.AmountCents > MaxAmountCents:
		return Draft{}, invalid(fmt.Sprintf("amount_cents must be between 1 and %d", int64(MaxAmountCents)))
	case !currencyPattern.MatchString(d.Currency):
		return Draft{}, invalid("currency must be an ISO 4217 code: three upper-case letters")
	}
	return d, nil
}

// idPattern is what an invoice id may look like: generated ids are "inv_"
// plus 26 base32 characters, demo ids are "inv_demo_<tenant>_<n>".
var idPattern = regexp.MustCompile(`^inv_[A-Za-z0-9_]{1,60}$`)

// ValidateID returns an error wrapping ErrInvalid unless id is well-formed.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return invalid("id must be an invoice id (inv_...)")
	}
	return nil
}

// NewID returns a fresh random invoice id: "inv_" and 26 base32 characters
// (128 bits from crypto/rand).
func NewID() string { return "inv_" + rand.Text() }

func invalid(msg string) error { return fmt.Errorf("%w: %s", ErrInvalid, msg) }
