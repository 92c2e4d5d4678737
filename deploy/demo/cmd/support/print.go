package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
)

// maxSummary is how much of a ticket's summary the table shows, in runes.
const maxSummary = 60

// tokenClaims are the impersonation token's claims the client shows.
type tokenClaims struct {
	Sub    string          `json:"sub"`
	Tenant string          `json:"tenant"`
	Scope  string          `json:"scope"`
	Act    json.RawMessage `json:"act"`
}

// decodeClaims decodes a JWT's payload without verifying it: for display
// only (the gateway and the services verify every token they get). The
// errors never include the token.
func decodeClaims(token string) (tokenClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return tokenClaims{}, errors.New("the impersonation token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return tokenClaims{}, fmt.Errorf("the impersonation token's payload: %w", err)
	}
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return tokenClaims{}, fmt.Errorf("the impersonation token's payload: %w", err)
	}
	return c, nil
}

// callError describes a failed call with its Connect code and reason.
func callError(what string, err error) error {
	if reason := enforce.ReasonOf(err); reason != "" {
		return fmt.Errorf("%s: %w (reason %s)", what, err, reason)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// describe names a refusal: its Connect code and ErrorInfo reason.
func describe(err error) string {
	reason := enforce.ReasonOf(err)
	if reason == "" {
		reason = "-"
	}
	return fmt.Sprintf("%s (reason %s)", connect.CodeOf(err), reason)
}

// printChallenge prints the WWW-Authenticate header of a refusal, if any.
func printChallenge(w io.Writer, err error) {
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, h := range ce.Meta().Values("WWW-Authenticate") {
			_, _ = fmt.Fprintf(w, "  WWW-Authenticate: %s\n", h)
		}
	}
}

// printFields prints name/value pairs aligned, after a title line if any.
func printFields(w io.Writer, title string, fields [][2]string) {
	if title != "" {
		_, _ = fmt.Fprintf(w, "\n%s:\n", title)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", f[0], cell(f[1]))
	}
	_ = tw.Flush()
}

func printTickets(w io.Writer, tickets []*supportv1.Ticket) {
	if len(tickets) == 0 {
		_, _ = fmt.Fprintln(w, "open tickets: none")
		return
	}
	_, _ = fmt.Fprintln(w, "open tickets:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "TICKET\tCUSTOMER\tSTATUS\tACCESS\tOPENED\tSUMMARY")
	for _, t := range tickets {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(t.GetId()), cell(t.GetCustomer()), ticketStatus(t.GetStatus()),
			ticketAccess(t.GetAccess()), timestamp(t.GetCreateTime().AsTime()), cell(shorten(t.GetSummary())))
	}
	_ = tw.Flush()
}

func printSession(w io.Writer, s *supportv1.ImpersonationSession) {
	start, expire := s.GetStartTime().AsTime(), s.GetExpireTime().AsTime()
	printFields(w, "impersonation session", [][2]string{
		{"session", s.GetId()},
		{"ticket", s.GetTicketId()},
		{"tenant", s.GetTenant()},
		{"customer", s.GetCustomer()},
		{"agent", s.GetAgent()},
		{"scopes", strings.Join(s.GetScopes(), " ")},
		{"started", timestamp(start)},
		{"expires", fmt.Sprintf("%s (%s later)", timestamp(expire), expire.Sub(start.Truncate(time.Second)))}, // exp is whole seconds
	})
}

func printClaims(w io.Writer, c tokenClaims) {
	act := string(c.Act)
	var buf bytes.Buffer
	if json.Compact(&buf, c.Act) == nil {
		act = buf.String()
	}
	printFields(w, "impersonation token claims (decoded for display, not verified)", [][2]string{
		{"sub", c.Sub}, {"tenant", c.Tenant}, {"scope", c.Scope}, {"act", act},
	})
}

func printInvoices(w io.Writer, invoices []*invoicev1.Invoice) {
	if len(invoices) == 0 {
		_, _ = fmt.Fprintln(w, "no invoices")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "INVOICE\tCUSTOMER\tAMOUNT\tCURRENCY\tSTATUS")
	for _, inv := range invoices {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(inv.GetId()), cell(inv.GetCustomer()), amount(inv.GetAmountCents()),
			cell(inv.GetCurrency()), enumName(inv.GetStatus().String(), "INVOICE_STATUS_"))
	}
	_ = tw.Flush()
}

// amount formats cents with two decimals: 120000 is 1200.00.
func amount(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}

func ticketStatus(s supportv1.TicketStatus) string {
	return enumName(s.String(), "TICKET_STATUS_")
}

func ticketAccess(a supportv1.TicketAccess) string {
	return enumName(a.String(), "TICKET_ACCESS_")
}

// enumName is an enum value's name without its prefix, in lower case.
func enumName(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// shorten cuts a summary to maxSummary runes.
func shorten(s string) string {
	if utf8.RuneCountInString(s) <= maxSummary {
		return s
	}
	return string([]rune(s)[:maxSummary-1]) + "…"
}

// cell is a table cell: "-" when empty, and never a tab or a newline.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}
