package app_test

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/services/support/app"
)

// defaults is the configuration RegisterFlags sets.
func defaults() app.Config {
	return app.Config{
		HTTPAddr: ":8092", Store: "postgres", Issuer: "http://localhost:8080", Audience: "gatehouse-api",
		JWKSMaxAge: 5 * time.Minute, JWKSMinRefetchInterval: 10 * time.Second,
		PDPURL: "http://localhost:8081", PDPTimeout: 250 * time.Millisecond,
		InvoiceURL: "http://localhost:8091", IssuerTimeout: 5 * time.Second, InvoiceTimeout: 5 * time.Second,
		IssuerClientID: "support-console", ExportClientID: "support-export",
		RequireGatewayHeaders: true, Telemetry: telemetry.Config{Exporter: "none"},
	}
}

func TestFlagDefaultsAndEnvironment(t *testing.T) {
	t.Parallel()
	env := defaults()
	env.Store, env.Demo, env.RequireGatewayHeaders = "memory", true, false
	env.IssuerURL, env.JWKSURL = "http://issuer:8080", "http://issuer:8080/.well-known/jwks.json"
	env.InvoiceURL, env.PDPURL = "http://invoice:8091", "http://pdp:8081"
	env.IssuerTimeout, env.InvoiceTimeout = 2*time.Second, 3*time.Second
	env.IssuerClientSecretFile, env.ExportClientSecretFile = "/run/secrets/console", "/run/secrets/export"
	flagWins := defaults()
	flagWins.HTTPAddr, flagWins.DatabaseURL = ":9", "postgres://db/support"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want app.Config
	}{
		{name: "defaults", want: defaults()},
		{name: "environment", env: map[string]string{
			"GATEHOUSE_SUPPORT_STORE":                     "memory",
			"GATEHOUSE_SUPPORT_DEMO":                      "true",
			"GATEHOUSE_SUPPORT_REQUIRE_GATEWAY_HEADERS":   "false",
			"GATEHOUSE_SUPPORT_ISSUER_URL":                "http://issuer:8080",
			"GATEHOUSE_SUPPORT_JWKS_URL":                  "http://issuer:8080/.well-known/jwks.json",
			"GATEHOUSE_SUPPORT_INVOICE_URL":               "http://invoice:8091",
			"GATEHOUSE_SUPPORT_PDP_URL":                   "http://pdp:8081",
			"GATEHOUSE_SUPPORT_ISSUER_TIMEOUT":            "2s",
			"GATEHOUSE_SUPPORT_INVOICE_TIMEOUT":           "3s",
			"GATEHOUSE_SUPPORT_ISSUER_CLIENT_SECRET_FILE": "/run/secrets/console",
			"GATEHOUSE_SUPPORT_EXPORT_CLIENT_SECRET_FILE": "/run/secrets/export",
			// Secrets have no flag: envflag leaves these to LoadSecrets.
			"GATEHOUSE_SUPPORT_ISSUER_CLIENT_SECRET": "ignored-by-flags",
		}, want: env},
		{name: "flag wins", args: []string{"-http-addr=:9", "-database-url=postgres://db/support"},
			env: map[string]string{"GATEHOUSE_SUPPORT_HTTP_ADDR": ":7"}, want: flagWins},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cfg app.Config
			fs := flag.NewFlagSet("support", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.RegisterFlags(fs)
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			if err := envflag.Parse(fs, "support", tc.args, lookup); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, tc.want) {
				t.Fatalf("config\n got %+v\nwant %+v", cfg, tc.want)
			}
		})
	}
}

func TestLoadSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	console := write("console", "console-from-file\n")
	export := write("export", "export-from-file")
	empty := write("empty", " \n")
	env := map[string]string{
		app.EnvIssuerClientSecret: "console-from-env",
		app.EnvExportClientSecret: "export-from-env",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name                string
		cfg                 app.Config
		lookup              func(string) (string, bool)
		wantConsole, wantEx string
		wantErr             string
	}{
		{name: "files win over the environment", cfg: app.Config{IssuerClientSecretFile: console, ExportClientSecretFile: export},
			lookup: lookup, wantConsole: "console-from-file", wantEx: "export-from-file"},
		{name: "environment", lookup: lookup, wantConsole: "console-from-env", wantEx: "export-from-env"},
		{name: "neither", lookup: func(string) (string, bool) { return "", false }},
		{name: "already set", cfg: app.Config{IssuerClientSecret: "set", ExportClientSecret: "set", IssuerClientSecretFile: "/nonexistent"},
			lookup: lookup, wantConsole: "set", wantEx: "set"},
		{name: "missing file", cfg: app.Config{IssuerClientSecretFile: filepath.Join(dir, "nope")}, lookup: lookup, wantErr: "-issuer-client-secret-file"},
		{name: "empty file", cfg: app.Config{ExportClientSecretFile: empty}, lookup: lookup, wantErr: "-export-client-secret-file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			err := cfg.LoadSecrets(tc.lookup)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadSecrets = %v, want an error mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.IssuerClientSecret != tc.wantConsole || cfg.ExportClientSecret != tc.wantEx {
				t.Fatalf("LoadSecrets = %v: console %q, export %q; want %q, %q", err, cfg.IssuerClientSecret, cfg.ExportClientSecret, tc.wantConsole, tc.wantEx)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	valid := app.Config{Store: app.StoreMemory, Issuer: "http://localhost:8080", PDPURL: "http://localhost:8081",
		IssuerClientSecret: "s1", ExportClientSecret: "s2"}
	tests := []struct {
		name   string
		mutate func(*app.Config)
		want   string
	}{
		{name: "unknown store", mutate: func(c *app.Config) { c.Store = "sqlite" }, want: "-store"},
		{name: "postgres without DSN", mutate: func(c *app.Config) { c.Store = app.StorePostgres }, want: "-database-url"},
		{name: "no issuer", mutate: func(c *app.Config) { c.Issuer = ""; c.IssuerURL = "http://issuer:8080" }, want: "-issuer is required"},
		{name: "relative issuer URL", mutate: func(c *app.Config) { c.IssuerURL = "issuer:8080" }, want: "-issuer-url"},
		{name: "relative PDP URL", mutate: func(c *app.Config) { c.PDPURL = "pdp:8081" }, want: "-pdp-url"},
		{name: "invoice URL without host", mutate: func(c *app.Config) { c.InvoiceURL = "http:///x" }, want: "-invoice-url"},
		{name: "JWKS URL without host", mutate: func(c *app.Config) { c.JWKSURL = "http:///jwks" }, want: "-jwks-url"},
		{name: "negative PDP timeout", mutate: func(c *app.Config) { c.PDPTimeout = -time.Second }, want: "-pdp-timeout"},
		{name: "negative issuer timeout", mutate: func(c *app.Config) { c.IssuerTimeout = -time.Second }, want: "-issuer-timeout"},
		{name: "negative invoice timeout", mutate: func(c *app.Config) { c.InvoiceTimeout = -time.Second }, want: "-invoice-timeout"},
		{name: "no console secret", mutate: func(c *app.Config) { c.IssuerClientSecret = "" }, want: app.EnvIssuerClientSecret},
		{name: "no export secret", mutate: func(c *app.Config) { c.ExportClientSecret = "" }, want: app.EnvExportClientSecret},
		{name: "demo secrets only for the demo clients", mutate: func(c *app.Config) {
			c.Demo, c.IssuerClientSecret, c.IssuerClientID = true, "", "my-console"
		}, want: `client "my-console" needs its secret`},
		{name: "JWKS max age over an hour", mutate: func(c *app.Config) { c.JWKSMaxAge = 2 * time.Hour }, want: "-jwks-max-age"},
		{name: "JWKS refetch interval under a second", mutate: func(c *app.Config) { c.JWKSMinRefetchInterval = 100 * time.Millisecond }, want: "-jwks-min-refetch-interval"},
		{name: "unknown exporter", mutate: func(c *app.Config) { c.Telemetry.Exporter = "zipkin" }, want: "exporter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.mutate(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = a.Close()
				t.Fatal("New accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestDemoDefaultsTheSecrets: with -demo and no secrets configured, the
// service uses the demo seed's, and the issuer accepts them.
func TestDemoDefaultsTheSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *app.Config) { c.IssuerClientSecret, c.ExportClientSecret = "", "" })
	h.impersonate(sam, demoTicket)
	if _, err := h.client.ExportInvoices(t.Context(), as(h.headers(bob), &supportv1.ExportInvoicesRequest{})); err != nil {
		t.Fatalf("export with the demo secrets: %v", err)
	}
	if got := h.iss.Exchanges(); len(got) != 2 || got[0].ClientID != "support-console" || got[1].ClientID != "support-export" {
		t.Fatalf("exchanges %+v", got)
	}
}
