package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
)

// clockSkew is the clock difference tolerated between replicas and
// verifiers; it is added to how long a retired key stays published.
const clockSkew = time.Minute

// startKeys loads the signing keys from the store (creating the first one
// if there is none) and starts the loop that refreshes and rotates them
// until Close.
func (a *App) startKeys(ctx context.Context, cfg Config, kek *signingkey.KEK, logger *slog.Logger, onCreated func(context.Context, signingkey.Record)) error {
	var ks store.KeyStore = memory.NewKeyStore()
	if a.pool != nil {
		ks = postgres.NewKeyStore(a.pool)
	}
	ring, err := signingkey.NewRing(ringConfig(cfg, ks, kek, cfg.Demo, logger, onCreated))
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if err := ring.Start(ctx); err != nil {
		return fmt.Errorf("issuer: signing keys: %w", err)
	}
	if minLead := cfg.KeyRefreshInterval + cfg.DiscoveryMaxAge; cfg.KeyPublishLead < minLead {
		logger.WarnContext(ctx, "-key-publish-lead is shorter than -key-refresh-interval plus -discovery-max-age: a verifier may meet a new key's tokens before its cached JWKS has the key (it has to refetch)",
			slog.Duration("key_publish_lead", cfg.KeyPublishLead), slog.Duration("recommended_min", minLead))
	}
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.keys, a.stopKeys, a.keysDone = ring, stop, make(chan struct{})
	go func() {
		defer close(a.keysDone)
		ring.Run(loopCtx)
	}()
	return nil
}

// ringConfig is the key ring configuration cfg describes.
func ringConfig(cfg Config, ks store.KeyStore, kek *signingkey.KEK, replaceUndecryptable bool, logger *slog.Logger, onCreated func(context.Context, signingkey.Record)) signingkey.RingConfig {
	return signingkey.RingConfig{
		Store:                ks,
		KEK:                  kek,
		RotationPeriod:       cfg.KeyRotationPeriod,
		PublishLead:          cfg.KeyPublishLead,
		Retention:            cfg.MaxTokenLifetime + cfg.KeyRefreshInterval + clockSkew,
		RefreshInterval:      cfg.KeyRefreshInterval,
		ReplaceUndecryptable: replaceUndecryptable,
		Logger:               logger,
		OnCreated:            onCreated,
	}
}

// RotateSigningKey creates a new signing key now, published at once and
// signing after -key-publish-lead, and returns its kid. It is what
// `issuer keys rotate` does, for a running issuer (tests, the one-process
// demo, a future admin API).
func (a *App) RotateSigningKey(ctx context.Context) (string, error) {
	rec, err := a.keys.Rotate(ctx)
	if err != nil {
		return "", fmt.Errorf("issuer: %w", err)
	}
	return rec.KID, nil
}

// ListKeys writes the signing keys in cfg's database to w as a table: kid,
// state, and when each was created, activates, retires and expires. It
// needs neither the key-encryption key nor a running issuer.
func ListKeys(ctx context.Context, cfg Config, logger *slog.Logger, w io.Writer) error {
	ks, closeStore, err := openKeyStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	recs, err := ks.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	return writeKeyTable(w, recs, time.Now())
}

// RotateKeys creates a new signing key in cfg's database, as the schedule
// would: published at once, signing after -key-publish-lead, the current
// key retiring then. Running issuers pick it up within
// -key-refresh-interval. It needs the key-encryption key the issuers use,
// and refuses to run if a stored key does not decrypt under it.
func RotateKeys(ctx context.Context, cfg Config, logger *slog.Logger, w io.Writer) error {
	if cfg.KeyEncryptionKeyFile == "" {
		return errors.New("issuer: keys rotate: -key-encryption-key-file is required (a key sealed under an ephemeral key could never be used)")
	}
	if errs := cfg.validateKeySchedule(); len(errs) > 0 {
		return fmt.Errorf("issuer: keys rotate: %w", errors.Join(errs...))
	}
	kek, err := signingkey.LoadKEK(cfg.KeyEncryptionKeyFile)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	pool, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	ks := postgres.NewKeyStore(pool)
	// The command's own audit event, written before it returns.
	ev := &events{audit: audit.NewSyncEmitter(auditpostgres.New(pool)), logger: logger}
	ring, err := signingkey.NewRing(ringConfig(cfg, ks, kek, false, logger, ev.keyCreated("cli")))
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	rec, err := ring.Rotate(ctx)
	if err != nil {
		return fmt.Errorf("issuer: keys rotate: %w", err)
	}
	if _, err := fmt.Fprintf(w, "created %s, signing from %s\n\n", rec.KID, rec.ActivateAt.Format(time.RFC3339)); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	recs, err := ks.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	return writeKeyTable(w, recs, time.Now())
}

// openKeyStore opens cfg's Postgres database (migrating it) for the keys
// commands; the memory store has nothing to list or rotate.
func openKeyStore(ctx context.Context, cfg Config, logger *slog.Logger) (store.KeyStore, func(), error) {
	pool, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	return postgres.NewKeyStore(pool), pool.Close, nil
}

// openDatabase opens cfg's Postgres database and applies the issuer's and
// the audit log's migrations: for the server and the commands (keys,
// audit); the memory store has nothing to open.
func openDatabase(ctx context.Context, cfg Config, logger *slog.Logger) (*pgxpool.Pool, error) {
	if cfg.Store != StorePostgres || cfg.DatabaseURL == "" {
		return nil, errors.New("issuer: keys and audit commands need -store postgres and -database-url")
	}
	pool, err := libpostgres.Open(ctx, cfg.DatabaseURL, libpostgres.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if err := postgres.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if err := auditpostgres.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return pool, nil
}

// VerifyAudit walks the audit chain in cfg's database, recomputing every
// event's hash and link, and writes what it found to w. It returns an
// error when an event was changed, removed or inserted.
func VerifyAudit(ctx context.Context, cfg Config, logger *slog.Logger, w io.Writer) error {
	pool, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	report, verr := audit.Verify(ctx, auditpostgres.New(pool))
	if _, err := fmt.Fprintf(w, "checked %d events; last intact: seq %d hash %s\n", report.Checked, report.Verified.Seq, report.Verified.Hash); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if verr != nil {
		_, _ = fmt.Fprintf(w, "TAMPERED: %v\n", verr)
		return fmt.Errorf("issuer: audit verify: %w", verr)
	}
	_, err = fmt.Fprintln(w, "chain intact")
	return err
}

// writeKeyTable writes recs as a plain table with their state at now.
func writeKeyTable(w io.Writer, recs []signingkey.Record, now time.Time) error {
	var b bytes.Buffer // tabwriter over a buffer cannot fail; w can
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "KID\tSTATE\tCREATED\tACTIVATES\tRETIRES\tEXPIRES")
	for i := range recs {
		r := &recs[i]
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.KID, r.State(now),
			formatTime(r.CreatedAt), formatTime(r.ActivateAt), formatTime(r.RetireAt), formatTime(r.ExpireAt))
	}
	_ = tw.Flush()
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
