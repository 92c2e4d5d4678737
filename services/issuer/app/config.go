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

// Config is the issuer's configuration. Every field has a flag (and so an
// environment variable GATEHOUSE_ISSUER_<FLAG>, see libs/serve/envflag);
// RegisterFlags sets the defaults.
type Config struct {
	// HTTPAddr is the listen address (flag http-addr).
	HTTPAddr string
	// Issuer is the issuer identifier: the iss of every token and the base
	// of the published endpoint URLs (flag issuer).
	Issuer string
	// Store is "postgres" or "memory" (dev only; flag store).
	Store string
	// DatabaseURL is the Postgres DSN, required with store postgres (flag database-url).
	DatabaseURL string
	// Demo loads the demo seed and allows ephemeral keys (flag demo). Never in production.
	Demo bool
	// KeyEncryptionKeyFile holds the 32-byte key-encryption key (KEK) that
	// seals the signing keys stored in the database (flag
	// key-encryption-key-file). Required unless Demo.
	KeyEncryptionKeyFile string
	// KeyRotationPeriod is the age at which the newest signing key is
	// succeeded by a new one (flag key-rotation-period).
	KeyRotationPeriod time.Duration
	// KeyPublishLead is how long a new signing key is in the JWKS before it
	// signs (flag key-publish-lead).
	KeyPublishLead time.Duration
	// KeyRefreshInterval is how often each replica reloads the key set and
	// applies the rotation schedule (flag key-refresh-interval).
	KeyRefreshInterval time.Duration
	// MaxTokenLifetime is the longest lifetime of any token the issuer
	// signs; a retired key stays published that long, plus the refresh
	// interval and clock skew (flag max-token-lifetime).
	MaxTokenLifetime time.Duration
	// ClientSecretKeyFile holds the key (at least 32 bytes) of the client
	// secret hash (flag client-secret-key-file). Required unless Demo.
	ClientSecretKeyFile string
	// AccessTokenLifespan is the default access-token lifetime (flag access-token-lifespan).
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan is the default refresh-token lifetime (flag refresh-token-lifespan).
	RefreshTokenLifespan time.Duration
	// AuthorizationCodeLifespan is how long an authorization code may wait
	// for its exchange (flag authorization-code-lifespan).
	AuthorizationCodeLifespan time.Duration
	// ScopeCatalog is the JSON file whose "scopes" describe each scope on
	// the consent page: policies/gatehouse/data.json (flag scope-catalog).
	ScopeCatalog string
	// RevocationFeedPoll bounds how late a revocation appended by another
	// replica reaches this replica's feed subscribers if a Postgres
	// notification is lost (flag revocation-feed-poll).
	RevocationFeedPoll time.Duration
	// ScopesSupported is published as scopes_supported in the metadata (flag scopes-supported).
	ScopesSupported []string
	// DiscoveryMaxAge is how long clients may cache the metadata and JWKS
	// (flag discovery-max-age).
	DiscoveryMaxAge time.Duration
	// PDPURL is the base URL of the PDP's DecisionService, which decides
	// every token exchange (flag pdp-url). Empty: the token-exchange grant
	// is not served (nor advertised).
	PDPURL string
	// PDPTimeout bounds one exchange decision; past it the exchange is
	// refused with 503 temporarily_unavailable (flag pdp-timeout).
	PDPTimeout time.Duration
	// Telemetry selects the trace exporter (flags otel-*).
	Telemetry telemetry.Config
}

// Defaults of the flags.
const (
	DefaultHTTPAddr                  = ":8080"
	DefaultIssuer                    = "http://localhost:8080"
	DefaultAccessTokenLifespan       = 5 * time.Minute
	DefaultDiscoveryMaxAge           = 5 * time.Minute
	DefaultKeyRotationPeriod         = 24 * time.Hour
	DefaultKeyPublishLead            = 10 * time.Minute
	DefaultKeyRefreshInterval        = time.Minute
	DefaultMaxTokenLifetime          = time.Hour
	DefaultRefreshTokenLifespan      = 8 * time.Hour
	DefaultAuthorizationCodeLifespan = time.Minute
	DefaultScopeCatalog              = "policies/gatehouse/data.json"
	DefaultRevocationFeedPoll        = time.Second
	DefaultPDPTimeout                = 250 * time.Millisecond
)

// DefaultScopesSupported are the OpenID Connect scopes and the API scopes of
// the platform that a token can carry.
func DefaultScopesSupported() []string {
	return []string{"openid", "profile", "offline_access", "invoice:read", "invoice:write", "invoice:approve", "support:read", "support:write", "support:impersonate"}
}

