// Package app wires the support service. In this first slice it serves only
// its health and metrics endpoints: the SupportService RPCs (tickets,
// impersonation, delegation) arrive with token exchange, and the gateway
// routes nothing to it until then (unrouted means denied).
package app

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
)

// Config is the support service's configuration.
type Config struct {
	HTTPAddr  string
	Telemetry telemetry.Config
}

// RegisterFlags binds the configuration to fs (and GATEHOUSE_SUPPORT_*).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8092", "listen address")
	c.Telemetry.RegisterFlags(fs)
}

// App is a wired support service.
type App struct {
	tel     *telemetry.Telemetry
	handler http.Handler
}

// New builds the support service from cfg.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*App, error) {
	if cfg.Telemetry.ServiceName == "" {
		cfg.Telemetry.ServiceName = "support"
	}
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	serve.MountHealth(mux, logger, nil)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	return &App{tel: tel, handler: tel.Middleware("support", mux)}, nil
}

// Handler returns the service's HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// Close flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.tel.Shutdown(ctx)
}

// Run builds the service and serves it on cfg.HTTPAddr until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return errors.Join(serve.ListenAndServe(ctx, logger, "support", cfg.HTTPAddr, a.Handler()), a.Close())
}
