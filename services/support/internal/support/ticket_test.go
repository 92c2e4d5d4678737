package support_test

import (
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

func TestNormalizeSummary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "plain", in: "Printer on fire", want: "Printer on fire"},
		{name: "trimmed", in: " \t Printer on fire \n", want: "Printer on fire"},
		{name: "non-ASCII", in: "Rechnung für Zürich fehlt", want: "Rechnung für Zürich fehlt"},
		{name: "500 characters", in: strings.Repeat("é", 500), want: strings.Repeat("é", 500)},
		{name: "one character", in: "?", want: "?"},
		{name: "empty", in: "", wantErr: "summary is required"},
		{name: "blank", in: "  \t ", wantErr: "summary is required"},
		{name: "501 characters", in: strings.Repeat("a", 501), wantErr: "at most 500"},
		{name: "NUL", in: "a\x00b", wantErr: "printable"},
		{name: "escape", in: "a\x1b[31mb", wantErr: "printable"},
		{name: "newline inside", in: "a\nb", wantErr: "printable"},
		{name: "tab inside", in: "a\tb", wantErr: "printable"},
		{name: "DEL", in: "a\x7fb", wantErr: "printable"},
		{name: "C1 control", in: "a\u0085b", wantErr: "printable"},
		{name: "bidi override", in: "a\u202eb", wantErr: "printable"},
		{name: "zero-width joiner", in: "a\u200db", wantErr: "printable"},
		{name: "invalid UTF-8", in: "a\xffb", wantErr: "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := support.NormalizeSummary(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, support.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NormalizeSummary = %q, %v; want ErrInvalid mentioning %q", got, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), tc.in) && tc.in != "" {
					t.Fatalf("error %q echoes the input", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeSummary = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestValidateIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id              string
		ticket, session bool
	}{
		{id: support.NewTicketID(), ticket: true},
		{id: "tkt_demo_acme_1", ticket: true},
		{id: support.NewSessionID(), session: true},
		{id: ""},
		{id: "tkt_"},
		{id: "imp_"},
		{id: "inv_demo_acme_1"},
		{id: "tkt_a-b"},
		{id: "tkt_a/../b"},
		{id: "tkt_" + strings.Repeat("a", 61)},
		{id: "TKT_abc"},
		{id: "tkt_abc\n"},
	}
	for _, tc := range tests {
		if err := support.ValidateTicketID(tc.id); (err == nil) != tc.ticket || err != nil && !errors.Is(err, support.ErrInvalid) {
			t.Errorf("ValidateTicketID(%q) = %v, want valid=%v", tc.id, err, tc.ticket)
		}
		if err := support.ValidateSessionID(tc.id); (err == nil) != tc.session || err != nil && !errors.Is(err, support.ErrInvalid) {
			t.Errorf("ValidateSessionID(%q) = %v, want valid=%v", tc.id, err, tc.session)
		}
	}
	generated := regexp.MustCompile(`^(tkt|imp)_[A-Z2-7]{26}$`)
	if a, b := support.NewTicketID(), support.NewTicketID(); a == b || !generated.MatchString(a) {
		t.Fatalf("NewTicketID = %q, %q; want distinct random ids", a, b)
	}
}

func TestSessionTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		seconds int
		want    time.Duration
		valid   bool
	}{
		{seconds: 0, want: 15 * time.Minute, valid: true},
		{seconds: 1, want: time.Second, valid: true},
		{seconds: 900, want: 15 * time.Minute, valid: true},
		{seconds: 901},
		{seconds: -1},
		{seconds: 1 << 30},
	}
	for _, tc := range tests {
		got, err := support.SessionTTL(tc.seconds)
		if tc.valid && (err != nil || got != tc.want) || !tc.valid && !errors.Is(err, support.ErrInvalid) {
			t.Errorf("SessionTTL(%d) = %v, %v; want %v valid=%v", tc.seconds, got, err, tc.want, tc.valid)
		}
	}
}

func TestNormalizeScopes(t *testing.T) {
	t.Parallel()
	many := make([]string, support.MaxScopes+1)
	for i := range many {
		many[i] = "s" + string(rune('a'+i))
	}
	tests := []struct {
		name string
		in   []string
		want []string
		ok   bool
	}{
		{name: "none", in: nil, want: nil, ok: true},
		{name: "sorted", in: []string{"invoice:write", "invoice:read"}, want: []string{"invoice:read", "invoice:write"}, ok: true},
		{name: "plain scope", in: []string{"openid"}, want: []string{"openid"}, ok: true},
		{name: "at the limit", in: many[:support.MaxScopes], want: many[:support.MaxScopes], ok: true},
		{name: "repeated", in: []string{"invoice:read", "invoice:read"}},
		{name: "space inside", in: []string{"invoice:read invoice:write"}},
		{name: "empty", in: []string{""}},
		{name: "upper case", in: []string{"Invoice:read"}},
		{name: "quote", in: []string{`invoice:read"`}},
		{name: "too many", in: many},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := support.NormalizeScopes(tc.in)
			if tc.ok && (err != nil || !slices.Equal(got, tc.want)) || !tc.ok && !errors.Is(err, support.ErrInvalid) {
				t.Fatalf("NormalizeScopes(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
	in := []string{"b:x", "a:x"}
	if _, err := support.NormalizeScopes(in); err != nil || in[0] != "b:x" {
		t.Fatalf("NormalizeScopes changed its argument: %v (%v)", in, err)
	}
}

func TestPageTokens(t *testing.T) {
	t.Parallel()
	c := support.Cursor{CreateTime: time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC), ID: "tkt_demo_acme_1"}
	got, err := support.DecodePageToken(support.EncodePageToken(c))
	if err != nil || !got.CreateTime.Equal(c.CreateTime) || got.ID != c.ID {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, c)
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, bad := range []string{
		"not base64!",
		enc("v2.1.tkt_a"),
		enc("v1.x.tkt_a"),
		enc("v1.-1.tkt_a"),
		enc("v1.253402300800000000.tkt_a"),
		enc("v1.1.inv_a"),
		enc("v1.1"),
		strings.Repeat("A", 300),
	} {
		if _, err := support.DecodePageToken(bad); !errors.Is(err, support.ErrInvalid) {
			t.Errorf("DecodePageToken(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestAccessScopes(t *testing.T) {
	t.Parallel()
	if got := support.AccessRead.Scopes(); !slices.Equal(got, []string{"invoice:read"}) {
		t.Errorf("read grants %v", got)
	}
	if got := support.AccessWrite.Scopes(); !slices.Equal(got, []string{"invoice:read", "invoice:write"}) {
		t.Errorf("write grants %v", got)
	}
}
