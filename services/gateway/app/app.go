// Package app wires the gateway: the one place that constructs its parts.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/revocation"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/gateway/internal/breaker"
	"github.com/gatehouse/gatehouse/services/gateway/internal/decisioncache"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
	"github.com/gatehouse/gatehouse/services/gateway/internal/tokencache"
)

// Config is the gateway's configuration.
type Config struct {
	HTTPAddr string
	Issuer   string
	JWKSURL  string
	// JWKSMaxAge is how long a fetched key set is used before the next
	// lookup refreshes it; JWKSMinRefetchInterval is the least time between
	// two fetches, however many unknown kids arrive. Key rotation fails no
	// request while the issuer's -key-publish-lead exceeds JWKSMaxAge plus
	// its -key-refresh-interval.
	JWKSMaxAge             time.Duration
	JWKSMinRefetchInterval time.Duration
	Audience               string
	// Routes is the route table file; empty uses the built-in table.
	Routes     string
	PDPURL     string
	PDPTimeout time.Duration
	// PDP circuit breaker: consecutive failures that open it, and how long
	// it stays open before a probe.
	PDPBreakerFailures uint
	PDPBreakerCoolDown time.Duration
	// PDPStaleAllow is how old a cached ALLOW may be and still allow a
	// read-only, low-risk route while the PDP is unavailable; 0 is off.
	PDPStaleAllow time.Duration
	// InvoiceURL and SupportURL are the upstream services' base URLs.
	InvoiceURL, SupportURL string
	// Size limits.
	MaxBodyBytes          int64
	MaxHeaderBytes        int
	MaxAuthorizationBytes int
	// Rate limits (token buckets): per source address and per client.
	SourceRate, ClientRate   float64
	SourceBurst, ClientBurst int
	// Verified-token cache and decision cache.
	TokenCacheSize    int
	TokenCacheTTL     time.Duration
	DecisionCacheSize int
	DecisionCacheTTL  time.Duration
	// Revocation: follow the issuer's feed at RevocationFeedURL (default
	// the issuer) as confidential client RevocationClientID.
	RevocationFeed             bool
	RevocationFeedURL          string
	RevocationClientID         string
	RevocationClientSecretFile string
	// RevocationClientSecret is the client's secret. It has no flag (a
	// flag shows in the process list): Run reads it from
	// RevocationClientSecretFile, else from EnvRevocationClientSecret.
	RevocationClientSecret string
	RevocationMaxStaleness time.Duration
	Telemetry              telemetry.Config
}

// Defaults and bounds of the JWKS cache.
const (
	DefaultJWKSMaxAge             = 5 * time.Minute
	DefaultJWKSMinRefetchInterval = 10 * time.Second
	// MinJWKSRefetchInterval keeps unknown kids from making the gateway
	// fetch the issuer's keys more than once a second.
	MinJWKSRefetchInterval = time.Second
	// MaxJWKSMaxAge bounds how long a key pulled from the issuer's JWKS
	// (an emergency) is still trusted from a cached set.
	MaxJWKSMaxAge = time.Hour
)

// EnvRevocationClientSecret holds the revocation feed client's secret
// when -revocation-client-secret-file is not set.
const EnvRevocationClientSecret = "GATEHOUSE_GATEWAY_REVOCATION_CLIENT_SECRET" //nolint:gosec // G101: the variable's name, not a secret

