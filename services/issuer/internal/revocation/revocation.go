// Package revocation defines the issuer's revocation events: what was
// revoked (an access token, a refresh-token family, a session, a client, a
// consent), which access tokens that covers, and until when the event
// matters. Events form an append-only log in which each has a cursor, so
// that gateways can follow the log and resume where they left off
// (store.RevocationLog keeps it; package revocation/feed serves it). The
// package holds no I/O.
package revocation

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds of an event's fields, in bytes or entries.
const (
	// MaxIDLen bounds ID, every JTI, Subject, ClientID and Tenant.
	MaxIDLen = 255
	// MaxJTIs bounds JTIs: beyond it the issuer revokes by IssuedBefore.
	MaxJTIs = 1000
	// MaxReasonLen bounds Reason.
	MaxReasonLen = 64
)

// ErrInvalid marks an event that breaks an invariant; match it with
// errors.Is.
var ErrInvalid = errors.New("invalid revocation event")

// Kind says what was revoked.
type Kind string

// The kinds of revocation.
const (
	// KindToken is one access token; ID is its jti.
	KindToken Kind = "token"
	// KindRefreshFamily is a refresh token and every token of its grant; ID
	// is the grant's request id.
	KindRefreshFamily Kind = "refresh_family"
	// KindSession is a login session (logout); ID is the session id.
	KindSession Kind = "session"
	// KindClient is every token of a client; ID is the client id.
	KindClient Kind = "client"
	// KindConsent is a withdrawn consent; ID is the consent id.
	KindConsent Kind = "consent"
)

// Kinds lists every kind, in the order of the proto enum.
func Kinds() []Kind {
	return []Kind{KindToken, KindRefreshFamily, KindSession, KindClient, KindConsent}
}

// Event is one revocation. An access token with jti J, subject S, client C
// and issue time T is revoked by the event when J is in JTIs, or when
// IssuedBefore is set, T is before it, and S equals Subject (if set) and C
// equals ClientID (if set); see Revokes. Kind, Tenant and Reason never take
// part in the match, so a consumer that does not know a kind still
// enforces it, and a token without a tenant claim is not missed.
type Event struct {
	// Cursor is the event's position in its log, assigned by the store on
	// append: unique and strictly increasing in the order events are
	// recorded. Zero before the event is stored.
	Cursor int64
	// Kind says what was revoked.
	Kind Kind
	// ID is the revoked thing's id: a jti, a grant's request id, a session
	// id, a client id or a consent id (see Kind).
	ID string
	// JTIs are the unexpired access tokens the revocation covers, as far as
	// the issuer knows, so that a gateway can match on jti alone; exactly
	// [ID] for KindToken, possibly empty otherwise.
	JTIs []string
	// Subject is the subject whose tokens are revoked, when there is one.
	Subject string
	// ClientID is the client whose tokens are revoked, when there is one.
	ClientID string
	// Tenant is the tenant of the revoked thing, for logs and audit only.
	Tenant string
	// IssuedBefore, when set, also revokes every token of Subject and/or
	// ClientID issued before it (KindSession, KindClient, KindConsent).
	IssuedBefore time.Time
	// RevokedAt is when the revocation happened.
	RevokedAt time.Time
	// ExpiresAt is when the last token the event revokes expires: after it
	// the event changes nothing, and consumers and the store may forget it.
	ExpiresAt time.Time
	// Reason is a snake_case code such as user_logout, for logs and audit.
	Reason string
}

// Clone returns a copy of e that shares no memory with it.
func (e Event) Clone() Event {
	e.JTIs = slices.Clone(e.JTIs)
	return e
}

// Token is the part of an access token that Revokes matches on.
type Token struct {
	JTI      string
	Subject  string
	ClientID string
	IssuedAt time.Time
}

// Revokes reports whether e revokes tok (see Event).
func (e Event) Revokes(tok Token) bool {
	if slices.Contains(e.JTIs, tok.JTI) {
		return true
	}
	if e.IssuedBefore.IsZero() || !tok.IssuedAt.Before(e.IssuedBefore) {
		return false
	}
	return (e.Subject == "" || e.Subject == tok.Subject) && (e.ClientID == "" || e.ClientID == tok.ClientID)
}

