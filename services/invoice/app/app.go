// Package app wires the invoice service: configuration, store, token
// verification, the PDP client and the Connect handler, health and metrics.
// It is the one place that constructs everything; cmd/invoice and the
// one-process demo both use it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/invoice/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoicerpc"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/postgres"
)

// serviceName names the service in logs, traces and metrics.
const serviceName = "invoice"

// Bounds of the service's I/O.
const (
	// maxRequestBytes bounds one Connect request message; invoice requests
	// are a few hundred bytes.
	maxRequestBytes = 64 << 10
	// jwksTimeout bounds one fetch of the issuer's keys.
	jwksTimeout = 5 * time.Second
	// closeTimeout bounds Close.
	closeTimeout = 5 * time.Second
)

// App is a configured invoice service, ready to serve.
type App struct {
	handler http.Handler
	tel     *telemetry.Telemetry
	pool    *pgxpool.Pool
}

// New builds the invoice service for cfg: it opens (and migrates) the
// store, seeds the demo invoices when asked, and assembles the HTTP handler.
// Nothing reaches the issuer or the PDP yet; /readyz reports whether they
// answer.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invoice: invalid configuration: %w", err)
	}
	cfg.Telemetry.ServiceName = serviceName
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	a := &App{tel: tel}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()

	store, err := a.openStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	if cfg.Demo {
		if err := demoseed.Seed(ctx, store); err != nil {
			return nil, fmt.Errorf("invoice: %w", err)
		}
		logger.InfoContext(ctx, "demo invoices seeded")
	}

	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{
		URL:                cfg.JWKSURL,
		Client:             &http.Client{Timeout: jwksTimeout, Transport: tel.Transport(http.DefaultTransport)},
		MaxAge:             cfg.JWKSMaxAge,
		MinRefetchInterval: cfg.JWKSMinRefetchInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	verifier, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: cfg.Issuer, Audience: cfg.Audience, Keys: jwks})
	if err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	otelInterceptor, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	pdp := authzv1connect.NewDecisionServiceClient(
		&http.Client{Transport: tel.Transport(h2cTransport())}, cfg.PDPURL,
		connect.WithInterceptors(otelInterceptor))
	svc := invoice.NewService(store, invoicerpc.NewAuthorizer(enforce.NewClient(pdp, cfg.PDPTimeout), logger))

	if !cfg.RequireGatewayHeaders {
		logger.WarnContext(ctx, "identity headers are optional: requests that bypass the gateway are served (tokens are still verified)")
	}
	path, rpc := invoicev1connect.NewInvoiceServiceHandler(
		invoicerpc.NewHandler(svc, logger),
		connect.WithInterceptors(otelInterceptor, telemetry.AccessLog(logger), enforce.NewAuthenticator(verifier, logger, cfg.RequireGatewayHeaders)),
		connect.WithReadMaxBytes(maxRequestBytes),
	)
	mux := http.NewServeMux()
	mux.Handle(path, rpc)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{"store": store.Ping, "jwks": jwks.Ready})
	a.handler = mux
	return a, nil
}

// Handler returns the service's HTTP handler: InvoiceService (Connect,
// gRPC, gRPC-Web), /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close releases the store connection and flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if a.pool != nil {
		a.pool.Close()
	}
	if err := a.tel.Shutdown(ctx); err != nil {
		return fmt.Errorf("invoice: close: %w", err)
	}
	return nil
}

// Run serves the invoice service on cfg.HTTPAddr until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	return serve.ListenAndServe(ctx, logger, serviceName, cfg.HTTPAddr, a.Handler())
}

func (a *App) openStore(ctx context.Context, cfg Config, logger *slog.Logger) (invoice.Store, error) {
	if cfg.Store == StoreMemory {
		logger.WarnContext(ctx, "DEV ONLY: memory store; invoices are lost on restart")
		return memory.New(), nil
	}
	pool, err := libpostgres.Open(ctx, cfg.DatabaseURL, libpostgres.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	a.pool = pool
	if err := postgres.Migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("invoice: %w", err)
	}
	return postgres.New(pool), nil
}

// h2cTransport speaks HTTP/2 to the PDP: cleartext (h2c, which every
// Gatehouse server accepts; see libs/serve) for http:// URLs, over TLS for
// https:// ones. One multiplexed connection instead of an HTTP/1.1 pool.
func h2cTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = &protocols
	return t
}
