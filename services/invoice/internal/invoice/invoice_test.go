package invoice_test

import (
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

func TestDraftNormalize(t *testing.T) {
	t.Parallel()
	valid := invoice.Draft{Customer: "Initech", AmountCents: 120_000, Currency: "EUR"}
	tests := []struct {
		name    string
		mutate  func(*invoice.Draft)
		want    string // customer after normalizing; "" when invalid
		wantErr string // substring of the client message
	}{
		{name: "valid", mutate: func(*invoice.Draft) {}, want: "Initech"},
		{name: "trimmed", mutate: func(d *invoice.Draft) { d.Customer = " \t Initech \n" }, want: "Initech"},
		{name: "non-ASCII", mutate: func(d *invoice.Draft) { d.Customer = "Société Générale" }, want: "Société Générale"},
		{name: "200 characters", mutate: func(d *invoice.Draft) { d.Customer = strings.Repeat("é", 200) }, want: strings.Repeat("é", 200)},
		{name: "amount 1", mutate: func(d *invoice.Draft) { d.AmountCents = 1 }, want: "Initech"},
		{name: "amount max", mutate: func(d *invoice.Draft) { d.AmountCents = invoice.MaxAmountCents }, want: "Initech"},
		{name: "customer empty", mutate: func(d *invoice.Draft) { d.Customer = "" }, wantErr: "customer is required"},
		{name: "customer blank", mutate: func(d *invoice.Draft) { d.Customer = "   " }, wantErr: "customer is required"},
		{name: "customer 201 characters", mutate: func(d *invoice.Draft) { d.Customer = strings.Repeat("a", 201) }, wantErr: "at most 200"},
		{name: "customer control character", mutate: func(d *invoice.Draft) { d.Customer = "Ini\x00tech" }, wantErr: "printable"},
		{name: "customer newline inside", mutate: func(d *invoice.Draft) { d.Customer = "Ini\ntech" }, wantErr: "printable"},
		{name: "customer bidi override", mutate: func(d *invoice.Draft) { d.Customer = "Ini\u202etech" }, wantErr: "printable"},
		{name: "customer invalid UTF-8", mutate: func(d *invoice.Draft) { d.Customer = "Ini\xfftech" }, wantErr: "UTF-8"},
		{name: "amount zero", mutate: func(d *invoice.Draft) { d.AmountCents = 0 }, wantErr: "amount_cents"},
		{name: "amount negative", mutate: func(d *invoice.Draft) { d.AmountCents = -5 }, wantErr: "amount_cents"},
		{name: "amount too large", mutate: func(d *invoice.Draft) { d.AmountCents = invoice.MaxAmountCents + 1 }, wantErr: "amount_cents"},
		{name: "currency lower case", mutate: func(d *invoice.Draft) { d.Currency = "eur" }, wantErr: "currency"},
		{name: "currency empty", mutate: func(d *invoice.Draft) { d.Currency = "" }, wantErr: "currency"},
		{name: "currency four letters", mutate: func(d *invoice.Draft) { d.Currency = "EURO" }, wantErr: "currency"},
		{name: "currency trailing newline", mutate: func(d *invoice.Draft) { d.Currency = "EUR\n" }, wantErr: "currency"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := valid
			tc.mutate(&d)
			got, err := d.Normalize()
			if tc.wantErr != "" {
				if !errors.Is(err, invoice.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Normalize = %v, want ErrInvalid mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize = %v", err)
			}
			if got.Customer != tc.want || got.AmountCents != d.AmountCents || got.Currency != d.Currency {
				t.Fatalf("Normalize = %+v, want customer %q", got, tc.want)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	format := regexp.MustCompile(`^inv_[A-Z2-7]{26}$`)
	seen := map[string]bool{}
	for range 100 {
		id := invoice.NewID()
		if !format.MatchString(id) {
			t.Fatalf("NewID = %q, want inv_ + 26 base32 characters", id)
		}
		if err := invoice.ValidateID(id); err != nil {
			t.Fatalf("ValidateID(NewID()) = %v", err)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidateID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id    string
		valid bool
	}{
		{id: "inv_demo_acme_1", valid: true},
		{id: "inv_ABCDEFGHIJKLMNOPQRSTUVWXYZ", valid: true},
		{id: ""},
		{id: "inv_"},
		{id: "INV_abc"},
		{id: "inv_abc/../x"},
		{id: "inv_abc def"},
		{id: "inv_" + strings.Repeat("a", 61)},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			err := invoice.ValidateID(tc.id)
			if tc.valid != (err == nil) || (err != nil && !errors.Is(err, invoice.ErrInvalid)) {
				t.Fatalf("ValidateID(%q) = %v, want valid=%v", tc.id, err, tc.valid)
			}
		})
	}
}

func TestPageTokenRoundTrip(t *testing.T) {
	t.Parallel()
	want := invoice.Cursor{CreateTime: time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC), ID: "inv_demo_acme_2"}
	token := invoice.EncodePageToken(want)
	if strings.Contains(token, want.ID) {
		t.Fatalf("token %q shows the id in clear; want it opaque", token)
	}
	got, err := invoice.DecodePageToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreateTime.Equal(want.CreateTime) || got.ID != want.ID {
		t.Fatalf("DecodePageToken = %+v, want %+v", got, want)
	}
}

func TestDecodePageTokenRejects(t *testing.T) {
	t.Parallel()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, token string
	}{
		{name: "not base64", token: "!!!"},
		{name: "padded base64", token: base64.URLEncoding.EncodeToString([]byte("v1.1.inv_a"))},
		{name: "garbage", token: enc("hello")},
		{name: "wrong version", token: enc("v2.1000.inv_a")},
		{name: "time not a number", token: enc("v1.soon.inv_a")},
		{name: "negative time", token: enc("v1.-1.inv_a")},
		{name: "time beyond year 9999", token: enc("v1.253402300800000000.inv_a")},
		{name: "bad id", token: enc("v1.1000.'; DROP TABLE invoices; --")},
		{name: "missing id", token: enc("v1.1000")},
		{name: "too long", token: enc("v1.1000.inv_" + strings.Repeat("a", 300))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if c, err := invoice.DecodePageToken(tc.token); !errors.Is(err, invoice.ErrInvalid) {
				t.Fatalf("DecodePageToken(%q) = %+v, %v; want ErrInvalid", tc.token, c, err)
			}
		})
	}
}
