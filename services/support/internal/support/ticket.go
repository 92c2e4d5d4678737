// Package support is the support domain: tickets (a customer's request for
// help, and their consent to be impersonated), impersonation sessions (an
// agent acting as the customer through token exchange, RFC 8693) and the
// export job (support-export acting for a user by delegation). The Service
// validates input, asks an Authorizer, and talks to the issuer and the
// invoice service through ports; it knows nothing of Connect, SQL, OAuth's
// wire format or the PDP's.
package support

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
	// ErrTicketNotFound means the caller's tenant has no ticket with that
	// id. Another tenant's ticket is reported the same way.
	ErrTicketNotFound = errors.New("ticket not found")
	// ErrSessionNotFound means the caller has no impersonation session
	// with that id in their tenant; another agent's session, or another
	// tenant's, is reported the same way.
	ErrSessionNotFound = errors.New("impersonation session not found")
	// ErrDuplicateID means a store already holds a ticket or session with
	// that id.
	ErrDuplicateID = errors.New("duplicate id")
	// ErrTicketClosed means the ticket is closed: it cannot be closed
	// again, and no session can start on it.
	ErrTicketClosed = errors.New("ticket is not open")
	// ErrNotImpersonating means the session cannot act as the customer:
	// it has ended or expired (ErrSessionOver), or this process no longer
	// holds its token (ErrTokenNotHeld).
	ErrNotImpersonating = errors.New("not impersonating")
	// ErrSessionOver means the session has ended or expired.
	ErrSessionOver = fmt.Errorf("%w: the session has ended or expired", ErrNotImpersonating)
	// ErrTokenNotHeld means the session is open but its token is not in
	// this process's memory (the service restarted, or another replica
	// started the session): it can be ended, not used.
	ErrTokenNotHeld = fmt.Errorf("%w: the session's token is no longer held by the support service (it restarted); end the session and start a new one", ErrNotImpersonating)
)

// Status is a ticket's lifecycle state: open, then closed for good.
type Status string

// Ticket states.
const (
	StatusOpen   Status = "open"
	StatusClosed Status = "closed"
)

// Access is what a ticket lets an agent do while impersonating its customer.
type Access string

// Ticket access levels.
const (
	// AccessRead allows the customer's read-only scopes (the default).
	AccessRead Access = "read"
	// AccessWrite also allows the customer's write scopes, never approval
	// or admin scopes (the exchange policy refuses those).
	AccessWrite Access = "write"
)

// Scopes returns the scopes an impersonation token gets on a ticket with
// access a when the agent asks for none.
func (a Access) Scopes() []string {
	if a == AccessWrite {
		return []string{"invoice:read", "invoice:write"}
	}
	return []string{"invoice:read"}
}

// Ticket is one customer's support ticket in one tenant.
type Ticket struct {
	ID     string
	Tenant string
	// Customer is the subject of the customer who opened the ticket.
	Customer string
	Summary  string
	Status   Status
	Access   Access
	// CreateTime has microsecond precision and is in UTC, so every store
	// returns exactly what it was given.
	CreateTime time.Time
	// CloseTime is zero while the ticket is open.
	CloseTime time.Time
	// ClosedBy is the subject that closed the ticket; empty while open.
	ClosedBy string
}

// MaxSummaryRunes bounds a ticket's summary.
const MaxSummaryRunes = 500

// NormalizeSummary returns s trimmed of surrounding white space, or an
// error wrapping ErrInvalid: a summary is 1 to MaxSummaryRunes printable
// characters (no control or format characters, so no newlines and no bidi
// overrides).
func NormalizeSummary(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", invalid("summary is required")
	case !utf8.ValidString(s):
		return "", invalid("summary must be valid UTF-8")
	case utf8.RuneCountInString(s) > MaxSummaryRunes:
		return "", invalid(fmt.Sprintf("summary must be at most %d characters", MaxSummaryRunes))
	case strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return "", invalid("summary must contain printable characters only")
	}
	return s, nil
}

// Id patterns: generated ids are a prefix plus 26 base32 characters (128
// bits from crypto/rand); demo ids are "tkt_demo_<tenant>_<n>".
var (
	ticketIDPattern  = regexp.MustCompile(`^tkt_[A-Za-z0-9_]{1,60}$`)
	sessionIDPattern = regexp.MustCompile(`^imp_[A-Za-z0-9_]{1,60}$`)
)

// ValidateTicketID returns an error wrapping ErrInvalid unless id is a
// well-formed ticket id.
func ValidateTicketID(id string) error {
	if !ticketIDPattern.MatchString(id) {
		return invalid("ticket id must be a ticket id (tkt_...)")
	}
	return nil
}

// ValidateSessionID returns an error wrapping ErrInvalid unless id is a
// well-formed session id.
func ValidateSessionID(id string) error {
	if !sessionIDPattern.MatchString(id) {
		return invalid("session_id must be an impersonation session id (imp_...)")
	}
	return nil
}

// NewTicketID returns a fresh random ticket id.
func NewTicketID() string { return "tkt_" + rand.Text() }

// NewSessionID returns a fresh random session id.
func NewSessionID() string { return "imp_" + rand.Text() }

func invalid(msg string) error { return fmt.Errorf("%w: %s", ErrInvalid, msg) }
