package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/support/internal/demoseed"
)

// Store kinds accepted in Config.Store.
const (
	StorePostgres = "postgres"
	StoreMemory   = "memory"
)

// Defaults of the flags.
const (
	DefaultHTTPAddr       = ":8092"
	DefaultIssuer         = "http://localhost:8080"
	DefaultAudience       = "gatehouse-api"
	DefaultPDPURL         = "http://localhost:8081"
	DefaultPDPTimeout     = 250 * time.Millisecond
	DefaultInvoiceURL     = "http://localhost:8091"
	DefaultIssuerTimeout  = 5 * time.Second
	DefaultInvoiceTimeout = 5 * time.Second
	// DefaultIssuerClientID is the support console's client: it exchanges
	// agents' tokens for impersonation tokens and revokes them.
	DefaultIssuerClientID = "support-console"
	// DefaultExportClientID is the export job's client: it acts for users
	// by delegation.
	DefaultExportClientID = "support-export"
	// DefaultJWKSMaxAge and DefaultJWKSMinRefetchInterval are the key-set
	// cache timings (flags jwks-max-age, jwks-min-refetch-interval).
	DefaultJWKSMaxAge             = 5 * time.Minute
	DefaultJWKSMinRefetchInterval = 10 * time.Second
)

// Bounds of the key-set cache timings.
const (
	// MinJWKSRefetchInterval keeps unknown kids from making the service
	// fetch the issuer's keys more than once a second.
	MinJWKSRefetchInterval = time.Second
	// MaxJWKSMaxAge bounds how long a key pulled from the issuer's JWKS
	// (an emergency) is still trusted from a cached set.
	MaxJWKSMaxAge = time.Hour
)

// Environment variables holding the clients' secrets when their -*-file
// flags are not set. Secrets have no flag: a flag shows in the process list.
const (
	EnvIssuerClientSecret = "GATEHOUSE_SUPPORT_ISSUER_CLIENT_SECRET" //nolint:gosec // G101: the variable's name, not a secret
	EnvExportClientSecret = "GATEHOUSE_SUPPORT_EXPORT_CLIENT_SECRET" //nolint:gosec // G101: the variable's name, not a secret
)

// Config is the support service's configuration. Every field but the two
// secrets has a flag (and so an environment variable GATEHOUSE_SUPPORT_<FLAG>,
// see libs/serve/envflag); RegisterFlags sets the defaults.
type Config struct {
	// HTTPAddr is the listen address (flag http-addr).
	HTTPAddr string
	// Store is "postgres" or "memory" (dev only; flag store).
	Store string
	// DatabaseURL is the Postgres DSN, required with store postgres (flag database-url).
	DatabaseURL string
	// Issuer is the issuer identifier: the required iss of access tokens,
	// the caller's and those the issuer returns (flag issuer).
	Issuer string
	// IssuerURL is the issuer's base URL as this service reaches it, for
	// its token and revocation endpoints; empty means Issuer (flag
	// issuer-url). Inside compose the internal address, while Issuer stays
	// the public identifier.
	IssuerURL string
	// JWKSURL is where the issuer's keys are fetched; empty means
	// <IssuerURL>/.well-known/jwks.json (flag jwks-url).
	JWKSURL string
	// JWKSMaxAge is how long a fetched key set is used before the next
	// lookup refreshes it (flag jwks-max-age).
	JWKSMaxAge time.Duration
	// JWKSMinRefetchInterval is the least time between two fetches of the
	// key set, however many unknown kids arrive (flag
	// jwks-min-refetch-interval). At most JWKSMaxAge.
	JWKSMinRefetchInterval time.Duration
	// Audience must appear in the aud of access tokens (flag audience).
	Audience string
	// PDPURL is the base URL of the PDP's DecisionService (flag pdp-url).
	PDPURL string
	// PDPTimeout bounds one decision; past it the request is denied with
	// unavailable (flag pdp-timeout).
	PDPTimeout time.Duration
	// InvoiceURL is the invoice service's base URL, called directly (not
	// through the gateway) with impersonation and delegated tokens (flag
	// invoice-url).
	InvoiceURL string
	// IssuerTimeout bounds one call to the issuer (flag issuer-timeout).
	IssuerTimeout time.Duration
	// InvoiceTimeout bounds one call to the invoice service, one page
	// (flag invoice-timeout).
	InvoiceTimeout time.Duration
	// IssuerClientID is the confidential client the service exchanges
	// agents' tokens and revokes impersonation tokens as (flag
	// issuer-client-id).
	IssuerClientID string
	// IssuerClientSecretFile holds that client's secret (flag
	// issuer-client-secret-file).
	IssuerClientSecretFile string
	// IssuerClientSecret is that client's secret. It has no flag: Run
	// reads it from IssuerClientSecretFile, else from
	// EnvIssuerClientSecret; with Demo it defaults to the demo seed's.
	IssuerClientSecret string
	// ExportClientID is the confidential client the export job acts as
	// (client credentials and delegation; flag export-client-id).
	ExportClientID string
	// ExportClientSecretFile holds that client's secret (flag
	// export-client-secret-file).
	ExportClientSecretFile string
	// ExportClientSecret is that client's secret, read like
	// IssuerClientSecret (EnvExportClientSecret).
	ExportClientSecret string
	// RequireGatewayHeaders makes the X-Gatehouse-* identity headers
	// mandatory, so only requests that came through the gateway are served
	// (flag require-gateway-headers). They must match the token either way.
	RequireGatewayHeaders bool
	// Demo seeds the demo ticket at start (idempotent) and lets the client
	// secrets default to the demo seed's (flag demo).
	Demo bool
	// Telemetry selects the trace exporter (flags otel-*).
	Telemetry telemetry.Config
}

