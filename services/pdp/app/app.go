// Package app wires the PDP: it verifies and loads the signed policy bundle,
// opens the policy store and the decision log, starts the rollout manager
// and the shadow evaluator, and serves gatehouse.authz.v1.DecisionService
// and PolicyAdminService with health and metrics endpoints. It is the PDP's
// one wiring point, used by cmd/pdp and by the one-process demo.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/adminrpc"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	policymemory "github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	policypostgres "github.com/gatehouse/gatehouse/services/pdp/internal/policystore/postgres"
	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// ServiceName names the PDP in logs, traces, metrics and environment
// variables (GATEHOUSE_PDP_<FLAG>).
const ServiceName = "pdp"

// instrumentation names the PDP's meter and tracer.
const instrumentation = "github.com/gatehouse/gatehouse/services/pdp"

// shutdownTimeout bounds draining the shadow queue and the decision log,
// and flushing telemetry, on Close.
const shutdownTimeout = 10 * time.Second

// compressMinBytes is the smallest response the PDP compresses.
const compressMinBytes = 4 << 10

// jwksTimeout bounds one fetch of the issuer's JWKS.
const jwksTimeout = 5 * time.Second

// bootstrapActor is who the PDP records as having activated the bundle it
// started with, when the shared state had none.
const bootstrapActor = "pdp:bootstrap"

// App is a running PDP's components.
type App struct {
	tel      *telemetry.Telemetry
	pool     *pgxpool.Pool
	recorder *audit.Recorder
	manager  *rollout.Manager
	shadower *rollout.Shadower
	stop     context.CancelFunc
	handler  http.Handler
}

