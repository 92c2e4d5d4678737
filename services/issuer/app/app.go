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
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/serve"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/authorize"
	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/discovery"
	"github.com/gatehouse/gatehouse/services/issuer/internal/exchange"
	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation/feed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/scopecatalog"
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
	// recorder writes audit events; Close drains it.
	recorder *audit.Recorder
	// feed serves the revocation feed; Close ends its streams.
	feed *feed.Handler
	// housekeeping prunes expired records; completion completes
	// unfinished revocations.
	housekeeping, completion *loop
	// stopFeed ends the revocation log's Postgres listener; feedDone
	// closes when it has.
	stopFeed context.CancelFunc
	feedDone chan struct{}
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
	kekBytes, err := loadKEK(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	kek, err := signingkey.NewKEK(kekBytes)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
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

	st, err := a.openStores(ctx, cfg, kekBytes, logger)
	if err != nil {
		return nil, err
	}
	recorder, err := audit.NewRecorder(st.audit, audit.RecorderOptions{Meter: tel.MeterProvider().Meter(serviceName), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.recorder = recorder
	ev := &events{revocations: st.revocations, audit: recorder, logger: logger, maxTokenLifetime: cfg.MaxTokenLifetime}
	if err := a.startKeys(ctx, cfg, kek, logger, ev.keyCreated("schedule")); err != nil {
		return nil, err
	}
	if cfg.Demo {
		if err := seed(ctx, st.main, hasher, logger); err != nil {
			return nil, err
		}
		if err := demoseed.SeedUsers(ctx, st.users, user.DefaultParams(), notAClientID(st.main)); err != nil {
			return nil, fmt.Errorf("issuer: demo users: %w", err)
		}
	}
	catalog, err := scopecatalog.Load(cfg.ScopeCatalog)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	grants, err := a.tokenExchange(ctx, cfg, st, ev, logger)
	if err != nil {
		return nil, err
	}
	provider, err := token.NewProvider(token.Config{
		Issuer:                cfg.Issuer,
		AccessTokenLifespan:   cfg.AccessTokenLifespan,
		RefreshTokenLifespan:  cfg.RefreshTokenLifespan,
		AuthorizeCodeLifespan: cfg.AuthorizationCodeLifespan,
		MaxTokenLifetime:      cfg.MaxTokenLifetime,
		Key:                   a.keys,
		Hasher:                hasher,
		TokenHMACKey:          hasher.DeriveKey("token-hmac"),
		Store:                 st.main,
		Observer:              ev,
		ConsentActive: func(ctx context.Context, id string) (bool, error) {
			c, err := st.consents.GetConsent(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			return c.ActiveAt(time.Now()), nil
		},
		Grants: grants,
		Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	authenticator, err := authn.New(authn.Config{Users: st.users, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	pages, err := interaction.New(interaction.Config{
		Sessions:      st.sessions,
		Interactions:  st.interactions,
		Consents:      st.consents,
		Authenticator: authenticator,
		Catalog:       catalog,
		ClientName: func(ctx context.Context, id string) (string, error) {
			c, err := st.main.GetClient(ctx, id)
			if err != nil {
				return "", err
			}
			return c.Name(), nil
		},
		OnConsentWithdrawn: func(ctx context.Context, c consent.Consent) error {
			return ev.consentWithdrawn(ctx, st.main, c)
		},
		OnSignedOut: func(ctx context.Context, s browsersession.Session) error {
			return ev.signedOut(ctx, st.main, s)
		},
		Audit:         ev.browserAudit,
		Logger:        logger,
		SecureCookies: strings.HasPrefix(cfg.Issuer, "https://"),
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	authorization := authorize.New(provider, pages, st.users, logger)
	feedHandler, err := feed.NewHandler(feed.Config{
		Log: st.revocations,
		Authorize: func(ctx context.Context, h http.Header) (string, error) {
			id, err := provider.AuthenticateBasic(ctx, h, token.ScopeRevocationsRead)
			switch {
			case errors.Is(err, token.ErrClientUnauthenticated):
				return "", fmt.Errorf("%w: %w", feed.ErrUnauthenticated, err)
			case errors.Is(err, token.ErrClientForbidden):
				return "", fmt.Errorf("%w: %w", feed.ErrForbidden, err)
			}
			return id, err
		},
		Logger: logger,
		Meter:  tel.MeterProvider().Meter(serviceName),
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.feed = feedHandler
	a.startHousekeeping(ctx, st, logger)
	a.startRevocationCompletion(ctx, st.main, ev, logger, revocationCompletionInterval)
	metadata, err := discovery.MetadataHandler(discovery.Metadata{
		Issuer:                            cfg.Issuer,
		AuthorizationEndpoint:             cfg.Issuer + authorize.Path,
		TokenEndpoint:                     cfg.Issuer + token.Path,
		UserinfoEndpoint:                  cfg.Issuer + token.UserinfoPath,
		JWKSURI:                           cfg.Issuer + discovery.JWKSPath,
		ScopesSupported:                   cfg.ScopesSupported,
		ResponseTypesSupported:            []string{"code"},
		ResponseModesSupported:            []string{"query"},
		GrantTypesSupported:               provider.GrantTypes(),
		TokenEndpointAuthMethodsSupported: token.AuthMethods(),
		TokenEndpointAuthSigningAlgValuesSupported: []string{client.AssertionSigningAlgorithm},
		CodeChallengeMethodsSupported:              []string{"S256"},
		SubjectTypesSupported:                      []string{"public"},
		IDTokenSigningAlgValuesSupported:           []string{signingkey.Algorithm},
		ClaimsSupported:                            []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "at_hash", "tenant", "preferred_username"},
		ACRValuesSupported:                         authorize.ACRValues(),
		PromptValuesSupported:                      authorize.PromptValues(),
		IntrospectionEndpoint:                      cfg.Issuer + token.IntrospectionPath,
		IntrospectionEndpointAuthMethodsSupported:  token.IntrospectionAuthMethods(),
		RevocationEndpoint:                         cfg.Issuer + token.RevocationPath,
		RevocationEndpointAuthMethodsSupported:     token.RevocationAuthMethods(),
		RevocationFeedEndpoint:                     cfg.Issuer,
	}, cfg.DiscoveryMaxAge)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}

	mux := http.NewServeMux()
	// Every method reaches the endpoint, which answers non-POST requests
	// with an RFC 6749 error rather than the mux's plain-text 405.
	mux.Handle(token.Path, token.NewEndpoint(provider))
	mux.Handle(token.IntrospectionPath, token.NewIntrospectionEndpoint(provider))
	mux.Handle(token.RevocationPath, token.NewRevocationEndpoint(provider))
	mux.Handle(token.UserinfoPath, token.NewUserinfoEndpoint(provider))
	authorization.Mount(mux)
	pages.Mount(mux)
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(feedHandler))
	(&adminKeys{app: a, provider: provider, logger: logger}).mount(mux)
	mux.Handle("GET "+discovery.JWKSPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The current key set on every request: rotation shows at once.
		discovery.Document(a.keys.JWKS(), cfg.DiscoveryMaxAge).ServeHTTP(w, r)
	}))
	mux.Handle("GET "+discovery.OpenIDConfigurationPath, metadata)
	mux.Handle("GET "+discovery.AuthorizationServerPath, metadata)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{"store": st.main.Ping, "signing_keys": a.keys.Ready})
	a.handler = tel.Middleware(serviceName, mux)
	return a, nil
}

// tokenExchange returns the token-exchange grant when a PDP is configured
// to decide exchanges, and no grant otherwise: without a PDP no exchange
// could be decided, so the grant is neither served nor advertised.
func (a *App) tokenExchange(ctx context.Context, cfg Config, st stores, ev *events, logger *slog.Logger) ([]token.Grant, error) {
	if cfg.PDPURL == "" {
		logger.InfoContext(ctx, "no -pdp-url: the token-exchange grant is not served")
		return nil, nil
	}
	otelInterceptor, err := a.tel.ConnectInterceptor()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	pdp := authzv1connect.NewDecisionServiceClient(
		&http.Client{Transport: a.tel.Transport(h2cTransport())}, cfg.PDPURL,
		connect.WithInterceptors(otelInterceptor))
	grant, err := exchange.New(exchange.Config{
		Issuer:           cfg.Issuer,
		Keys:             a.keys,
		Tokens:           st.main,
		Users:            st.users,
		PDP:              enforce.NewClient(pdp, cfg.PDPTimeout),
		Audit:            ev.record,
		MaxTokenLifetime: cfg.MaxTokenLifetime,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return []token.Grant{grant.TokenGrant()}, nil
}

// h2cTransport speaks HTTP/2 without TLS (the PDP's Connect server) and
// HTTP/1.1.
func h2cTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = &protocols
	return t
}

// Handler returns the issuer's HTTP handler: OAuth endpoints, discovery,
// /healthz, /readyz and /metrics.
func (a *App) Handler() http.Handler { return a.handler }

// Close stops the background loops (key rotation, pruning, completion of
// unfinished revocations), releases the store connection and flushes
// telemetry.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if a.feed != nil {
		a.feed.Close()
	}
	a.housekeeping.Stop()
	a.completion.Stop()
	if a.stopKeys != nil {
		a.stopKeys()
		<-a.keysDone
	}
	if a.stopFeed != nil {
		a.stopFeed()
		<-a.feedDone
	}
	var errs []error
	if a.recorder != nil {
		// Every audit event queued so far reaches the store before the
		// pool closes.
		if err := a.recorder.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.pool != nil {
		a.pool.Close()
	}
	if err := a.tel.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
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
	// Feed streams never end on their own: end them when the server begins
	// its graceful shutdown, or it would wait for them.
	stop := context.AfterFunc(ctx, a.feed.Close)
	defer stop()
	return serve.ListenAndServe(ctx, logger, serviceName, cfg.HTTPAddr, a.Handler())
}

// loadKEK returns the key-encryption key's bytes: from the configured file,
// or (demo only) random ones. The KEK seals signing keys, and a key derived
// from it seals TOTP secrets.
func loadKEK(ctx context.Context, cfg Config, logger *slog.Logger) ([]byte, error) {
	if cfg.KeyEncryptionKeyFile != "" {
		kek, err := signingkey.ReadKEKFile(cfg.KeyEncryptionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		return kek, nil
	}
	kek := signingkey.RandomKEKBytes()
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

// housekeepingInterval is how often expired records are pruned.
const housekeepingInterval = time.Minute

// revocationLeeway keeps an expired revocation event in the feed this much
// longer, for gateways whose clocks run behind.
const revocationLeeway = 5 * time.Minute

// startHousekeeping prunes expired grant records, token sessions, used
// assertion jtis and revocation events every housekeepingInterval, until
// Close.
func (a *App) startHousekeeping(ctx context.Context, st stores, logger *slog.Logger) {
	a.housekeeping = runEvery(ctx, housekeepingInterval, func(ctx context.Context) {
		now := time.Now()
		grants, err := st.main.DeleteExpiredGrants(ctx, now)
		if err != nil {
			logger.ErrorContext(ctx, "pruning expired grants failed", slog.Any("error", err))
		}
		events, err := st.revocations.DeleteExpired(ctx, now.Add(-revocationLeeway))
		if err != nil {
			logger.ErrorContext(ctx, "pruning expired revocation events failed", slog.Any("error", err))
		}
		if grants+int(events) > 0 {
			logger.DebugContext(ctx, "expired records pruned", slog.Int("grants", grants), slog.Int64("revocation_events", events))
		}
	})
}

// loop is a background loop of the issuer's (see runEvery).
type loop struct {
	stop context.CancelFunc
	done chan struct{}
}

// runEvery runs round every interval, on a context that outlives ctx's
// cancellation and ends with Stop.
func runEvery(ctx context.Context, interval time.Duration, round func(ctx context.Context)) *loop {
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l := &loop{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-ticker.C:
			}
			round(loopCtx)
		}
	}()
	return l
}

// Stop ends the loop and waits for its round in progress; a nil loop (one
// never started) is fine.
func (l *loop) Stop() {
	if l == nil {
		return
	}
	l.stop()
	<-l.done
}

// stores are the issuer's stores on one backend.
type stores struct {
	main         token.Store
	users        store.UserStore
	sessions     store.BrowserSessionStore
	interactions store.InteractionStore
	consents     store.ConsentStore
	revocations  store.RevocationLog
	audit        audit.Store
}

// openStores opens the stores on cfg's backend: Postgres (migrated, with
// the audit log's own migrations in the same database), or memory (dev).
func (a *App) openStores(ctx context.Context, cfg Config, kek []byte, logger *slog.Logger) (stores, error) {
	if cfg.Store == StoreMemory {
		logger.WarnContext(ctx, "DEV ONLY: memory store; clients, users, sessions, tokens and audit events are lost on restart")
		return stores{
			main:         memory.New(),
			users:        memory.NewUserStore(),
			sessions:     memory.NewBrowserSessionStore(),
			interactions: memory.NewInteractionStore(),
			consents:     memory.NewConsentStore(),
			revocations:  memory.NewRevocationLog(),
			audit:        auditmemory.New(),
		}, nil
	}
	pool, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return stores{}, err
	}
	a.pool = pool
	sealer, err := postgres.NewKEKSealer(kek)
	if err != nil {
		return stores{}, fmt.Errorf("issuer: %w", err)
	}
	users := postgres.NewUserStore(pool, sealer)
	// TOTP secrets stored in clear by a version before 00008 are sealed now.
	if n, err := users.ResealLegacyTOTPSecrets(ctx); err != nil {
		return stores{}, fmt.Errorf("issuer: %w", err)
	} else if n > 0 {
		logger.InfoContext(ctx, "TOTP secrets sealed under the key-encryption key", slog.Int("users", n))
	}
	revocations := postgres.NewRevocationLog(pool, logger, cfg.RevocationFeedPoll)
	feedCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.stopFeed, a.feedDone = stop, make(chan struct{})
	go func() {
		defer close(a.feedDone)
		revocations.Run(feedCtx)
	}()
	return stores{
		main:         postgres.New(pool),
		users:        users,
		sessions:     postgres.NewBrowserSessionStore(pool),
		interactions: postgres.NewInteractionStore(pool),
		consents:     postgres.NewConsentStore(pool),
		revocations:  revocations,
		audit:        auditpostgres.New(pool),
	}, nil
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