// RegisterFlags sets c to the defaults and binds every field to a flag in fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", DefaultHTTPAddr, "listen address")
	fs.StringVar(&c.Store, "store", StorePostgres, "store: postgres, or memory (dev only, loses everything on restart)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres DSN (required with -store postgres)")
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "issuer identifier: required iss of access tokens")
	fs.StringVar(&c.IssuerURL, "issuer-url", "", "issuer base URL for its token and revocation endpoints (default <issuer>)")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "issuer JWKS URL (default <issuer-url>/.well-known/jwks.json)")
	fs.DurationVar(&c.JWKSMaxAge, "jwks-max-age", DefaultJWKSMaxAge, "how long a fetched JWKS is used before it is refreshed (keep below the issuer's -key-publish-lead minus its -key-refresh-interval; 1s to 1h)")
	fs.DurationVar(&c.JWKSMinRefetchInterval, "jwks-min-refetch-interval", DefaultJWKSMinRefetchInterval, "least time between two JWKS fetches, however many unknown kids arrive (at least 1s, at most -jwks-max-age)")
	fs.StringVar(&c.Audience, "audience", DefaultAudience, "required aud of access tokens")
	fs.StringVar(&c.PDPURL, "pdp-url", DefaultPDPURL, "PDP base URL")
	fs.DurationVar(&c.PDPTimeout, "pdp-timeout", DefaultPDPTimeout, "deadline of one PDP decision; past it the request is denied")
	fs.StringVar(&c.InvoiceURL, "invoice-url", DefaultInvoiceURL, "invoice service base URL (called directly with impersonation and delegated tokens)")
	fs.DurationVar(&c.IssuerTimeout, "issuer-timeout", DefaultIssuerTimeout, "deadline of one call to the issuer (token exchange, client credentials, revocation)")
	fs.DurationVar(&c.InvoiceTimeout, "invoice-timeout", DefaultInvoiceTimeout, "deadline of one call to the invoice service (one page)")
	fs.StringVar(&c.IssuerClientID, "issuer-client-id", DefaultIssuerClientID, "client the service exchanges agents' tokens (impersonation) and revokes them as")
	fs.StringVar(&c.IssuerClientSecretFile, "issuer-client-secret-file", "", "file holding that client's secret (else $"+EnvIssuerClientSecret+"; required unless -demo)")
	fs.StringVar(&c.ExportClientID, "export-client-id", DefaultExportClientID, "client the export job acts for users as (client credentials and delegation)")
	fs.StringVar(&c.ExportClientSecretFile, "export-client-secret-file", "", "file holding that client's secret (else $"+EnvExportClientSecret+"; required unless -demo)")
	fs.BoolVar(&c.RequireGatewayHeaders, "require-gateway-headers", true, "require the gateway's X-Gatehouse-* identity headers (they must match the token either way)")
	fs.BoolVar(&c.Demo, "demo", false, "seed the demo ticket (idempotent) and default the client secrets to the demo seed's")
	c.Telemetry.RegisterFlags(fs)
}

// LoadSecrets fills each client secret that is not set from its file, else
// from its environment variable (looked up with lookup, normally
// os.LookupEnv). Run calls it; a file that cannot be read or is empty is an
// error.
func (c *Config) LoadSecrets(lookup func(string) (string, bool)) error {
	for _, s := range []struct {
		secret     *string
		file, flag string
		env        string
	}{
		{&c.IssuerClientSecret, c.IssuerClientSecretFile, "issuer-client-secret-file", EnvIssuerClientSecret},
		{&c.ExportClientSecret, c.ExportClientSecretFile, "export-client-secret-file", EnvExportClientSecret},
	} {
		if *s.secret != "" {
			continue
		}
		if s.file == "" {
			*s.secret, _ = lookup(s.env)
			continue
		}
		b, err := os.ReadFile(filepath.Clean(s.file))
		if err != nil {
			return fmt.Errorf("support: read -%s: %w", s.flag, err)
		}
		if *s.secret = strings.TrimSpace(string(b)); *s.secret == "" {
			return fmt.Errorf("support: -%s %s is empty", s.flag, s.file)
		}
	}
	return nil
}

