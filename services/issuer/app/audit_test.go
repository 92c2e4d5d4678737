package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/issuer/app"
)

// TestAuditTrailInPostgres drives a login, consent, code exchange, refresh,
// refresh reuse and consent withdrawal through an issuer on Postgres, then
// checks that each left its audit event, that none holds a token, that the
// chain verifies, and that `issuer audit verify` catches an edited event.
func TestAuditTrailInPostgres(t *testing.T) {
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
	cfg := demoConfig(t)
	cfg.Store, cfg.DatabaseURL = app.StorePostgres, srv.NewDatabase(t)
	a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.Handler())
	is := &issuer{srv: hs, log: &syncBuffer{}}

	oc := webConfig(is, "openid", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(oc, verifier), "alice", "alice-demo-password", aliceTOTP))
	if p.callback == nil {
		t.Fatalf("no callback: %d %s", p.status, p.body)
	}
	tok, err := oc.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	refreshed, err := oc.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Fatal("refresh token reuse accepted")
	}
	b.submitForm(b.get(hs.URL+"/account/consents"), `<form class="withdraw-form"`, nil)
	if status, body := adminRequest(t, is, "POST", "/admin/keys/rotate", "issuer-admin", "issuer-admin-secret"); status != 200 {
		t.Fatalf("admin rotate: %d %v", status, body)
	}

	hs.Close()
	if err := a.Close(); err != nil { // drains the audit queue
		t.Fatal(err)
	}

	pool, err := pgxpool.New(t.Context(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	events, err := auditpostgres.New(pool).List(t.Context(), audit.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	types := map[audit.Type]int{}
	for _, e := range events {
		types[e.Type]++
		for _, secret := range []string{tok.AccessToken, tok.RefreshToken, refreshed.AccessToken, refreshed.RefreshToken, "alice-demo-password"} {
			if strings.Contains(e.Subject+e.ClientID+strings.Join(slices.Collect(mapValues(e.Attributes)), " "), secret) {
				t.Fatalf("audit event %s holds a token or password", e.Type)
			}
		}
	}
	var byAdmin bool
	for _, e := range events {
		byAdmin = byAdmin || (e.Type == audit.TypeKeyCreated && e.Attributes["rotated_by"] == "client:issuer-admin")
	}
	if !byAdmin {
		t.Error("no key.created event naming the admin client")
	}
	for _, want := range []audit.Type{audit.TypeKeyCreated, "login.succeeded", audit.TypeConsentGranted, audit.TypeTokenIssued, audit.TypeTokenRefreshed, audit.TypeTokenRevoked, audit.TypeConsentWithdrawn} {
		if types[want] == 0 {
			t.Errorf("no %s audit event; have %v", want, types)
		}
	}

	var out bytes.Buffer
	if err := app.VerifyAudit(t.Context(), cfg, slog.New(slog.DiscardHandler), &out); err != nil || !strings.Contains(out.String(), "chain intact") {
		t.Fatalf("verify an intact chain: %v\n%s", err, out.String())
	}
	// The table refuses updates; an attacker with superuser rights turns
	// the trigger off first. The chain still tells.
	if err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), `UPDATE audit_events SET subject = 'mallory' WHERE seq = 3`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := app.VerifyAudit(t.Context(), cfg, slog.New(slog.DiscardHandler), &out); err == nil || !strings.Contains(out.String(), "TAMPERED") {
		t.Fatalf("verify after an edit: %v\n%s", err, out.String())
	}
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}