// New verifies and compiles the policy bundle in cfg.PolicyDir, opens the
// stores, and wires the PDP. It fails when the bundle is unsigned or
// wrongly signed, has no revision, does not compile, or its decision rule
// does not answer with a well-formed decision.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (a *App, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("pdp: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.BundleKeyFile)
	if err != nil {
		return nil, fmt.Errorf("pdp: bundle verification key: %w", err)
	}
	verifier, err := bundle.NewVerifier(cfg.BundleKeyID, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pdp: bundle verification key: %w", err)
	}
	initial, err := bundle.LoadDir(cfg.PolicyDir, verifier)
	if err != nil {
		return nil, fmt.Errorf("pdp: policy-dir %s: %w", cfg.PolicyDir, err)
	}
	if _, err := policy.Compile(ctx, initial); err != nil {
		return nil, fmt.Errorf("pdp: policy-dir %s: %w", cfg.PolicyDir, err)
	}

	cfg.Telemetry.ServiceName = ServiceName
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("pdp: %w", err)
	}
	a = &App{tel: tel}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.stop = stop
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("pdp: %w", err), a.Close())
			a = nil
		}
	}()
	meter := tel.MeterProvider().Meter(instrumentation)

	policies, decisionLog, err := a.openStores(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	// Decisions arrive by the thousand per second: each append (one
	// transaction) takes as many events as the log allows, which costs
	// the database least per event (smaller batches measured worse, see
	// docs/benchmarks.md).
	if a.recorder, err = audit.NewRecorder(decisionLog, audit.RecorderOptions{
		QueueSize: cfg.DecisionLogQueue, BatchSize: audit.MaxAppendBatch, Meter: meter, Logger: logger,
	}); err != nil {
		return nil, err
	}

	var cache *decision.Cache
	if cfg.CacheSize > 0 {
		if cache, err = decision.NewCache(cfg.CacheSize); err != nil {
			return nil, err
		}
	}
	check := checker{verifier: verifier}
	if cfg.CacheSize == 0 {
		// Nothing keeps decisions: finding out which depend on the time
		// would be wasted work on every evaluation.
		check.compileOpts = append(check.compileOpts, policy.WithoutTimeReads())
	}
	if a.manager, err = rollout.NewManager(policies, check.load, rollout.Options{
		Logger: logger, Meter: meter, PollInterval: cfg.RolloutPoll,
		OnInit: func(ctx context.Context, r policystore.Rollout) {
			// The first activation is a policy change like any other.
			if err := a.recorder.Record(ctx, audit.Event{
				Type: audit.TypePolicyChanged, Subject: bootstrapActor, Action: "policy:init",
				Resource: "policy/" + r.Active, PolicyVersion: r.Active,
				Attributes: map[string]string{"to": r.Active, "generation": strconv.FormatInt(r.Generation, 10)},
			}); err != nil {
				logger.ErrorContext(ctx, "policy initialization not recorded in the audit log", slog.Any("error", err))
			}
		},
		OnChange: func(r policystore.Rollout) {
			if cache != nil {
				cache.Purge()
			}
			logger.Info("policy state changed", slog.Int64("generation", r.Generation), slog.String("active", r.Active),
				slog.String("candidate", r.Candidate), slog.String("mode", string(r.Mode)), slog.Int("canary_percent", r.CanaryPercent))
		},
	}); err != nil {
		return nil, err
	}
	if err := bootstrap(ctx, a.manager, policies, verifier, initial); err != nil {
		return nil, err
	}
	if err := a.manager.Start(runCtx); err != nil {
		return nil, err
	}
	if a.shadower, err = rollout.NewShadower(policies, a.recorder, rollout.ShadowOptions{
		QueueSize: cfg.ShadowQueue, EvalTimeout: cfg.EvalTimeout, Logger: logger, Meter: meter,
	}); err != nil {
		return nil, err
	}
	svc, err := decision.NewService(decision.Options{
		Router: a.manager, Shadower: a.shadower, Audit: a.recorder, Cache: cache,
		Timeout: cfg.EvalTimeout, Logger: logger, Meter: meter, Tracer: tel.Tracer(instrumentation),
	})
	if err != nil {
		return nil, err
	}

	jwksURL := cfg.JWKSURL
	if jwksURL == "" {
		jwksURL = cfg.Issuer + "/.well-known/jwks.json"
	}
	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{
		URL:    jwksURL,
		Client: &http.Client{Timeout: jwksTimeout, Transport: tel.Transport(http.DefaultTransport)},
	})
	if err != nil {
		return nil, err
	}
	tokens, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: cfg.Issuer, Audience: cfg.AdminAudience, Keys: jwks})
	if err != nil {
		return nil, err
	}
	admin, err := adminrpc.NewHandler(adminrpc.Deps{
		Store: policies, Local: a.manager, Check: check,
		Auth: tokens, Audit: a.recorder, Logger: logger,
	})
	if err != nil {
		return nil, err
	}

	otel, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, fmt.Errorf("connect interceptor: %w", err)
	}
	// Decisions are measured by the decision service itself (latency,
	// states, reasons) and traced by its pdp.decide span: the RPC layer
	// keeps its server span, the parent of those, but records no duplicate
	// RPC metrics (docs/benchmarks.md).
	decisionOtel, err := tel.ConnectInterceptor(otelconnect.WithoutMetrics())
	if err != nil {
		return nil, fmt.Errorf("connect interceptor: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewDecisionServiceHandler(decisionrpc.NewHandler(svc),
		connect.WithInterceptors(decisionOtel),
		connect.WithReadMaxBytes(decisionrpc.MaxRequestBytes),
		// A decision is ~100 bytes: gzipping it costs more CPU than the
		// whole policy evaluation and saves nothing on the wire
		// (docs/benchmarks.md). Large BatchCheck answers still compress.
		connect.WithCompressMinBytes(compressMinBytes),
	))
	mux.Handle(authzv1connect.NewPolicyAdminServiceHandler(admin,
		connect.WithInterceptors(otel),
		connect.WithReadMaxBytes(adminrpc.MaxRequestBytes),
	))
	checks := map[string]serve.ReadyFunc{"policy": func(context.Context) error { return a.manager.Ready() }}
	if a.pool != nil {
		checks["postgres"] = a.pool.Ping
	}
	serve.MountHealth(mux, logger, checks)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	a.handler = mux

	logger.InfoContext(ctx, "policy loaded", slog.String("policy_dir", cfg.PolicyDir),
		slog.String("policy_dir_revision", initial.Revision), slog.String("active", a.manager.State().Active))
	return a, nil
}

