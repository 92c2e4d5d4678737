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
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
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
			JWKSMaxAge: 5 * time.Minute, JWKSMinRefetchInterval: 10 * time.Second,
			PDPURL: "http://localhost:8081", PDPTimeout: 250 * time.Millisecond, RequireGatewayHeaders: true, Telemetry: telemetry.Config{Exporter: "none"},
		}},
		{name: "environment", env: map[string]string{
			"GATEHOUSE_INVOICE_STORE":                     "memory",
			"GATEHOUSE_INVOICE_PDP_TIMEOUT":               "1s",
			"GATEHOUSE_INVOICE_REQUIRE_GATEWAY_HEADERS":   "false",
			"GATEHOUSE_INVOICE_DEMO":                      "true",
			"GATEHOUSE_INVOICE_JWKS_URL":                  "http://issuer:8080/.well-known/jwks.json",
			"GATEHOUSE_INVOICE_JWKS_MAX_AGE":              "2s",
			"GATEHOUSE_INVOICE_JWKS_MIN_REFETCH_INTERVAL": "1500ms",
		}, want: app.Config{
			HTTPAddr: ":8091", Store: "memory", Issuer: "http://localhost:8080", JWKSURL: "http://issuer:8080/.well-known/jwks.json",
			JWKSMaxAge: 2 * time.Second, JWKSMinRefetchInterval: 1500 * time.Millisecond,
			Audience: "gatehouse-api", PDPURL: "http://localhost:8081", PDPTimeout: time.Second, Demo: true, Telemetry: telemetry.Config{Exporter: "none"},
		}},
		{name: "flag wins", args: []string{"-http-addr=:9", "-database-url=postgres://db/invoice"},
			env: map[string]string{"GATEHOUSE_INVOICE_HTTP_ADDR": ":7"}, want: app.Config{
				HTTPAddr: ":9", Store: "postgres", DatabaseURL: "postgres://db/invoice", Issuer: "http://localhost:8080", Audience: "gatehouse-api",
				JWKSMaxAge: 5 * time.Minute, JWKSMinRefetchInterval: 10 * time.Second,
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
		{name: "negative JWKS max age", mutate: func(c *app.Config) { c.JWKSMaxAge = -time.Second }, want: "-jwks-max-age"},
		{name: "JWKS max age over an hour", mutate: func(c *app.Config) { c.JWKSMaxAge = 2 * time.Hour }, want: "-jwks-max-age"},
		{name: "JWKS refetch interval under a second", mutate: func(c *app.Config) { c.JWKSMinRefetchInterval = 100 * time.Millisecond }, want: "-jwks-min-refetch-interval"},
		{name: "JWKS refetch interval above max age", mutate: func(c *app.Config) {
			c.JWKSMaxAge, c.JWKSMinRefetchInterval = 2*time.Second, 5*time.Second
		}, want: "must not exceed -jwks-max-age"},
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

// TestJWKSTimingsReachTheKeyCache: -jwks-max-age and
// -jwks-min-refetch-interval configure the service's key cache. With the
// defaults (5m, 10s) neither condition below could hold within five seconds
// of the first fetch.
func TestJWKSTimingsReachTheKeyCache(t *testing.T) {
	t.Parallel()
	short := func(c *app.Config) { c.JWKSMaxAge, c.JWKSMinRefetchInterval = time.Second, time.Second }
	list := func(t *testing.T, h *harness) error {
		_, err := h.client.ListInvoices(t.Context(), as(h.headers(reportingJob), &invoicev1.ListInvoicesRequest{}))
		return err
	}
	tests := []struct {
		name string
		// after runs once the first request loaded the key set.
		after func(t *testing.T, h *harness)
		// done reports whether the cache did what the timing promises.
		done func(t *testing.T, h *harness, before int64, err error) bool
	}{
		{
			name:  "a set older than the max age is refreshed, no unknown kid needed",
			after: func(*testing.T, *harness) {},
			done: func(t *testing.T, h *harness, before int64, err error) bool {
				if err != nil {
					t.Fatalf("list with the known key: %v", err)
				}
				return h.iss.Fetches.Load() > before
			},
		},
		{
			name:  "an unknown kid is fetched once the refetch interval has passed",
			after: func(t *testing.T, h *harness) { h.iss.Rotate(t, "test-key-2") },
			done:  func(_ *testing.T, _ *harness, _ int64, err error) bool { return err == nil },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, short)
			if err := list(t, h); err != nil {
				t.Fatal(err)
			}
			before := h.iss.Fetches.Load()
			tc.after(t, h)
			deadline := time.Now().Add(5 * time.Second)
			for !tc.done(t, h, before, list(t, h)) {
				if time.Now().After(deadline) {
					t.Fatalf("not within 5s (%d JWKS fetches)", h.iss.Fetches.Load())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