// Validate reports whether e is an event the log can record: a known kind,
// bounded printable ids, the fields its kind needs, and consistent times.
// It does not look at Cursor (see store.RevocationLog).
func (e Event) Validate() error {
	var errs []error
	if !slices.Contains(Kinds(), e.Kind) {
		errs = append(errs, fmt.Errorf("unknown kind %q", e.Kind))
	}
	for _, f := range []struct {
		name, value string
		required    bool
	}{
		{"id", e.ID, true},
		{"subject", e.Subject, false},
		{"client id", e.ClientID, false},
		{"tenant", e.Tenant, false},
	} {
		if err := checkID(f.value, f.required); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	errs = append(errs, e.validateJTIs()...)
	errs = append(errs, e.validateKind()...)
	errs = append(errs, e.validateTimes()...)
	if !validReason(e.Reason) {
		errs = append(errs, fmt.Errorf("reason must be snake_case ([a-z0-9_]), at most %d bytes", MaxReasonLen))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (kind %q): %w", ErrInvalid, e.Kind, errors.Join(errs...))
	}
	return nil
}

func (e Event) validateJTIs() []error {
	if len(e.JTIs) > MaxJTIs {
		return []error{fmt.Errorf("%d jtis, at most %d", len(e.JTIs), MaxJTIs)}
	}
	var errs []error
	seen := make(map[string]struct{}, len(e.JTIs))
	for i, jti := range e.JTIs {
		if err := checkID(jti, true); err != nil {
			errs = append(errs, fmt.Errorf("jti %d: %w", i, err))
		}
		if _, dup := seen[jti]; dup {
			errs = append(errs, fmt.Errorf("jti %d: duplicate", i))
		}
		seen[jti] = struct{}{}
	}
	return errs
}

// validateKind checks what each kind requires. IssuedBefore is a blanket
// revocation, so it needs a subject or client to bound it, and only the
// kinds that cover tokens not listed one by one may use it.
func (e Event) validateKind() []error {
	var errs []error
	switch e.Kind {
	case KindToken:
		if len(e.JTIs) != 1 || e.JTIs[0] != e.ID {
			errs = append(errs, errors.New("a token event's jtis must be exactly [id]"))
		}
	case KindClient:
		if e.ClientID != e.ID {
			errs = append(errs, errors.New("a client event's client id must equal its id"))
		}
	case KindConsent:
		if e.Subject == "" || e.ClientID == "" {
			errs = append(errs, errors.New("a consent event needs a subject and a client id"))
		}
	case KindSession:
		if e.Subject == "" {
			errs = append(errs, errors.New("a session event needs a subject"))
		}
	}
	if !e.IssuedBefore.IsZero() {
		switch e.Kind {
		case KindSession, KindClient, KindConsent:
		default:
			errs = append(errs, fmt.Errorf("issued before is not allowed for kind %q", e.Kind))
		}
	}
	return errs
}

func (e Event) validateTimes() []error {
	var errs []error
	if e.RevokedAt.IsZero() {
		errs = append(errs, errors.New("revoked at is not set"))
	}
	if e.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("expires at is not set"))
	} else if e.ExpiresAt.Before(e.RevokedAt) {
		errs = append(errs, errors.New("expires at is before revoked at"))
	}
	if e.IssuedBefore.After(e.RevokedAt) {
		// Would revoke tokens issued after the revocation.
		errs = append(errs, errors.New("issued before is after revoked at"))
	}
	return errs
}

// checkID accepts a value of at most MaxIDLen bytes of valid UTF-8 without
// control characters; empty only when not required.
func checkID(v string, required bool) error {
	switch {
	case v == "" && required:
		return errors.New("empty")
	case len(v) > MaxIDLen:
		return fmt.Errorf("longer than %d bytes", MaxIDLen)
	case !utf8.ValidString(v):
		return errors.New("not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

func validReason(r string) bool {
	if len(r) > MaxReasonLen {
		return false
	}
	for _, c := range []byte(r) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Head is a log's identity and newest cursor.
type Head struct {
	// LogID names the log. A store that starts empty (a new database, or a
	// memory store after a restart) is a new log with a new id, whose
	// cursors mean nothing to a subscriber of the old one.
	LogID string
	// Cursor is the cursor of the newest event appended, 0 for none. It
	// never decreases, even when old events are deleted.
	Cursor int64
}

// Page is one read of a log: events after a cursor, and the log's head.
type Page struct {
	// Events are in cursor order.
	Events []Event
	// Head is the log's head, read no later than Events: when Events is
	// shorter than the limit, every event with a cursor up to Head.Cursor
	// is in it (or was deleted), so a reader may continue after the greater
	// of Head.Cursor and its last event's cursor.
	Head Head
}

// Signal tells waiters that a log may have changed. Stores use it to
// implement store.RevocationLog's Changed. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Changed returns a channel that is closed at the next Broadcast.
func (s *Signal) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Broadcast wakes everyone holding a channel from Changed.
func (s *Signal) Broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
