// Package app wires the support service: configuration, store, token
// verification, the PDP client, the issuer and invoice clients and the
// Connect handler, health and metrics. It is the one place that constructs
// everything; cmd/support and the one-process demo both use it.
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
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
	"github.com/gatehouse/gatehouse/services/support/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/support/internal/invoices"
	"github.com/gatehouse/gatehouse/services/support/internal/issuer"
	"github.com/gatehouse/gatehouse/services/support/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/support/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
	"github.com/gatehouse/gatehouse/services/support/internal/supportrpc"
)

// serviceName names the service in logs, traces and metrics.
const serviceName = "support"

// Bounds of the service's I/O.
const (
	// maxRequestBytes bounds one Connect request message; support requests
	// are well under a kilobyte.
	maxRequestBytes = 64 << 10
	// jwksTimeout bounds one fetch of the issuer's keys.
	jwksTimeout = 5 * time.Second
	// closeTimeout bounds Close.
	closeTimeout = 5 * time.Second
)

// App is a configured support service, ready to serve.
type App struct {
	handler http.Handler
	tel     *telemetry.Telemetry
	pool    *pgxpool.Pool
}

// New builds the support service for cfg: it opens (and migrates) the
// store, seeds the demo ticket when asked, and assembles the HTTP handler.
// Nothing reaches the issuer, the PDP or the invoice service yet; /readyz
// reports whether the store and the issuer's keys answer.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("support: invalid configuration: %w", err)
	}
	cfg.Telemetry.ServiceName = serviceName
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
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
			return nil, fmt.Errorf("support: %w", err)
		}
		logger.InfoContext(ctx, "demo ticket seeded", slog.String("ticket_id", demoseed.TicketID))
	}

	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{
		URL:                cfg.JWKSURL,
		Client:             &http.Client{Timeout: jwksTimeout, Transport: tel.Transport(http.DefaultTransport)},
		MaxAge:             cfg.JWKSMaxAge,
		MinRefetchInterval: cfg.JWKSMinRefetchInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	verifier, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: cfg.Issuer, Audience: cfg.Audience, Keys: jwks})
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	issuerClient, err := issuer.New(issuer.Config{
		BaseURL:    cfg.IssuerURL,
		HTTPClient: &http.Client{Transport: tel.Transport(http.DefaultTransport)},
		Timeout:    cfg.IssuerTimeout,
		Console:    issuer.Credentials{ID: cfg.IssuerClientID, Secret: cfg.IssuerClientSecret},
		Export:     issuer.Credentials{ID: cfg.ExportClientID, Secret: cfg.ExportClientSecret},
		Verifier:   verifier,
	})
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	otelInterceptor, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	h2c := &http.Client{Transport: tel.Transport(h2cTransport())}
	pdp := authzv1connect.NewDecisionServiceClient(h2c, cfg.PDPURL, connect.WithInterceptors(otelInterceptor))
	invoiceRPC := invoicev1connect.NewInvoiceServiceClient(h2c, cfg.InvoiceURL, connect.WithInterceptors(otelInterceptor))
	svc := support.NewService(store, supportrpc.NewAuthorizer(enforce.NewClient(pdp, cfg.PDPTimeout), logger),
		issuerClient, invoices.New(invoiceRPC, cfg.InvoiceTimeout), logger)

	if !cfg.RequireGatewayHeaders {
		logger.WarnContext(ctx, "identity headers are optional: requests that bypass the gateway are served (tokens are still verified)")
	}
	path, rpc := supportv1connect.NewSupportServiceHandler(
		supportrpc.NewHandler(svc, logger),
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

// Handler returns the service's HTTP handler: SupportService (Connect,
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
		return fmt.Errorf("support: close: %w", err)
	}
	return nil
}

// Run serves the support service on cfg.HTTPAddr until ctx is done. The
// client secrets are read from their files or the environment first.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	if err := cfg.LoadSecrets(os.LookupEnv); err != nil {
		return err
	}
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	return serve.ListenAndServe(ctx, logger, serviceName, cfg.HTTPAddr, a.Handler())
}

func (a *App) openStore(ctx context.Context, cfg Config, logger *slog.Logger) (support.Store, error) {
	if cfg.Store == StoreMemory {
		logger.WarnContext(ctx, "DEV ONLY: memory store; tickets and sessions are lost on restart")
		return memory.New(), nil
	}
	pool, err := libpostgres.Open(ctx, cfg.DatabaseURL, libpostgres.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	a.pool = pool
	if err := postgres.Migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("support: %w", err)
	}
	return postgres.New(pool), nil
}

// h2cTransport speaks HTTP/2 to the PDP and the invoice service: cleartext
// (h2c, which every Gatehouse server accepts; see libs/serve) for http://
// URLs, over TLS for https:// ones. One multiplexed connection each
// instead of an HTTP/1.1 pool.
func h2cTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = &protocols
	return t
}