// withDefaults fills the fields whose default derives from another.
func (c Config) withDefaults() Config {
	if c.IssuerURL == "" {
		c.IssuerURL = c.Issuer
	}
	if c.JWKSURL == "" {
		c.JWKSURL = strings.TrimSuffix(c.IssuerURL, "/") + "/.well-known/jwks.json"
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.PDPTimeout == 0 {
		c.PDPTimeout = DefaultPDPTimeout
	}
	if c.InvoiceURL == "" {
		c.InvoiceURL = DefaultInvoiceURL
	}
	if c.IssuerTimeout == 0 {
		c.IssuerTimeout = DefaultIssuerTimeout
	}
	if c.InvoiceTimeout == 0 {
		c.InvoiceTimeout = DefaultInvoiceTimeout
	}
	if c.IssuerClientID == "" {
		c.IssuerClientID = DefaultIssuerClientID
	}
	if c.ExportClientID == "" {
		c.ExportClientID = DefaultExportClientID
	}
	if c.JWKSMaxAge == 0 {
		c.JWKSMaxAge = DefaultJWKSMaxAge
	}
	if c.JWKSMinRefetchInterval == 0 {
		c.JWKSMinRefetchInterval = DefaultJWKSMinRefetchInterval
	}
	if c.Demo {
		if c.IssuerClientSecret == "" && c.IssuerClientID == DefaultIssuerClientID {
			c.IssuerClientSecret = demoseed.ConsoleClientSecret
		}
		if c.ExportClientSecret == "" && c.ExportClientID == DefaultExportClientID {
			c.ExportClientSecret = demoseed.ExportClientSecret
		}
	}
	return c
}

// validate checks c (after withDefaults) before anything is started.
func (c Config) validate() error {
	var errs []error
	switch c.Store {
	case StorePostgres:
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("-database-url is required with -store postgres"))
		}
	case StoreMemory:
	default:
		errs = append(errs, fmt.Errorf("-store %q: want postgres or memory", c.Store))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("-issuer is required"))
	}
	for _, f := range []struct{ name, raw string }{
		{"issuer-url", c.IssuerURL}, {"jwks-url", c.JWKSURL}, {"pdp-url", c.PDPURL}, {"invoice-url", c.InvoiceURL},
	} {
		if u, err := url.Parse(f.raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("-%s %q: want an absolute http(s) URL", f.name, f.raw))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"pdp-timeout", c.PDPTimeout}, {"issuer-timeout", c.IssuerTimeout}, {"invoice-timeout", c.InvoiceTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive", d.name))
		}
	}
	if c.IssuerClientSecret == "" {
		errs = append(errs, fmt.Errorf("client %q needs its secret: set -issuer-client-secret-file or $%s (only -demo has a default)", c.IssuerClientID, EnvIssuerClientSecret))
	}
	if c.ExportClientSecret == "" {
		errs = append(errs, fmt.Errorf("client %q needs its secret: set -export-client-secret-file or $%s (only -demo has a default)", c.ExportClientID, EnvExportClientSecret))
	}
	// The key set is never refreshed sooner than the refetch interval
	// allows, so a max age below the interval would not be honoured: it is
	// refused rather than ignored.
	if c.JWKSMaxAge <= 0 || c.JWKSMaxAge > MaxJWKSMaxAge {
		errs = append(errs, fmt.Errorf("-jwks-max-age %s must be positive and at most %s", c.JWKSMaxAge, MaxJWKSMaxAge))
	}
	if c.JWKSMinRefetchInterval < MinJWKSRefetchInterval {
		errs = append(errs, fmt.Errorf("-jwks-min-refetch-interval %s must be at least %s", c.JWKSMinRefetchInterval, MinJWKSRefetchInterval))
	}
	if c.JWKSMinRefetchInterval > c.JWKSMaxAge && c.JWKSMaxAge > 0 {
		errs = append(errs, fmt.Errorf("-jwks-min-refetch-interval %s must not exceed -jwks-max-age %s (the key set is never refreshed sooner than the refetch interval)",
			c.JWKSMinRefetchInterval, c.JWKSMaxAge))
	}
	return errors.Join(errs...)
}
