// Package app wires the issuer: configuration, keys, store, token endpoint,
// discovery documents, health and metrics. It is the one place that
// constructs everything; cmd/issuer and the one-process demo both use it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/discovery"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

// serviceName names the issuer in logs, traces and metrics.
const serviceName = "issuer"

// closeTimeout bounds Close.
const closeTimeout = 5 * time.Second

// App is a configured issuer, ready to serve.
type App struct {
	handler http.Handler
	tel     *telemetry.Telemetry
	pool    *pgxpool.Pool
}

// New builds the issuer for cfg: it loads (or, with Demo, generates) the
// keys, opens and migrates the store, loads the demo seed when asked, and
// assembles the HTTP handler. It refuses to start outside demo mode without
// a signing key and a client-secret key.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("issuer: invalid configuration: %w", err)
	}
	key, err := loadSigningKey(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	hasher, err := loadHasher(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	tel, err := telemetry.New(ctx, telemetry.Config{
		ServiceName:  serviceName,
		Exporter:     cfg.OTelExporter,
		OTLPEndpoint: cfg.OTelEndpoint,
		OTLPInsecure: cfg.OTelInsecure,
	}, os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a := &App{tel: tel}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()

	st, err := a.openStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	if cfg.Demo {
		if err := seed(ctx, st, hasher, logger); err != nil {
			return nil, err
		}
	}
	endpoint, err := token.NewEndpoint(token.Config{
		Issuer:              cfg.Issuer,
		AccessTokenLifespan: cfg.AccessTokenLifespan,
		Key:                 key,
		Hasher:              hasher,
		Store:               st,
		Logger:              logger,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	jwks, err := key.JWKS()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	metadata, err := discovery.MetadataHandler(discovery.Metadata{
		Issuer:                            cfg.Issuer,
		TokenEndpoint:                     cfg.Issuer + token.Path,
		JWKSURI:                           cfg.Issuer + discovery.JWKSPath,
		ScopesSupported:                   cfg.ScopesSupported,
		ResponseTypesSupported:            []string{}, // no authorization endpoint yet
		GrantTypesSupported:               token.GrantTypes(),
		TokenEndpointAuthMethodsSupported: token.AuthMethods(),
	}, cfg.DiscoveryMaxAge)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}

	mux := http.NewServeMux()
	// Every method reaches the endpoint, which answers non-POST requests
	// with an RFC 6749 error rather than the mux's plain-text 405.
	mux.Handle(token.Path, endpoint)
	mux.Handle("GET "+discovery.JWKSPath, discovery.Document(jwks, cfg.DiscoveryMaxAge))
	mux.Handle("GET "+discovery.OpenIDConfigurationPath, metadata)
	mux.Handle("GET "+discovery.AuthorizationServerPath, metadata)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{"store": st.Ping})
	a.handler = tel.Middleware(serviceName, mux)
	return a, nil
}

// Handler returns the issuer's HTTP handler: OAuth endpoints, discovery,
// /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close releases the store connection and flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if a.pool != nil {
		a.pool.Close()
	}
	if err := a.tel.Shutdown(ctx); err != nil {
		return fmt.Errorf("issuer: close: %w", err)
	}
	return nil
}

// Run serves the issuer on cfg.HTTPAddr until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	return serve.ListenAndServe(ctx, logger, serviceName, cfg.HTTPAddr, a.Handler())
}

func loadSigningKey(ctx context.Context, cfg Config, logger *slog.Logger) (*signingkey.Key, error) {
	if cfg.SigningKeyFile != "" {
		key, err := signingkey.Load(cfg.SigningKeyFile)
		if err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		logger.InfoContext(ctx, "signing key loaded", slog.String("kid", key.KeyID()), slog.String("alg", signingkey.Algorithm))
		return key, nil
	}
	key, err := signingkey.Generate()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	logger.WarnContext(ctx, "DEV ONLY: no -signing-key-file, using an ephemeral signing key; its tokens stop verifying when the process exits",
		slog.String("kid", key.KeyID()))
	return key, nil
}

func loadHasher(ctx context.Context, cfg Config, logger *slog.Logger) (*clientsecret.Hasher, error) {
	var secretKey []byte
	if cfg.ClientSecretKeyFile != "" {
		k, err := clientsecret.LoadKey(cfg.ClientSecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		secretKey = k
	} else {
		secretKey = clientsecret.GenerateKey()
		logger.WarnContext(ctx, "DEV ONLY: no -client-secret-key-file, using a random client-secret key; stored secret hashes are useless after a restart")
	}
	hasher, err := clientsecret.NewHasher(secretKey)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return hasher, nil
}

func (a *App) openStore(ctx context.Context, cfg Config, logger *slog.Logger) (store.Store, error) {
	if cfg.Store == StoreMemory {
		logger.WarnContext(ctx, "DEV ONLY: memory store; clients and token sessions are lost on restart")
		return memory.New(), nil
	}
	pool, err := libpostgres.Open(ctx, cfg.DatabaseURL, libpostgres.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.pool = pool
	if err := postgres.Migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return postgres.New(pool), nil
}

// seed upserts the demo clients; running it on every start is idempotent.
func seed(ctx context.Context, st store.ClientStore, hasher *clientsecret.Hasher, logger *slog.Logger) error {
	clients, err := demoseed.Clients(ctx, hasher)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	ids := make([]string, 0, len(clients))
	for _, c := range clients {
		if err := st.UpsertClient(ctx, c); err != nil {
			return fmt.Errorf("issuer: demo seed: %w", err)
		}
		ids = append(ids, c.ID)
	}
	logger.WarnContext(ctx, "DEV ONLY: demo seed loaded; these clients have published secrets", slog.Any("clients", ids))
	return nil
}