// RegisterFlags binds the configuration to fs (and, through envflag, to
// GATEHOUSE_GATEWAY_* variables).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8000", "listen address")
	fs.StringVar(&c.Issuer, "issuer", "http://localhost:8080", "required iss of access tokens")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "issuer JWKS URL (default <issuer>/.well-known/jwks.json)")
	fs.DurationVar(&c.JWKSMaxAge, "jwks-max-age", DefaultJWKSMaxAge, "how long a fetched JWKS is used before it is refreshed (keep below the issuer's -key-publish-lead minus its -key-refresh-interval; 1s to 1h)")
	fs.DurationVar(&c.JWKSMinRefetchInterval, "jwks-min-refetch-interval", DefaultJWKSMinRefetchInterval, "least time between two JWKS fetches, however many unknown kids arrive (at least 1s, at most -jwks-max-age)")
	fs.StringVar(&c.Audience, "audience", "gatehouse-api", "required aud of access tokens")
	fs.StringVar(&c.Routes, "routes", "", "route table JSON file (default: the built-in table; see docs/gateway.md)")
	fs.StringVar(&c.PDPURL, "pdp-url", "http://localhost:8081", "PDP base URL")
	fs.DurationVar(&c.PDPTimeout, "pdp-timeout", 250*time.Millisecond, "deadline of one PDP decision; past it the request is denied")
	fs.UintVar(&c.PDPBreakerFailures, "pdp-breaker-failures", breaker.DefaultFailures, "consecutive PDP failures that open the circuit breaker (requests are then denied at once)")
	fs.DurationVar(&c.PDPBreakerCoolDown, "pdp-breaker-cooldown", breaker.DefaultCoolDown, "how long the PDP circuit breaker stays open before it lets a probe through")
	fs.DurationVar(&c.PDPStaleAllow, "pdp-stale-allow", 0, "while the PDP is unavailable, allow read-only low-risk routes from a cached ALLOW at most this old (0: off; at most 5m)")
	fs.StringVar(&c.InvoiceURL, "invoice-url", "http://localhost:8091", "invoice service base URL")
	fs.StringVar(&c.SupportURL, "support-url", "http://localhost:8092", "support service base URL")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", edge.DefaultMaxBodyBytes, "largest request body accepted")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", edge.DefaultMaxHeaderBytes, "largest total size of request header fields accepted (the server reads at most 64 KiB anyway)")
	fs.IntVar(&c.MaxAuthorizationBytes, "max-authorization-bytes", edge.DefaultMaxAuthorizationBytes, "longest Authorization header accepted, checked before any token work")
	fs.Float64Var(&c.SourceRate, "rate-limit-source", 50, "requests per second per source address (0: unlimited)")
	fs.IntVar(&c.SourceBurst, "rate-limit-source-burst", 100, "burst per source address")
	fs.Float64Var(&c.ClientRate, "rate-limit-client", 100, "requests per second per client_id (0: unlimited)")
	fs.IntVar(&c.ClientBurst, "rate-limit-client-burst", 200, "burst per client_id")
	fs.IntVar(&c.TokenCacheSize, "token-cache-size", 10000, "verified tokens remembered (0: verify every request)")
	fs.DurationVar(&c.TokenCacheTTL, "token-cache-ttl", time.Minute, "longest a token's verification is reused (never past its exp)")
	fs.IntVar(&c.DecisionCacheSize, "decision-cache-size", 10000, "PDP answers remembered")
	fs.DurationVar(&c.DecisionCacheTTL, "decision-cache-ttl", 2*time.Second, "how long a plain ALLOW or DENY of the PDP is reused (0: off; at most 1m)")
	fs.BoolVar(&c.RevocationFeed, "revocation-feed", true, "follow the issuer's revocation feed; false (development only) checks no token for revocation and fails sensitive routes closed")
	fs.StringVar(&c.RevocationFeedURL, "revocation-feed-url", "", "base URL of the issuer's revocation feed (default <issuer>)")
	fs.StringVar(&c.RevocationClientID, "revocation-client-id", "gateway", "client id the gateway subscribes to the revocation feed as (a confidential client with revocations:read)")
	fs.StringVar(&c.RevocationClientSecretFile, "revocation-client-secret-file", "", "file holding that client's secret (else $"+EnvRevocationClientSecret+")")
	fs.DurationVar(&c.RevocationMaxStaleness, "revocation-max-staleness", edge.DefaultMaxStaleness, "past this time without word from the revocation feed, sensitive routes answer 503")
	c.Telemetry.RegisterFlags(fs)
}