// RegisterFlags sets c to the defaults and binds every field to a flag in fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", DefaultHTTPAddr, "listen address")
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "issuer identifier (iss of every token, base of endpoint URLs)")
	fs.StringVar(&c.Store, "store", StorePostgres, "store: postgres, or memory (dev only, loses everything on restart)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres DSN (required with -store postgres)")
	fs.BoolVar(&c.Demo, "demo", false, "load the demo seed and allow ephemeral keys (never in production)")
	fs.StringVar(&c.KeyEncryptionKeyFile, "key-encryption-key-file", "", "file holding the 32-byte key that encrypts the signing keys stored in the database (required unless -demo)")
	fs.DurationVar(&c.KeyRotationPeriod, "key-rotation-period", DefaultKeyRotationPeriod, "age at which the newest signing key is succeeded by a new one")
	fs.DurationVar(&c.KeyPublishLead, "key-publish-lead", DefaultKeyPublishLead, "how long a new signing key is published in the JWKS before it signs (keep above -key-refresh-interval plus the verifiers' JWKS cache time)")
	fs.DurationVar(&c.KeyRefreshInterval, "key-refresh-interval", DefaultKeyRefreshInterval, "how often the issuer reloads its signing keys and applies the rotation schedule")
	fs.DurationVar(&c.MaxTokenLifetime, "max-token-lifetime", DefaultMaxTokenLifetime, "longest lifetime of any token the issuer signs; a retired signing key stays published this long (plus refresh interval and clock skew)")
	fs.StringVar(&c.ClientSecretKeyFile, "client-secret-key-file", "", "file whose bytes (at least 32) key the client secret hash (required unless -demo)")
	fs.DurationVar(&c.AccessTokenLifespan, "access-token-lifespan", DefaultAccessTokenLifespan, "default access token lifetime")
	fs.DurationVar(&c.RefreshTokenLifespan, "refresh-token-lifespan", DefaultRefreshTokenLifespan, "lifetime of a refresh-token family from its first token; each refresh rotates the token but never extends the family")
	fs.DurationVar(&c.AuthorizationCodeLifespan, "authorization-code-lifespan", DefaultAuthorizationCodeLifespan, "how long an authorization code may wait for its exchange")
	fs.StringVar(&c.ScopeCatalog, "scope-catalog", DefaultScopeCatalog, "JSON file describing each scope for the consent page (the \"scopes\" of policies/gatehouse/data.json)")
	fs.DurationVar(&c.RevocationFeedPoll, "revocation-feed-poll", DefaultRevocationFeedPoll, "how often the revocation feed checks Postgres for events another replica appended, should a notification be lost")
	c.ScopesSupported = DefaultScopesSupported()
	fs.Func("scopes-supported", "space-separated scopes published in the metadata (default \""+strings.Join(c.ScopesSupported, " ")+"\")", func(s string) error {
		c.ScopesSupported = strings.Fields(s)
		return nil
	})
	fs.DurationVar(&c.DiscoveryMaxAge, "discovery-max-age", DefaultDiscoveryMaxAge, "how long clients may cache the metadata and JWKS")
	fs.StringVar(&c.PDPURL, "pdp-url", "", "PDP base URL; it decides every token exchange (empty: the token-exchange grant is not served)")
	fs.DurationVar(&c.PDPTimeout, "pdp-timeout", DefaultPDPTimeout, "deadline of one token-exchange decision; past it the exchange is refused with 503")
	c.Telemetry.RegisterFlags(fs)
}

// validate checks c before anything is started.
func (c *Config) validate() error {
	var errs []error
	if err := validateIssuer(c.Issuer); err != nil {
		errs = append(errs, err)
	}
	switch c.Store {
	case StorePostgres:
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("-database-url is required with -store postgres"))
		}
	case StoreMemory:
	default:
		errs = append(errs, fmt.Errorf("-store %q: want postgres or memory", c.Store))
	}
	if !c.Demo && c.KeyEncryptionKeyFile == "" {
		errs = append(errs, errors.New("-key-encryption-key-file is required (only -demo may run with an ephemeral key-encryption key)"))
	}
	errs = append(errs, c.validateKeySchedule()...)
	if !c.Demo && c.ClientSecretKeyFile == "" {
		errs = append(errs, errors.New("-client-secret-key-file is required (only -demo may run with a random key)"))
	}
	if c.AccessTokenLifespan <= 0 {
		errs = append(errs, errors.New("-access-token-lifespan must be positive"))
	}
	if c.RefreshTokenLifespan <= 0 {
		errs = append(errs, errors.New("-refresh-token-lifespan must be positive"))
	}
	// RFC 6749 §4.1.2: a maximum lifetime of 10 minutes is recommended.
	if c.AuthorizationCodeLifespan <= 0 || c.AuthorizationCodeLifespan > 10*time.Minute {
		errs = append(errs, errors.New("-authorization-code-lifespan must be positive and at most 10m"))
	}
	if c.ScopeCatalog == "" {
		errs = append(errs, errors.New("-scope-catalog is required"))
	}
	if c.DiscoveryMaxAge < 0 {
		errs = append(errs, errors.New("-discovery-max-age must not be negative"))
	}
	if c.PDPURL != "" {
		if u, err := url.Parse(c.PDPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("-pdp-url %q: want an http(s) URL", c.PDPURL))
		}
	}
	if c.PDPTimeout <= 0 {
		errs = append(errs, errors.New("-pdp-timeout must be positive"))
	}
	return errors.Join(errs...)
}

// validateKeySchedule checks the signing-key rotation settings.
func (c *Config) validateKeySchedule() []error {
	var errs []error
	if c.KeyPublishLead < 0 || c.KeyRefreshInterval <= 0 {
		errs = append(errs, errors.New("-key-publish-lead must not be negative and -key-refresh-interval must be positive"))
	}
	if c.KeyRotationPeriod <= c.KeyPublishLead {
		errs = append(errs, errors.New("-key-rotation-period must exceed -key-publish-lead"))
	}
	if c.MaxTokenLifetime < c.AccessTokenLifespan {
		errs = append(errs, errors.New("-max-token-lifetime must be at least -access-token-lifespan"))
	}
	return errs
}

// validateIssuer enforces RFC 8414 §2: an http(s) URL with no query or
// fragment. A trailing slash is refused: iss is compared byte for byte.
func validateIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(issuer, "/") {
		return fmt.Errorf("-issuer %q: want an http(s) URL without query, fragment or trailing slash", issuer)
	}
	return nil
}
