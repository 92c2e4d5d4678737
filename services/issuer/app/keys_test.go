package app_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/app"
)

// startApp is start that also returns the App, to rotate its keys.
func startApp(t *testing.T, cfg app.Config) (*app.App, *issuer) {
	t.Helper()
	logs := &syncBuffer{}
	a, err := app.New(t.Context(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a, &issuer{srv: srv, log: logs}
}

// TestTokensOutliveRotation: a token signed before a rotation still
// verifies against the served JWKS after it; new tokens use the new key
// only once the publish lead has passed.
func TestTokensOutliveRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		lead          time.Duration
		newKeySigns   bool
		publishedKeys int
	}{
		{name: "new key signs after the lead", lead: time.Hour, newKeySigns: false, publishedKeys: 2},
		{name: "no lead: new key signs at once", lead: 0, newKeySigns: true, publishedKeys: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := demoConfig(t)
			cfg.KeyPublishLead = tc.lead
			a, is := startApp(t, cfg)

			before := is.token(t, oauth2.AuthStyleInHeader).AccessToken
			oldKID := kidOf(t, before)
			newKID, err := a.RotateSigningKey(t.Context())
			if err != nil {
				t.Fatalf("RotateSigningKey: %v", err)
			}
			after := is.token(t, oauth2.AuthStyleInHeader).AccessToken

			jwks := servedJWKS(t, is)
			if got := len(jwks.Keys); got != tc.publishedKeys {
				t.Fatalf("JWKS has %d keys after rotation, want %d", got, tc.publishedKeys)
			}
			if !slices.Contains(kids(jwks), newKID) {
				t.Fatalf("new key %s is not published", newKID)
			}
			for name, tok := range map[string]string{"before rotation": before, "after rotation": after} {
				verifyToken(t, jwks, tok, name)
			}
			wantKID := oldKID
			if tc.newKeySigns {
				wantKID = newKID
			}
			if got := kidOf(t, after); got != wantKID {
				t.Fatalf("token after rotation signed by %s, want %s (old %s, new %s)", got, wantKID, oldKID, newKID)
			}
			if !strings.Contains(is.log.String(), `"msg":"signing key created","event":"signing_key.created","kid":"`+newKID+`"`) {
				t.Errorf("no audit line for the new key:\n%s", is.log)
			}
		})
	}
}

func TestScheduledRotationRunsInTheBackground(t *testing.T) {
	t.Parallel()
	cfg := demoConfig(t)
	cfg.KeyRefreshInterval = 10 * time.Millisecond
	cfg.KeyRotationPeriod = 50 * time.Millisecond
	cfg.KeyPublishLead = 0
	_, is := startApp(t, cfg)
	before := is.token(t, oauth2.AuthStyleInHeader).AccessToken
	deadline := time.Now().Add(10 * time.Second)
	for kidOf(t, is.token(t, oauth2.AuthStyleInHeader).AccessToken) == kidOf(t, before) {
		if time.Now().After(deadline) {
			t.Fatal("no rotation within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	verifyToken(t, servedJWKS(t, is), before, "token from before the rotation")
}

func TestKeyScheduleValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*app.Config)
		wantErr string
	}{
		{name: "period not above lead", edit: func(c *app.Config) { c.KeyRotationPeriod = c.KeyPublishLead }, wantErr: "-key-rotation-period"},
		{name: "no refresh interval", edit: func(c *app.Config) { c.KeyRefreshInterval = 0 }, wantErr: "-key-refresh-interval"},
		{name: "max token lifetime below access token lifespan", edit: func(c *app.Config) { c.MaxTokenLifetime = time.Minute }, wantErr: "-max-token-lifetime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := demoConfig(t)
			tc.edit(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = a.Close()
				t.Fatal("issuer started")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestKeyCommandsRefuse(t *testing.T) {
	t.Parallel()
	kek, _ := keyFiles(t)
	tests := []struct {
		name    string
		run     func(t *testing.T, cfg app.Config) error
		edit    func(*app.Config)
		wantErr string
	}{
		{name: "list on the memory store", run: listKeys, edit: func(c *app.Config) { c.Store = app.StoreMemory }, wantErr: "-store postgres"},
		{name: "rotate without a key-encryption key", run: rotateKeys, edit: func(c *app.Config) { c.DatabaseURL = "postgres://localhost/issuer" }, wantErr: "-key-encryption-key-file is required"},
		{name: "rotate on the memory store", run: rotateKeys, edit: func(c *app.Config) {
			c.Store = app.StoreMemory
			c.KeyEncryptionKeyFile = kek
		}, wantErr: "-store postgres"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := defaults(t)
			tc.edit(&cfg)
			err := tc.run(t, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func listKeys(t *testing.T, cfg app.Config) error {
	return app.ListKeys(t.Context(), cfg, slog.New(slog.DiscardHandler), &bytes.Buffer{})
}

func rotateKeys(t *testing.T, cfg app.Config) error {
	return app.RotateKeys(t.Context(), cfg, slog.New(slog.DiscardHandler), &bytes.Buffer{})
}

func servedJWKS(t *testing.T, is *issuer) jose.JSONWebKeySet {
	t.Helper()
	resp, raw := is.get(t, "/.well-known/jwks.json")
	if resp.StatusCode != 200 {
		t.Fatalf("JWKS: status %d", resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), `"d"`) {
		t.Fatal("JWKS publishes a private key")
	}
	return set
}

// verifyToken checks tok's signature against the key its kid names in jwks,
// as a gateway does.
func verifyToken(t *testing.T, jwks jose.JSONWebKeySet, tok, name string) {
	t.Helper()
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	keys := jwks.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("%s: kid %s matches %d published keys, want 1 (published: %v)", name, parsed.Headers[0].KeyID, len(keys), kids(jwks))
	}
	var claims josejwt.Claims
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("%s: does not verify against the JWKS: %v", name, err)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Headers[0].KeyID
}

func kids(set jose.JSONWebKeySet) []string {
	out := make([]string, 0, len(set.Keys))
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	slices.Sort(out)
	return out
}