// loadSecret fills RevocationClientSecret from its file or the
// environment, unless it is set already or the feed is off.
func (c *Config) loadSecret(lookup func(string) (string, bool)) error {
	if !c.RevocationFeed || c.RevocationClientSecret != "" {
		return nil
	}
	if c.RevocationClientSecretFile != "" {
		b, err := os.ReadFile(filepath.Clean(c.RevocationClientSecretFile))
		if err != nil {
			return fmt.Errorf("gateway: read -revocation-client-secret-file: %w", err)
		}
		if c.RevocationClientSecret = strings.TrimSpace(string(b)); c.RevocationClientSecret == "" {
			return fmt.Errorf("gateway: -revocation-client-secret-file %s is empty", c.RevocationClientSecretFile)
		}
		return nil
	}
	c.RevocationClientSecret, _ = lookup(EnvRevocationClientSecret)
	return nil
}

// App is a wired gateway.
type App struct {
	cfg     Config
	tel     *telemetry.Telemetry
	handler http.Handler
	// stop ends the background work (the revocation feed) and waits for it.
	stop func()
}

// TokenVerifier verifies a raw access token: an *accesstoken.Verifier, or
// what WithTokenVerifier makes of one.
type TokenVerifier = tokencache.Verifier

// Option changes how New wires the gateway.
type Option func(*options)

type options struct {
	verifier func(accesstoken.Config) (TokenVerifier, error)
}

// WithTokenVerifier makes New verify tokens with what newVerifier returns for the
// verifier configuration the gateway would use, instead of an
// *accesstoken.Verifier of that configuration. It exists for one test: the
// e2e attack suite builds a gateway whose verifier skips a check, to prove
// that the suite catches such a build (e2e/attacks
// TestBrokenVerifierFailsTheSuite). The gateway's main never uses it.
func WithTokenVerifier(newVerifier func(accesstoken.Config) (TokenVerifier, error)) Option {
	return func(o *options) { o.verifier = newVerifier }
}

// New builds the gateway from cfg and starts following the revocation
// feed; Close stops it.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) (*App, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.verifier == nil {
		o.verifier = func(c accesstoken.Config) (TokenVerifier, error) { return accesstoken.NewVerifier(c) }
	}
	if cfg.Telemetry.ServiceName == "" {
		cfg.Telemetry.ServiceName = "gateway"
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/jwks.json"
	}
	if cfg.RevocationFeedURL == "" {
		cfg.RevocationFeedURL = cfg.Issuer
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	upstreams := map[string]*url.URL{}
	for name, raw := range map[string]string{route.UpstreamInvoice: cfg.InvoiceURL, route.UpstreamSupport: cfg.SupportURL, "pdp": cfg.PDPURL, "jwks": cfg.JWKSURL, "revocation feed": cfg.RevocationFeedURL} {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: %s URL %q must be an absolute http(s) URL", name, raw)
		}
		if slices.Contains(route.Upstreams(), name) {
			upstreams[name] = u
		}
	}
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, err
	}
	a, err := build(ctx, cfg, logger, tel, upstreams, o.verifier)
	if err != nil {
		return nil, errors.Join(err, tel.Shutdown(ctx))
	}
	return a, nil
}

// validate checks what the parts do not check themselves.
func (c *Config) validate() error {
	var errs []error
	if c.RevocationFeed && (c.RevocationClientID == "" || c.RevocationClientSecret == "") {
		errs = append(errs, fmt.Errorf("gateway: the revocation feed needs client %q's secret: set $%s or -revocation-client-secret-file (or -revocation-feed=false, development only)",
			c.RevocationClientID, EnvRevocationClientSecret))
	}
	if c.RevocationMaxStaleness <= 0 {
		errs = append(errs, errors.New("gateway: -revocation-max-staleness must be positive"))
	}
	if c.MaxBodyBytes <= 0 || c.MaxHeaderBytes <= 0 || c.MaxAuthorizationBytes <= 0 {
		errs = append(errs, errors.New("gateway: -max-body-bytes, -max-header-bytes and -max-authorization-bytes must be positive"))
	}
	if c.PDPBreakerFailures == 0 || c.PDPBreakerFailures > math.MaxUint32 || c.PDPBreakerCoolDown <= 0 {
		errs = append(errs, errors.New("gateway: -pdp-breaker-failures and -pdp-breaker-cooldown must be positive"))
	}
	if c.TokenCacheSize < 0 || c.DecisionCacheSize < 0 {
		errs = append(errs, errors.New("gateway: cache sizes must not be negative"))
	}
	errs = append(errs, c.validateJWKS()...)
	return errors.Join(errs...)
}

