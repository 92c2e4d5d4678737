package support

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Page sizes of ListTickets.
const (
	DefaultPageSize = 50
	MaxPageSize     = 100
)

// Cursor is a position in a listing of tickets ordered by (CreateTime, ID):
// a page starts strictly after it (keyset pagination, stable under inserts).
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// TicketFilter selects the tickets of a listing. Tenant is required.
type TicketFilter struct {
	Tenant string
	// Customer, when set, keeps only that customer's tickets.
	Customer string
	// Status, when set, keeps only tickets in that state.
	Status Status
}

// TicketPage is one page of a listing.
type TicketPage struct {
	Tickets []Ticket
	// NextPageToken continues the listing; empty on the last page.
	NextPageToken string
}

// pageTokenVersion prefixes every token so its format can change later.
const pageTokenVersion = "v1"

// maxPageTokenBytes bounds the token we decode.
const maxPageTokenBytes = 256

// maxCursorMicros (9999-12-31T23:59:59.999999Z) keeps a hand-made cursor
// within the range every store can compare against.
const maxCursorMicros = 253402300799999999

// EncodePageToken returns the opaque token for c.
func EncodePageToken(c Cursor) string {
	raw := pageTokenVersion + "." + strconv.FormatInt(c.CreateTime.UnixMicro(), 10) + "." + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// DecodePageToken parses a token made by EncodePageToken. Any other input
// is an error wrapping ErrInvalid. A token carries no tenant or filter:
// listings are always scoped by the caller's token, so a token crafted by
// hand can only move the start within what the caller may list anyway.
func DecodePageToken(token string) (Cursor, error) {
	errMalformed := invalid("page_token is malformed")
	if len(token) > maxPageTokenBytes {
		return Cursor{}, errMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, errMalformed
	}
	parts := strings.SplitN(string(raw), ".", 3)
	if len(parts) != 3 || parts[0] != pageTokenVersion {
		return Cursor{}, errMalformed
	}
	micros, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || micros < 0 || micros > maxCursorMicros || ValidateTicketID(parts[2]) != nil {
		return Cursor{}, errMalformed
	}
	return Cursor{CreateTime: time.UnixMicro(micros).UTC(), ID: parts[2]}, nil
}

// clampPageSize applies the default and bounds to a requested page size.
func clampPageSize(requested int) (int, error) {
	switch {
	case requested < 0:
		return 0, invalid("page_size must not be negative")
	case requested == 0:
		return DefaultPageSize, nil
	case requested > MaxPageSize:
		return MaxPageSize, nil
	}
	return requested, nil
}
