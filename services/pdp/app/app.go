// Package app wires the PDP: it loads the policy bundle, builds the decision
// service and serves gatehouse.authz.v1.DecisionService with health and
// metrics endpoints. It is the PDP's one wiring point, used by cmd/pdp and by
// the one-process demo.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// ServiceName names the PDP in logs, traces, metrics and environment
// variables (GATEHOUSE_PDP_<FLAG>).
const ServiceName = "pdp"

// shutdownTimeout bounds flushing telemetry on Close.
const shutdownTimeout = 5 * time.Second

// Config is the PDP's configuration. The PDP keeps no state of its own yet,
// so it has no store or database settings.
type Config struct {
	// HTTPAddr is the listen address for Connect, gRPC, health and metrics.
	HTTPAddr string
	// PolicyDir is the OPA bundle directory (with a .manifest) to load.
	PolicyDir string
	// EvalTimeout bounds one policy evaluation; a slower one is INDETERMINATE.
	EvalTimeout time.Duration
	// Telemetry selects the trace exporter (flags otel-*).
	Telemetry telemetry.Config
}

// RegisterFlags binds c's fields to flags on fs, with the PDP's defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8081", "listen address (Connect, gRPC, /healthz, /readyz, /metrics)")
	fs.StringVar(&c.PolicyDir, "policy-dir", "policies", "OPA bundle directory holding .manifest, Rego policies and data")
	fs.DurationVar(&c.EvalTimeout, "eval-timeout", 100*time.Millisecond, "maximum time for one policy evaluation; slower is INDETERMINATE")
	c.Telemetry.RegisterFlags(fs)
}

// App is a running PDP's components.
type App struct {
	tel     *telemetry.Telemetry
	handler http.Handler
}

// New loads and compiles the policy bundle and wires the PDP. It fails when
// the bundle is missing, has no revision, does not compile, or its
// decision rule does not answer with a well-formed decision.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*App, error) {
	if cfg.PolicyDir == "" {
		return nil, errors.New("pdp: policy-dir is required")
	}
	if cfg.EvalTimeout <= 0 {
		return nil, fmt.Errorf("pdp: eval-timeout must be positive, got %s", cfg.EvalTimeout)
	}
	engine, err := policy.Load(ctx, cfg.PolicyDir)
	if err != nil {
		return nil, fmt.Errorf("pdp: %w", err)
	}
	cfg.Telemetry.ServiceName = ServiceName
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("pdp: %w", err)
	}
	a, err := wire(engine, cfg, logger, tel)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pdp: %w", err), tel.Shutdown(ctx))
	}
	logger.InfoContext(ctx, "policy loaded",
		slog.String("policy_dir", cfg.PolicyDir), slog.String("policy_version", engine.PolicyVersion()))
	return a, nil
}

func wire(engine *policy.Engine, cfg Config, logger *slog.Logger, tel *telemetry.Telemetry) (*App, error) {
	svc, err := decision.NewService(engine, cfg.EvalTimeout, logger,
		tel.MeterProvider().Meter("github.com/gatehouse/gatehouse/services/pdp"))
	if err != nil {
		return nil, err
	}
	otel, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, fmt.Errorf("connect interceptor: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewDecisionServiceHandler(decisionrpc.NewHandler(svc),
		connect.WithInterceptors(otel),
		connect.WithReadMaxBytes(decisionrpc.MaxRequestBytes),
	))
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{
		"policy": func(context.Context) error {
			if engine.PolicyVersion() == "" {
				return errors.New("no policy loaded")
			}
			return nil
		},
	})
	mux.Handle("GET /metrics", tel.MetricsHandler())
	return &App{tel: tel, handler: mux}, nil
}

// Handler returns every route of the PDP: the DecisionService procedures,
// /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close flushes and stops telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return a.tel.Shutdown(ctx)
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