// validateJWKS checks the key-set cache timings. The cache refreshes a
// stale set no sooner than the refetch interval allows, so a max age below
// the interval would not be honoured: it is refused rather than ignored.
func (c *Config) validateJWKS() []error {
	var errs []error
	if c.JWKSMaxAge <= 0 || c.JWKSMaxAge > MaxJWKSMaxAge {
		errs = append(errs, fmt.Errorf("gateway: -jwks-max-age %s must be positive and at most %s", c.JWKSMaxAge, MaxJWKSMaxAge))
	}
	if c.JWKSMinRefetchInterval < MinJWKSRefetchInterval {
		errs = append(errs, fmt.Errorf("gateway: -jwks-min-refetch-interval %s must be at least %s", c.JWKSMinRefetchInterval, MinJWKSRefetchInterval))
	}
	if c.JWKSMinRefetchInterval > c.JWKSMaxAge && c.JWKSMaxAge > 0 {
		errs = append(errs, fmt.Errorf("gateway: -jwks-min-refetch-interval %s must not exceed -jwks-max-age %s (the key set is never refreshed sooner than the refetch interval)",
			c.JWKSMinRefetchInterval, c.JWKSMaxAge))
	}
	return errs
}

func build(ctx context.Context, cfg Config, logger *slog.Logger, tel *telemetry.Telemetry, upstreams map[string]*url.URL,
	newVerifier func(accesstoken.Config) (TokenVerifier, error),
) (*App, error) {
	meter := tel.MeterProvider().Meter("gateway")
	fetches, err := meter.Int64Counter("gatehouse.gateway.jwks.fetches",
		metric.WithDescription("fetches of the issuer's JWKS, by outcome (ok, error): a burst of unknown kids must not raise it past one per -jwks-min-refetch-interval"))
	if err != nil {
		return nil, err
	}
	fetchOK, fetchFailed := metric.WithAttributes(attribute.String("outcome", "ok")), metric.WithAttributes(attribute.String("outcome", "error"))
	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{
		OnFetch: func(err error) {
			if err != nil {
				fetches.Add(context.Background(), 1, fetchFailed)
				return
			}
			fetches.Add(context.Background(), 1, fetchOK)
		},
		URL:                cfg.JWKSURL,
		Client:             &http.Client{Timeout: 5 * time.Second, Transport: tel.Transport(http.DefaultTransport)},
		MaxAge:             cfg.JWKSMaxAge,
		MinRefetchInterval: cfg.JWKSMinRefetchInterval,
	})
	if err != nil {
		return nil, err
	}
	verifier, err := newVerifier(accesstoken.Config{Issuer: cfg.Issuer, Audience: cfg.Audience, Keys: jwks})
	if err != nil {
		return nil, err
	}
	tokens, err := tokencache.New(tokencache.Config{Verifier: verifier, Size: cfg.TokenCacheSize, TTL: cfg.TokenCacheTTL, Meter: meter})
	if err != nil {
		return nil, err
	}
	decisions, err := decisioncache.New(decisioncache.Config{Size: cfg.DecisionCacheSize, TTL: cfg.DecisionCacheTTL, StaleFor: cfg.PDPStaleAllow, Meter: meter})
	if err != nil {
		return nil, err
	}
	otelInterceptor, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, err
	}
	pdpHTTP := &http.Client{Transport: tel.Transport(h2cTransport())}
	pdpClient := authzv1connect.NewDecisionServiceClient(pdpHTTP, cfg.PDPURL, connect.WithInterceptors(otelInterceptor))
	pdp, err := breaker.New(breaker.Config{
		PDP:      enforce.NewClient(pdpClient, cfg.PDPTimeout),
		Failures: uint32(cfg.PDPBreakerFailures), //nolint:gosec // G115: validate bounds it
		CoolDown: cfg.PDPBreakerCoolDown,
		Logger:   logger,
		Meter:    meter,
	})
	if err != nil {
		return nil, err
	}
	table, err := route.Load(cfg.Routes, route.Upstreams())
	if err != nil {
		return nil, err
	}
	set := revocation.NewSet(revocation.SetOptions{})
	checks := map[string]serve.ReadyFunc{
		"jwks":    jwks.Ready,
		"pdp":     serve.HTTPReady(pdpHTTP, strings.TrimSuffix(cfg.PDPURL, "/")+"/readyz"),
		"invoice": serve.HTTPReady(pdpHTTP, strings.TrimSuffix(cfg.InvoiceURL, "/")+"/readyz"),
	}
	var follower *revocation.Follower
	if cfg.RevocationFeed {
		feedClient := revocationv1connect.NewRevocationFeedServiceClient(&http.Client{Transport: tel.Transport(h2cTransport())},
			cfg.RevocationFeedURL, connect.WithInterceptors(otelInterceptor))
		follower, err = revocation.NewFollower(revocation.FollowerConfig{
			Client: feedClient, ClientID: cfg.RevocationClientID, ClientSecret: cfg.RevocationClientSecret,
			Set: set, Logger: logger, Meter: meter,
		})
		if err != nil {
			return nil, err
		}
		checks["revocation feed"] = func(context.Context) error {
			if !follower.Ready() {
				return errors.New("the revocation feed has not been heard from yet")
			}
			return nil
		}
	} else {
		logger.WarnContext(ctx, "revocation feed off: no token is checked for revocation and sensitive routes are refused (development only)")
	}
	edgeHandler, err := edge.NewHandler(edge.Config{
		Routes:                table,
		Verifier:              tokens,
		Revocations:           revocations{set},
		MaxStaleness:          cfg.RevocationMaxStaleness,
		PDP:                   pdp,
		Decisions:             decisions,
		Upstreams:             upstreams,
		Transport:             tel.Transport(h2cTransport()),
		MaxBodyBytes:          cfg.MaxBodyBytes,
		MaxHeaderBytes:        cfg.MaxHeaderBytes,
		MaxAuthorizationBytes: cfg.MaxAuthorizationBytes,
		SourceLimit:           ratelimit.New(ratelimit.Config{Rate: cfg.SourceRate, Burst: cfg.SourceBurst}),
		ClientLimit:           ratelimit.New(ratelimit.Config{Rate: cfg.ClientRate, Burst: cfg.ClientBurst}),
		Logger:                logger,
		Meter:                 meter,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	serve.MountHealth(mux, logger, checks)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	mux.Handle("/", tel.EdgeMiddleware("gateway", edgeHandler))
	a := &App{cfg: cfg, tel: tel, handler: mux, stop: func() {}}
	if follower != nil {
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			follower.Run(runCtx)
		}()
		a.stop = func() { cancel(); <-done }
	}
	return a, nil
}

