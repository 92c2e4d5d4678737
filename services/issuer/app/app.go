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
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
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
	keys    *signingkey.Ring
	// stopKeys ends the key maintenance loop; keysDone closes when it has.
	stopKeys context.CancelFunc
	keysDone chan struct{}
}

// New builds the issuer for cfg: it loads (or, with Demo, generates) the
// key-encryption and client-secret keys, opens and migrates the store,
// loads the signing keys (creating the first one when there is none) and
// starts their rotation loop, loads the demo seed when asked, and assembles
// the HTTP handler. It refuses to start outside demo mode without a
// key-encryption key and a client-secret key, or when a stored signing key
// does not decrypt.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("issuer: invalid configuration: %w", err)
	}
	kek, err := loadKEK(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	hasher, err := loadHasher(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	cfg.Telemetry.ServiceName = serviceName
	tel, err := telemetry.New(ctx, cfg.Telemetry, os.Stdout)
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
	if err := a.startKeys(ctx, cfg, kek, logger); err != nil {
		return nil, err
	}
	if cfg.Demo {
		if err := seed(ctx, st, hasher, logger); err != nil {
			return nil, err
		}
		if err := demoseed.SeedUsers(ctx, a.userStore(cfg), user.DefaultParams(), notAClientID(st)); err != nil {
			return nil, fmt.Errorf("issuer: demo users: %w", err)
		}
	}
	tokenCfg := token.Config{
		Issuer:              cfg.Issuer,
		AccessTokenLifespan: cfg.AccessTokenLifespan,
		MaxTokenLifetime:    cfg.MaxTokenLifetime,
		Key:                 a.keys,
		Hasher:              hasher,
		Store:               st,
		Logger:              logger,
	}
	endpoint, err := token.NewEndpoint(tokenCfg)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	introspection, err := token.NewIntrospectionEndpoint(tokenCfg)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	revocation, err := token.NewRevocationEndpoint(tokenCfg)
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
		IntrospectionEndpoint:             cfg.Issuer + token.IntrospectionPath,
		IntrospectionEndpointAuthMethodsSupported: token.IntrospectionAuthMethods(),
		RevocationEndpoint:                        cfg.Issuer + token.RevocationPath,
		RevocationEndpointAuthMethodsSupported:    token.RevocationAuthMethods(),
	}, cfg.DiscoveryMaxAge)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}

	mux := http.NewServeMux()
	// Every method reaches the endpoint, which answers non-POST requests
	// with an RFC 6749 error rather than the mux's plain-text 405.
	mux.Handle(token.Path, endpoint)
	mux.Handle(token.IntrospectionPath, introspection)
	mux.Handle(token.RevocationPath, revocation)
	mux.Handle("GET "+discovery.JWKSPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The current key set on every request: rotation shows at once.
		discovery.Document(a.keys.JWKS(), cfg.DiscoveryMaxAge).ServeHTTP(w, r)
	}))
	mux.Handle("GET "+discovery.OpenIDConfigurationPath, metadata)
	mux.Handle("GET "+discovery.AuthorizationServerPath, metadata)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{"store": st.Ping, "signing_keys": a.keys.Ready})
	a.handler = tel.Middleware(serviceName, mux)
	return a, nil
}

// Handler returns the issuer's HTTP handler: OAuth endpoints, discovery,
// /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close stops the key rotation loop, releases the store connection and
// flushes telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if a.stopKeys != nil {
		a.stopKeys()
		<-a.keysDone
	}
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

func loadKEK(ctx context.Context, cfg Config, logger *slog.Logger) (*signingkey.KEK, error) {
	if cfg.KeyEncryptionKeyFile != "" {
		kek, err := signingkey.LoadKEK(cfg.KeyEncryptionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		return kek, nil
	}
	kek, err := signingkey.GenerateKEK()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	logger.WarnContext(ctx, "DEV ONLY: no -key-encryption-key-file, using an ephemeral key-encryption key; signing keys stored by earlier runs cannot be decrypted, so they are retired (still published until they expire) and a new one is created")
	return kek, nil
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

// userStore returns the user store on the same backend as the other stores.
// Users are seeded (with -demo) but not yet used: login arrives with the
// authorization-code flow.
func (a *App) userStore(cfg Config) store.UserStore {
	if cfg.Store == StoreMemory {
		return memory.NewUserStore()
	}
	return postgres.NewUserStore(a.pool)
}

// notAClientID refuses a username that is also a client id: policies tell a
// client acting for itself by subject == client_id, so the two namespaces
// must not meet.
func notAClientID(clients store.ClientStore) user.UsernameCheck {
	return func(ctx context.Context, username string) error {
		_, err := clients.GetClient(ctx, username)
		switch {
		case err == nil:
			return fmt.Errorf("%q: %w", username, user.ErrUsernameReserved)
		case errors.Is(err, store.ErrNotFound):
			return nil
		default:
			return err
		}
	}
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
