package app_test

import (
	"flag"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/invoice/app"
)

func TestFlagDefaultsAndEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want app.Config
	}{
		{name: "defaults", want: app.Config{
			HTTPAddr: ":8091", Store: "postgres", Issuer: "http://localhost:8080", Audience: "gatehouse-api",
			PDPURL: "http://localhost:8081", PDPTimeout: 250 * time.Millisecond, RequireGatewayHeaders: true, Telemetry: telemetry.Config{Exporter: "none"},
		}},
		{name: "environment", env: map[string]string{
			"GATEHOUSE_INVOICE_STORE":                   "memory",
			"GATEHOUSE_INVOICE_PDP_TIMEOUT":             "1s",
			"GATEHOUSE_INVOICE_REQUIRE_GATEWAY_HEADERS": "false",
			"GATEHOUSE_INVOICE_DEMO":                    "true",
			"GATEHOUSE_INVOICE_JWKS_URL":                "http://issuer:8080/.well-known/jwks.json",
		}, want: app.Config{
			HTTPAddr: ":8091", Store: "memory", Issuer: "http://localhost:8080", JWKSURL: "http://issuer:8080/.well-known/jwks.json",
			Audience: "gatehouse-api", PDPURL: "http://localhost:8081", PDPTimeout: time.Second, Demo: true, Telemetry: telemetry.Config{Exporter: "none"},
		}},
		{name: "flag wins", args: []string{"-http-addr=:9", "-database-url=postgres://db/invoice"},
			env: map[string]string{"GATEHOUSE_INVOICE_HTTP_ADDR": ":7"}, want: app.Config{
				HTTPAddr: ":9", Store: "postgres", DatabaseURL: "postgres://db/invoice", Issuer: "http://localhost:8080", Audience: "gatehouse-api",
				PDPURL: "http://localhost:8081", PDPTimeout: 250 * time.Millisecond, RequireGatewayHeaders: true, Telemetry: telemetry.Config{Exporter: "none"},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cfg app.Config
			fs := flag.NewFlagSet("invoice", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.RegisterFlags(fs)
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			if err := envflag.Parse(fs, "invoice", tc.args, lookup); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, tc.want) {
				t.Fatalf("config\n got %+v\nwant %+v", cfg, tc.want)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	valid := app.Config{Store: app.StoreMemory, Issuer: "http://localhost:8080", PDPURL: "http://localhost:8081"}
	tests := []struct {
		name   string
		mutate func(*app.Config)
		want   string
	}{
		{name: "unknown store", mutate: func(c *app.Config) { c.Store = "sqlite" }, want: "-store"},
		{name: "postgres without DSN", mutate: func(c *app.Config) { c.Store = app.StorePostgres }, want: "-database-url"},
		{name: "no issuer", mutate: func(c *app.Config) { c.Issuer = "" }, want: "-issuer"},
		{name: "relative PDP URL", mutate: func(c *app.Config) { c.PDPURL = "pdp:8081" }, want: "-pdp-url"},
		{name: "JWKS URL without host", mutate: func(c *app.Config) { c.JWKSURL = "http:///jwks" }, want: "-jwks-url"},
		{name: "negative PDP timeout", mutate: func(c *app.Config) { c.PDPTimeout = -time.Second }, want: "-pdp-timeout"},
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