// revocations adapts a revocation.Set to the edge's view of it.
type revocations struct{ set *revocation.Set }

func (r revocations) Revoked(c *accesstoken.Claims) bool {
	return r.set.Revoked(revocation.Token{JTI: c.ID, Subject: c.Subject, ClientID: c.ClientID, IssuedAt: c.IssuedAt})
}

func (r revocations) Staleness(now time.Time) time.Duration { return r.set.Staleness(now) }

// h2cTransport speaks HTTP/2 to upstreams (gRPC needs it): cleartext HTTP/2
// to http:// URLs, which Gatehouse's services accept (libs/serve), and HTTP/2
// over TLS to https:// ones.
func h2cTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = &protocols
	t.ResponseHeaderTimeout = 30 * time.Second
	return t
}

// Handler returns the gateway's HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// Close stops following the revocation feed and flushes telemetry.
func (a *App) Close() error {
	a.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.tel.Shutdown(ctx)
}

// Run builds the gateway and serves it on cfg.HTTPAddr until ctx is done.
// The revocation client's secret is read from its file or the environment.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.loadSecret(os.LookupEnv); err != nil {
		return err
	}
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return errors.Join(serve.ListenAndServe(ctx, logger, "gateway", cfg.HTTPAddr, a.Handler()), a.Close())
}
