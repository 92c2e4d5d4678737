package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/libs/telemetry"
)

// Store kinds accepted in Config.Store.
const (
	StorePostgres = "postgres"
	StoreMemory   = "memory"
)

// Defaults of the flags.
const (
	DefaultHTTPAddr   = ":8091"
	DefaultIssuer     = "http://localhost:8080"
	DefaultAudience   = "gatehouse-api"
	DefaultPDPURL     = "http://localhost:8081"
	DefaultPDPTimeout = 250 * time.Millisecond
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

// Config is the invoice service's configuration. Every field has a flag
// (and so an environment variable GATEHOUSE_INVOICE_<FLAG>, see
// libs/serve/envflag); RegisterFlags sets the defaults.
type Config struct {
	// HTTPAddr is the listen address (flag http-addr).
	HTTPAddr string
	// Store is "postgres" or "memory" (dev only; flag store).
	Store string
	// DatabaseURL is the Postgres DSN, required with store postgres (flag database-url).
	DatabaseURL string
	// Issuer is the required iss of access tokens (flag issuer).
	Issuer string
	// JWKSURL is where the issuer's keys are fetched; empty means
	// <Issuer>/.well-known/jwks.json (flag jwks-url). Inside compose it
	// points at the issuer's internal address while Issuer stays the
	// public identifier.
	JWKSURL string
	// JWKSMaxAge is how long a fetched key set is used before the next
	// lookup refreshes it (flag jwks-max-age). Key rotation fails no
	// request while the issuer's -key-publish-lead exceeds it plus the
	// issuer's -key-refresh-interval.
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
	// RequireGatewayHeaders makes the X-Gatehouse-* identity headers
	// mandatory, so only requests that came through the gateway are served
	// (flag require-gateway-headers). They must match the token either way.
	RequireGatewayHeaders bool
	// Demo seeds the demo invoices at start (flag demo). Idempotent.
	Demo bool
	// Telemetry selects the trace exporter (flags otel-*).
	Telemetry telemetry.Config
}

// RegisterFlags sets c to the defaults and binds every field to a flag in fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", DefaultHTTPAddr, "listen address")
	fs.StringVar(&c.Store, "store", StorePostgres, "store: postgres, or memory (dev only, loses everything on restart)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres DSN (required with -store postgres)")
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "required iss of access tokens")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "issuer JWKS URL (default <issuer>/.well-known/jwks.json)")
	fs.DurationVar(&c.JWKSMaxAge, "jwks-max-age", DefaultJWKSMaxAge, "how long a fetched JWKS is used before it is refreshed (keep below the issuer's -key-publish-lead minus its -key-refresh-interval; 1s to 1h)")
	fs.DurationVar(&c.JWKSMinRefetchInterval, "jwks-min-refetch-interval", DefaultJWKSMinRefetchInterval, "least time between two JWKS fetches, however many unknown kids arrive (at least 1s, at most -jwks-max-age)")
	fs.StringVar(&c.Audience, "audience", DefaultAudience, "required aud of access tokens")
	fs.StringVar(&c.PDPURL, "pdp-url", DefaultPDPURL, "PDP base URL")
	fs.DurationVar(&c.PDPTimeout, "pdp-timeout", DefaultPDPTimeout, "deadline of one PDP decision; past it the request is denied")
	fs.BoolVar(&c.RequireGatewayHeaders, "require-gateway-headers", true, "require the gateway's X-Gatehouse-* identity headers (they must match the token either way)")
	fs.BoolVar(&c.Demo, "demo", false, "seed the demo invoices (idempotent)")
	c.Telemetry.RegisterFlags(fs)
}

// withDefaults fills the fields whose default derives from another.
func (c Config) withDefaults() Config {
	if c.JWKSURL == "" {
		c.JWKSURL = strings.TrimSuffix(c.Issuer, "/") + "/.well-known/jwks.json"
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.PDPTimeout == 0 {
		c.PDPTimeout = DefaultPDPTimeout
	}
	if c.JWKSMaxAge == 0 {
		c.JWKSMaxAge = DefaultJWKSMaxAge
	}
	if c.JWKSMinRefetchInterval == 0 {
		c.JWKSMinRefetchInterval = DefaultJWKSMinRefetchInterval
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
	for _, f := range []struct{ name, raw string }{{"jwks-url", c.JWKSURL}, {"pdp-url", c.PDPURL}} {
		if u, err := url.Parse(f.raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("-%s %q: want an absolute http(s) URL", f.name, f.raw))
		}
	}
	if c.PDPTimeout < 0 {
		errs = append(errs, errors.New("-pdp-timeout must be positive"))
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
