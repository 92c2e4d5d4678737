package app

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/libs/telemetry"
)

// Stores a PDP can keep its state in.
const (
	StorePostgres = "postgres"
	StoreMemory   = "memory"
)

// Defaults of Config.
const (
	DefaultHTTPAddr         = ":8081"
	DefaultPolicyDir        = "policies"
	DefaultIssuer           = "http://localhost:8080"
	DefaultAdminAudience    = "gatehouse-pdp"
	DefaultEvalTimeout      = 100 * time.Millisecond
	DefaultCacheSize        = 10000
	DefaultDecisionLogQueue = 8192
	DefaultShadowQueue      = 4096
	DefaultRolloutPoll      = 500 * time.Millisecond
)

// Config is the PDP's configuration.
type Config struct {
	// HTTPAddr is the listen address for Connect, gRPC, health and metrics.
	HTTPAddr string
	// PolicyDir is the signed OPA bundle directory the PDP starts with: it
	// becomes the active bundle when the shared state has none yet.
	PolicyDir string
	// BundleKeyFile holds the PEM public key that verifies bundle
	// signatures; BundleKeyID is the key id signatures must name.
	BundleKeyFile, BundleKeyID string
	// Store is StorePostgres or StoreMemory (dev only).
	Store string
	// DatabaseURL is the Postgres DSN (policy state and decision log).
	DatabaseURL string
	// Issuer and JWKSURL verify the access tokens of PolicyAdminService
	// callers; AdminAudience is the aud those tokens must carry.
	Issuer, JWKSURL, AdminAudience string
	// EvalTimeout bounds one policy evaluation; a slower one is INDETERMINATE.
	EvalTimeout time.Duration
	// CacheSize is how many decisions the decision cache holds; 0 turns it off.
	CacheSize int
	// DecisionLogQueue is how many decision events wait for the database
	// before deciding waits (back-pressure).
	DecisionLogQueue int
	// DecisionLogSyncCommit makes every decision log commit wait for the
	// database's WAL flush. Off by default: the log commits asynchronously
	// (libs/audit/postgres WithAsynchronousCommit), so the PDP decides at
	// the rate of its CPU rather than of the database disk's flushes. A
	// database crash can then lose the last moments of events, as a PDP
	// crash loses its queue (docs/audit.md).
	DecisionLogSyncCommit bool
	// ShadowQueue is how many shadow evaluations may wait; more are dropped
	// (and counted).
	ShadowQueue int
	// RolloutPoll is how often the PDP re-reads the rollout state, should a
	// change notification be lost.
	RolloutPoll time.Duration
	// Telemetry selects the trace exporter (flags otel-*).
	Telemetry telemetry.Config
}

// RegisterFlags binds c's fields to flags on fs, with the PDP's defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", DefaultHTTPAddr, "listen address (Connect, gRPC, /healthz, /readyz, /metrics)")
	fs.StringVar(&c.PolicyDir, "policy-dir", DefaultPolicyDir, "signed OPA bundle directory (.manifest, .signatures.json, Rego, data) that becomes the active policy when none is stored yet")
	fs.StringVar(&c.BundleKeyFile, "bundle-verification-key", "", "PEM file with the RSA public key that verifies policy bundle signatures (required)")
	fs.StringVar(&c.BundleKeyID, "bundle-verification-key-id", "", "key id bundle signatures must name (required)")
	fs.StringVar(&c.Store, "store", StorePostgres, "store for bundles, rollout state and the decision log: postgres, or memory (dev only, loses everything on restart)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres DSN (required with -store postgres)")
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "required iss of PolicyAdminService access tokens")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "issuer JWKS URL (default <issuer>/.well-known/jwks.json)")
	fs.StringVar(&c.AdminAudience, "admin-audience", DefaultAdminAudience, "required aud of PolicyAdminService access tokens (which also need the policy:admin scope)")
	fs.DurationVar(&c.EvalTimeout, "eval-timeout", DefaultEvalTimeout, "maximum time for one policy evaluation; slower is INDETERMINATE")
	fs.IntVar(&c.CacheSize, "cache-size", DefaultCacheSize, "decisions the decision cache holds (keyed by normalized input and policy version); 0 disables it")
	fs.IntVar(&c.DecisionLogQueue, "decision-log-queue", DefaultDecisionLogQueue, "decision log events that may wait for the database before decisions wait for it (back-pressure)")
	fs.BoolVar(&c.DecisionLogSyncCommit, "decision-log-sync-commit", false, "make every decision log commit wait for the database's disk flush (default: asynchronous commit; a database crash may lose the last ~0.6s of decision events, see docs/audit.md)")
	fs.IntVar(&c.ShadowQueue, "shadow-queue", DefaultShadowQueue, "shadow evaluations that may wait during a rollout; more are dropped and counted")
	fs.DurationVar(&c.RolloutPoll, "rollout-poll", DefaultRolloutPoll, "how often the PDP re-reads the rollout state should a change notification be lost (keep under 1s)")
	c.Telemetry.RegisterFlags(fs)
}

// validate checks c before anything starts.
func (c Config) validate() error {
	var errs []error
	if c.PolicyDir == "" {
		errs = append(errs, errors.New("policy-dir is required"))
	}
	if c.BundleKeyFile == "" || c.BundleKeyID == "" {
		errs = append(errs, errors.New("bundle-verification-key and bundle-verification-key-id are required: the PDP loads signed bundles only"))
	}
	switch c.Store {
	case StorePostgres:
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("database-url is required with -store postgres"))
		}
	case StoreMemory:
	default:
		errs = append(errs, fmt.Errorf("store must be %s or %s, got %q", StorePostgres, StoreMemory, c.Store))
	}
	if c.Issuer == "" || c.AdminAudience == "" {
		errs = append(errs, errors.New("issuer and admin-audience are required"))
	}
	if c.EvalTimeout <= 0 {
		errs = append(errs, fmt.Errorf("eval-timeout must be positive, got %s", c.EvalTimeout))
	}
	if c.CacheSize < 0 || c.DecisionLogQueue <= 0 || c.ShadowQueue <= 0 {
		errs = append(errs, errors.New("cache-size must be >= 0, decision-log-queue and shadow-queue > 0"))
	}
	if c.RolloutPoll <= 0 || c.RolloutPoll > time.Second {
		errs = append(errs, fmt.Errorf("rollout-poll must be in (0, 1s], got %s", c.RolloutPoll))
	}
	return errors.Join(errs...)
}
