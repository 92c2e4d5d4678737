package faults

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"
)

// resigned returns genuine's claims with a fresh iat and exp signed by key
// under kid; with a nil key, a token of the issuer's current key.
func resigned(t *testing.T, genuine, kid string, key *ecdsa.PrivateKey) string {
	t.Helper()
	if key == nil {
		k, err := gh.IssuerKey(t.Context(), kid)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	parts := strings.Split(genuine, ".")
	if len(parts) != 3 {
		t.Fatal("the genuine token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims["iat"], claims["exp"] = now.Unix(), now.Add(5*time.Minute).Unix()
	payload, err = json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	compact, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return compact
}

// listWith calls ListInvoices through the gateway with token and returns
// the status.
func listWith(ctx context.Context, client *http.Client, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gh.GatewayURL+"/gatehouse.invoice.v1.InvoiceService/ListInvoices", strings.NewReader("{}"))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// keyState is the state of the issuer's key kid, as the issuer derives it
// from its timestamps.
func keyState(ctx context.Context, kid string) (string, error) {
	var state string
	err := withIssuerDB(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `
			SELECT CASE
				WHEN expire_at IS NOT NULL AND expire_at <= now() THEN 'expired'
				WHEN retire_at IS NOT NULL AND retire_at <= now() THEN 'retired'
				WHEN activate_at <= now() THEN 'active'
				ELSE 'pending' END
			FROM signing_keys WHERE kid = $1`, kid).Scan(&state)
	})
	return state, err
}

// retiredKid is the kid of the key the issuer retired last, if one is
// retired and not yet expired.
func retiredKid(ctx context.Context) (kid string, found bool, err error) {
	err = withIssuerDB(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT kid FROM signing_keys WHERE retire_at <= now() AND expire_at > now() ORDER BY retire_at DESC LIMIT 1`).Scan(&kid)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("a retired key: %w", err)
	}
	return kid, true, nil
}

// expireNow brings the retired key kid's expiry forward to now.
func expireNow(ctx context.Context, kid string) error {
	return withIssuerDB(ctx, func(conn *pgx.Conn) error {
		tag, err := conn.Exec(ctx, `UPDATE signing_keys SET expire_at = now() WHERE kid = $1 AND retire_at <= now()`, kid)
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("no retired key " + kid)
		}
		if err != nil {
			return fmt.Errorf("expire key %s: %w", kid, err)
		}
		return nil
	})
}

func withIssuerDB(ctx context.Context, f func(*pgx.Conn) error) error {
	return gh.WithDB(ctx, "issuer", f)
}