// openStores opens the policy store and the decision log on cfg's
// backend: Postgres (both migrated, in one database), or memory (dev).
func (a *App) openStores(ctx context.Context, cfg Config, logger *slog.Logger) (policystore.Store, audit.Store, error) {
	if cfg.Store == StoreMemory {
		logger.WarnContext(ctx, "DEV ONLY: memory store; bundles, rollout state and the decision log are lost on restart and not shared between replicas")
		return policymemory.New(), auditmemory.New(), nil
	}
	pool, err := libpostgres.Open(ctx, cfg.DatabaseURL, libpostgres.WithLogger(logger))
	if err != nil {
		return nil, nil, err
	}
	a.pool = pool
	if err := policypostgres.Migrate(ctx, pool); err != nil {
		return nil, nil, err
	}
	if err := auditpostgres.Migrate(ctx, pool); err != nil {
		return nil, nil, err
	}
	var logOpts []auditpostgres.Option
	if !cfg.DecisionLogSyncCommit {
		logOpts = append(logOpts, auditpostgres.WithAsynchronousCommit())
	}
	return policypostgres.New(pool), auditpostgres.New(pool, logOpts...), nil
}

// bootstrap stores the bundle the PDP started with and makes it active if
// the shared state has none yet. A revision already stored with another
// digest is accepted when both carry the same signed file hashes: the
// same files, packed by another build (gzip output is not guaranteed to
// be identical across Go versions). Other content under the same revision
// stops the PDP: revisions are immutable, so bump it.
func bootstrap(ctx context.Context, m *rollout.Manager, store policystore.Store, v *bundle.Verifier, initial *bundle.Bundle) error {
	err := m.Bootstrap(ctx, stored(initial, bootstrapActor), bootstrapActor)
	if !errors.Is(err, policystore.ErrRevisionConflict) {
		return err
	}
	stored, serr := store.Bundle(ctx, initial.Revision)
	if serr != nil {
		return errors.Join(err, serr)
	}
	opened, serr := bundle.Open(stored.Tarball, v)
	if serr != nil || !bundle.SameFiles(opened, initial) {
		return fmt.Errorf("policy-dir revision %s is stored with other content; bump the revision in .manifest: %w", initial.Revision, err)
	}
	return m.Bootstrap(ctx, stored, bootstrapActor)
}

// checker verifies and compiles pushed bundles for PolicyAdminService.
type checker struct {
	verifier    *bundle.Verifier
	compileOpts []policy.Option
}

// Check implements adminrpc.BundleChecker: it verifies and compiles a
// pushed bundle (policy.Compile's errors wrap bundle.ErrInvalid).
func (c checker) Check(ctx context.Context, tarball []byte) (policystore.Bundle, error) {
	b, err := bundle.Open(tarball, c.verifier)
	if err != nil {
		return policystore.Bundle{}, err
	}
	if _, err := policy.Compile(ctx, b); err != nil {
		return policystore.Bundle{}, err
	}
	return stored(b, ""), nil
}

// load is the rollout.Loader: it verifies and compiles a stored bundle.
func (c checker) load(ctx context.Context, b policystore.Bundle) (decision.Evaluator, error) {
	opened, err := bundle.Open(b.Tarball, c.verifier)
	if err != nil {
		return nil, err
	}
	if opened.Revision != b.Revision {
		return nil, fmt.Errorf("stored bundle %q holds revision %q", b.Revision, opened.Revision)
	}
	return policy.Compile(ctx, opened, c.compileOpts...)
}

// stored is what the policy store keeps of a verified bundle.
func stored(b *bundle.Bundle, uploadedBy string) policystore.Bundle {
	return policystore.Bundle{Revision: b.Revision, Digest: b.Digest, Tarball: b.Tarball, SigningKeyID: b.SigningKeyID, UploadedBy: uploadedBy}
}

// Handler returns every route of the PDP: the DecisionService and
// PolicyAdminService procedures, /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close stops the rollout manager, drains the shadow queue and the
// decision log into the store (nothing decided is lost on a graceful
// shutdown), closes the database and flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if a.stop != nil {
		a.stop()
	}
	if a.manager != nil {
		a.manager.Close()
	}
	if a.shadower != nil {
		errs = append(errs, a.shadower.Close(ctx))
	}
	if a.recorder != nil {
		errs = append(errs, a.recorder.Close(ctx))
	}
	if a.pool != nil {
		a.pool.Close()
	}
	errs = append(errs, a.tel.Shutdown(ctx))
	return errors.Join(errs...)
}

// Run serves the PDP on cfg.HTTPAddr until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	return serve.ListenAndServe(ctx, logger, ServiceName, cfg.HTTPAddr, a.Handler())
}
