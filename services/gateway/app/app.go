// Package app wires the gateway: the one place that constructs its parts.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// Config is the gateway's configuration.
type Config struct {
	HTTPAddr     string
	Issuer       string
	JWKSURL      string
	Audience     string
	PDPURL       string
	PDPTimeout   time.Duration
	InvoiceURL   string
	MaxBodyBytes int64
	// Rate limits (token buckets): per source address and per client.
	SourceRate, ClientRate   float64
	SourceBurst, ClientBurst int
	Telemetry                telemetry.Config
}

// RegisterFlags binds the configuration to fs (and, through envflag, to
// GATEHOUSE_GATEWAY_* variables).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8000", "listen address")
	fs.StringVar(&c.Issuer, "issuer", "http://localhost:8080", "required iss of access tokens")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "issuer JWKS URL (default <issuer>/.well-known/jwks.json)")
	fs.StringVar(&c.Audience, "audience", "gatehouse-api", "required aud of access tokens")
	fs.StringVar(&c.PDPURL, "pdp-url", "http://localhost:8081", "PDP base URL")
	fs.DurationVar(&c.PDPTimeout, "pdp-timeout", 250*time.Millisecond, "deadline of one PDP decision; past it the request is denied")
	fs.StringVar(&c.InvoiceURL, "invoice-url", "http://localhost:8091", "invoice service base URL")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "largest request body accepted")
	fs.Float64Var(&c.SourceRate, "rate-limit-source", 50, "requests per second per source address (0: unlimited)")
	fs.IntVar(&c.SourceBurst, "rate-limit-source-burst", 100, "burst per source address")
	fs.Float64Var(&c.ClientRate, "rate-limit-client", 100, "requests per second per client_id (0: unlimited)")
	fs.IntVar(&c.ClientBurst, "rate-limit-client-burst", 200, "burst per client_id")
	c.Telemetry.RegisterFlags(fs)
}

// App is a wired gateway.
type App struct {
	cfg     Config
	tel     *telemetry.Telemetry
	handler http.Handler
}

// New builds the gateway from cfg.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*App, error) {
	if cfg.Telemetry.ServiceName == "" {
		cfg.Telemetry.ServiceName = "gateway"
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/jwks.json"
	}
	upstreams := map[string]*url.URL{}
	for name, raw := range map[string]string{route.UpstreamInvoice: cfg.InvoiceURL, "pdp": cfg.PDPURL, "jwks": cfg.JWKSURL} {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: %s URL %q must be an absolute http(s) URL", name, raw)
		}
		if name == route.UpstreamInvoice {
			upstreams[name] = u
		}
	}
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
	if err != nil {
		return nil, err
	}
	a, err := build(cfg, logger, tel, upstreams)
	if err != nil {
		return nil, errors.Join(err, tel.Shutdown(ctx))
	}
	return a, nil
}

func build(cfg Config, logger *slog.Logger, tel *telemetry.Telemetry, upstreams map[string]*url.URL) (*App, error) {
	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{
		URL:    cfg.JWKSURL,
		Client: &http.Client{Timeout: 5 * time.Second, Transport: tel.Transport(http.DefaultTransport)},
	})
	if err != nil {
		return nil, err
	}
	verifier, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: cfg.Issuer, Audience: cfg.Audience, Keys: jwks})
	if err != nil {
		return nil, err
	}
	otelInterceptor, err := tel.ConnectInterceptor()
	if err != nil {
		return nil, err
	}
	pdpHTTP := &http.Client{Transport: tel.Transport(h2cTransport())}
	pdpClient := authzv1connect.NewDecisionServiceClient(pdpHTTP, cfg.PDPURL, connect.WithInterceptors(otelInterceptor))
	table, err := route.NewTable(route.Default(), []string{route.UpstreamInvoice})
	if err != nil {
		return nil, err
	}
	edgeHandler, err := edge.NewHandler(edge.Config{
		Routes:       table,
		Verifier:     verifier,
		PDP:          enforce.NewClient(pdpClient, cfg.PDPTimeout),
		Upstreams:    upstreams,
		Transport:    tel.Transport(h2cTransport()),
		MaxBodyBytes: cfg.MaxBodyBytes,
		SourceLimit:  ratelimit.New(ratelimit.Config{Rate: cfg.SourceRate, Burst: cfg.SourceBurst}),
		ClientLimit:  ratelimit.New(ratelimit.Config{Rate: cfg.ClientRate, Burst: cfg.ClientBurst}),
		Logger:       logger,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{
		"jwks":    jwks.Ready,
		"pdp":     serve.HTTPReady(pdpHTTP, strings.TrimSuffix(cfg.PDPURL, "/")+"/readyz"),
		"invoice": serve.HTTPReady(pdpHTTP, strings.TrimSuffix(cfg.InvoiceURL, "/")+"/readyz"),
	})
	mux.Handle("GET /metrics", tel.MetricsHandler())
	mux.Handle("/", tel.EdgeMiddleware("gateway", edgeHandler))
	return &App{cfg: cfg, tel: tel, handler: mux}, nil
}

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

// Close flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.tel.Shutdown(ctx)
}

// Run builds the gateway and serves it on cfg.HTTPAddr until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return errors.Join(serve.ListenAndServe(ctx, logger, "gateway", cfg.HTTPAddr, a.Handler()), a.Close())
}
