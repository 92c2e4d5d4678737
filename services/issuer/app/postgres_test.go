package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/issuer/app"
)

// TestSigningKeysInPostgres runs the issuer on a real Postgres (one
// container for the subtests; it fails, never skips, without Docker): the
// keys survive restarts, the CLI rotates and lists them, and a wrong KEK is
// refused.
func TestSigningKeysInPostgres(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.Start(t.Context())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Terminate(ctx); err != nil {
			t.Errorf("terminate: %v", err)
		}
	})

	t.Run("DemoRestartWithNewKEKKeepsOldKeysPublished", func(t *testing.T) {
		t.Parallel()
		cfg := demoConfig(t)
		cfg.Store, cfg.DatabaseURL = app.StorePostgres, srv.NewDatabase(t)

		first, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler)) // ephemeral KEK
		if err != nil {
			t.Fatal(err)
		}
		firstSrv := httptest.NewServer(first.Handler())
		before := (&issuer{srv: firstSrv}).token(t, oauth2.AuthStyleInHeader).AccessToken
		firstSrv.Close()
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}

		_, is := startApp(t, cfg) // another ephemeral KEK
		after := is.token(t, oauth2.AuthStyleInHeader).AccessToken
		if kidOf(t, after) == kidOf(t, before) {
			t.Fatal("the restarted issuer signs with a key it cannot have decrypted")
		}
		jwks := servedJWKS(t, is)
		if len(jwks.Keys) != 2 {
			t.Fatalf("JWKS has %v, want the old and the new key", kids(jwks))
		}
		verifyToken(t, jwks, before, "token from before the restart")
		verifyToken(t, jwks, after, "token from after the restart")
		if !strings.Contains(is.log.String(), "DEV ONLY: signing key does not decrypt") {
			t.Errorf("no DEV ONLY warning about the old key:\n%s", is.log)
		}
	})

	t.Run("CLIRotatesAndIssuersFollow", func(t *testing.T) {
		t.Parallel()
		kek, secret := keyFiles(t)
		cfg := defaults(t)
		cfg.DatabaseURL = srv.NewDatabase(t)
		cfg.KeyEncryptionKeyFile, cfg.ClientSecretKeyFile = kek, secret
		cfg.KeyRefreshInterval = 20 * time.Millisecond
		_, is := startApp(t, cfg)
		oldKID := onlyKID(t, is)
		logger := slog.New(slog.DiscardHandler)

		var out bytes.Buffer
		if err := app.RotateKeys(t.Context(), cfg, logger, &out); err != nil {
			t.Fatalf("keys rotate: %v", err)
		}
		m := regexp.MustCompile(`created (\S+), signing from`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("keys rotate printed:\n%s", out.String())
		}
		newKID := m[1]

		out.Reset()
		if err := app.ListKeys(t.Context(), cfg, logger, &out); err != nil {
			t.Fatalf("keys list: %v", err)
		}
		table := out.String()
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^KID\s+STATE\s+CREATED\s+ACTIVATES\s+RETIRES\s+EXPIRES$`),
			regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(newKID) + `\s+pending\s+\S+\s+\S+\s+-\s+-$`),
			regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(oldKID) + `\s+active\s+\S+\s+\S+\s+\S+Z\s+\S+Z$`),
		} {
			if !want.MatchString(table) {
				t.Errorf("keys list has no line matching %s:\n%s", want, table)
			}
		}

		// The running issuer publishes the new key within its refresh interval.
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Contains(kids(servedJWKS(t, is)), newKID) {
			if time.Now().After(deadline) {
				t.Fatalf("the issuer does not publish %s", newKID)
			}
			time.Sleep(20 * time.Millisecond)
		}

		// Another KEK: the issuer refuses to start, and so does rotation.
		other, _ := keyFiles(t)
		wrong := cfg
		wrong.KeyEncryptionKeyFile = other
		if a, err := app.New(t.Context(), wrong, logger); err == nil {
			_ = a.Close()
			t.Fatal("issuer started with keys it cannot decrypt")
		} else if !strings.Contains(err.Error(), "does not decrypt") {
			t.Fatalf("error %q does not say the keys do not decrypt", err)
		}
		if err := app.RotateKeys(t.Context(), wrong, logger, &out); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
			t.Fatalf("keys rotate with another KEK = %v, want a decryption error", err)
		}
	})
}

// onlyKID returns the kid of the one key the issuer publishes.
func onlyKID(t *testing.T, is *issuer) string {
	t.Helper()
	set := servedJWKS(t, is)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %v, want one key", kids(set))
	}
	return set.Keys[0].KeyID
}
