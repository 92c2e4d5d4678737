package signingkey

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of a Ring.
var (
	// ErrNoSigningKey means no key is active now: the issuer cannot sign.
	ErrNoSigningKey = errors.New("signingkey: no active signing key")
	// ErrUnknownKey means no published key has the kid.
	ErrUnknownKey = errors.New("signingkey: no published key has this kid")
	// ErrRotationRace means another rotation (another replica, the CLI)
	// created the successor of the same key first. A Store returns it when
	// RotateKeys loses that race.
	ErrRotationRace = errors.New("signingkey: another rotation created the successor first")
)

// Store is what a Ring needs from storage; store.KeyStore is one.
type Store interface {
	// ListKeys returns every stored key, newest first.
	ListKeys(ctx context.Context) ([]Record, error)
	// RotateKeys stores next and, atomically with it, makes every other key
	// that would still sign at next.ActivateAt retire then and expire at
	// retiredExpireAt. It fails with ErrRotationRace when a stored key
	// already has next.Predecessor as predecessor.
	RotateKeys(ctx context.Context, next Record, retiredExpireAt time.Time) error
	// DeleteExpiredKeys deletes the keys whose ExpireAt is not after now
	// and returns their kids.
	DeleteExpiredKeys(ctx context.Context, now time.Time) ([]string, error)
}

// RingConfig is what a Ring needs.
type RingConfig struct {
	// Store holds the keys.
	Store Store
	// KEK seals new private keys and opens stored ones.
	KEK *KEK
	// RotationPeriod: Tick creates a new key once the newest is this old.
	RotationPeriod time.Duration
	// PublishLead is how long a new key is published before it signs.
	// Only the very first key (or a replacement when no key can sign)
	// activates at once: there is nothing else to sign with.
	PublishLead time.Duration
	// Retention is how long a retired key stays published: at least the
	// longest token lifetime plus RefreshInterval plus clock skew.
	Retention time.Duration
	// RefreshInterval is how often Run reloads the key set and applies the
	// schedule; it bounds how late a replica sees another one's rotation.
	RefreshInterval time.Duration
	// ReplaceUndecryptable (demo only): keys the KEK cannot open are
	// published from their stored public key, retired and replaced,
	// instead of failing the start.
	ReplaceUndecryptable bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the key audit lines.
	Logger *slog.Logger
	// OnCreated, when set, hears of every key this replica creates, with
	// its predecessor's kid ("" for the first key), once, after the store
	// committed it: the audit log's key.created event (the predecessor's
	// retirement is scheduled by the same rotation). Observed transitions
	// (activated, retired, expired) are only logged, since every replica
	// observes them.
	OnCreated func(ctx context.Context, rec Record)
}

// Ring is the issuer's set of signing keys: it picks the key that signs,
// serves the JWKS, and rotates on schedule. The hot path (SigningKey, JWKS)
// reads an immutable snapshot without locks or I/O; Refresh and rotation
// replace it.
type Ring struct {
	cfg  RingConfig
	snap atomic.Pointer[snapshot]

	// mu serialises this process's refreshes and rotations and guards states.
	mu sync.Mutex
	// states is the last observed state of each published kid, to log
	// transitions.
	states map[string]State
}

// entry is one published key in a snapshot.
type entry struct {
	Record
	// key is the decrypted key; nil when the KEK cannot open it (demo only).
	key *Key
	// pub is the public key; jwk is it as published.
	pub *ecdsa.PublicKey
	jwk []byte
}

// snapshot is the key set as last loaded. Immutable once stored.
type snapshot struct {
	// entries are the keys not expired at loadedAt, newest first.
	entries []entry
	// newest is the kid of the newest stored key, "" when there is none.
	newest        string
	newestCreated time.Time
	loadedAt      time.Time
}

// NewRing returns a Ring for cfg. It does no I/O: call Start.
func NewRing(cfg RingConfig) (*Ring, error) {
	var errs []error
	if cfg.Store == nil || cfg.KEK == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("store, KEK and logger are required"))
	}
	if cfg.PublishLead < 0 {
		errs = append(errs, errors.New("publish lead must not be negative"))
	}
	if cfg.RotationPeriod <= cfg.PublishLead {
		errs = append(errs, fmt.Errorf("rotation period %s must exceed the publish lead %s", cfg.RotationPeriod, cfg.PublishLead))
	}
	if cfg.Retention <= 0 || cfg.RefreshInterval <= 0 {
		errs = append(errs, errors.New("retention and refresh interval must be positive"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("signingkey: ring: %w", errors.Join(errs...))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Ring{cfg: cfg, states: make(map[string]State)}
	r.snap.Store(&snapshot{})
	return r, nil
}

// Start loads the key set and makes sure a key can sign: with no key at
// all, or (ReplaceUndecryptable) none the KEK can open, it creates one that
// is active at once. Without ReplaceUndecryptable a key the KEK cannot open
// is an error.
func (r *Ring) Start(ctx context.Context) error {
	if err := r.Refresh(ctx); err != nil {
		return err
	}
	if _, err := r.SigningKey(ctx); err == nil {
		return nil
	}
	if _, err := r.rotate(ctx); err != nil && !errors.Is(err, ErrRotationRace) {
		return err
	}
	// Lost the race to another replica starting at the same time: its key
	// is as good as ours.
	if err := r.Refresh(ctx); err != nil {
		return err
	}
	_, err := r.SigningKey(ctx)
	return err
}

// SigningKey returns the key that signs now: the newest active one. It is
// the hot path: one atomic load and a scan of a few keys.
func (r *Ring) SigningKey(context.Context) (*Key, error) {
	now := r.cfg.Now()
	snap := r.snap.Load()
	for i := range snap.entries {
		if e := &snap.entries[i]; e.key != nil && e.State(now) == StateActive {
			return e.key, nil
		}
	}
	return nil, ErrNoSigningKey
}

// VerificationKey returns the public key named kid while it is published
// (not expired), else ErrUnknownKey.
func (r *Ring) VerificationKey(_ context.Context, kid string) (*ecdsa.PublicKey, error) {
	now := r.cfg.Now()
	snap := r.snap.Load()
	for i := range snap.entries {
		if e := &snap.entries[i]; e.KID == kid && e.State(now) != StateExpired {
			return e.pub, nil
		}
	}
	return nil, ErrUnknownKey
}

// Records returns the loaded keys' records (no key material), newest
// first, as of the last refresh.
func (r *Ring) Records() []Record {
	snap := r.snap.Load()
	out := make([]Record, 0, len(snap.entries))
	for i := range snap.entries {
		rec := snap.entries[i].Record
		rec.Sealed = nil
		out = append(out, rec)
	}
	return out
}

// JWKS returns the JSON Web Key Set of every key not expired now: pending,
// active and retired keys, public halves only.
func (r *Ring) JWKS() []byte {
	now := r.cfg.Now()
	snap := r.snap.Load()
	var b bytes.Buffer
	b.WriteString(`{"keys":[`)
	first := true
	for i := range snap.entries {
		if e := &snap.entries[i]; e.State(now) != StateExpired {
			if !first {
				b.WriteByte(',')
			}
			first = false
			b.Write(e.jwk)
		}
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// Ready reports whether the ring can sign and its key set is fresh (loaded
// within three refresh intervals).
func (r *Ring) Ready(ctx context.Context) error {
	if _, err := r.SigningKey(ctx); err != nil {
		return err
	}
	if age := r.cfg.Now().Sub(r.snap.Load().loadedAt); age > 3*r.cfg.RefreshInterval {
		return fmt.Errorf("signingkey: key set last loaded %s ago", age.Round(time.Second))
	}
	return nil
}

// Refresh reloads the key set from the store and logs the state changes
// seen since the last load. Keys the KEK cannot open are left out (and
// reported in the error) unless ReplaceUndecryptable; the rest is used
// either way.
func (r *Ring) Refresh(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refreshLocked(ctx)
}

func (r *Ring) refreshLocked(ctx context.Context) error {
	recs, err := r.cfg.Store.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("signingkey: load keys: %w", err)
	}
	now := r.cfg.Now()
	prev := r.snap.Load()
	next := &snapshot{loadedAt: now}
	if len(recs) > 0 {
		next.newest, next.newestCreated = recs[0].KID, recs[0].CreatedAt
	}
	var errs []error
	for _, rec := range recs {
		if rec.State(now) == StateExpired {
			continue
		}
		e, err := r.open(ctx, prev, rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next.entries = append(next.entries, e)
	}
	r.snap.Store(next)
	r.logTransitions(ctx, next, now)
	return errors.Join(errs...)
}

// open decrypts rec, reusing the key of the previous snapshot when it has
// one for the kid (a kid is the key's thumbprint: same kid, same key).
func (r *Ring) open(ctx context.Context, prev *snapshot, rec Record) (entry, error) {
	for i := range prev.entries {
		if p := &prev.entries[i]; p.KID == rec.KID && p.key != nil {
			return entry{Record: rec, key: p.key, pub: p.pub, jwk: p.jwk}, nil
		}
	}
	key, err := r.cfg.KEK.Open(rec.KID, rec.Sealed)
	if err == nil {
		jwk, err := json.Marshal(key.JWK())
		if err != nil {
			return entry{}, fmt.Errorf("signingkey: kid %s: marshal JWK: %w", rec.KID, err)
		}
		return entry{Record: rec, key: key, pub: key.Public(), jwk: jwk}, nil
	}
	if !r.cfg.ReplaceUndecryptable {
		return entry{}, err
	}
	// Demo only: the stored public key is not authenticated by the KEK,
	// so a database writer could publish a key of theirs this way.
	jwk, perr := rec.publicKey()
	if perr != nil {
		return entry{}, errors.Join(err, perr)
	}
	published, perr := json.Marshal(jwk)
	if perr != nil {
		return entry{}, errors.Join(err, perr)
	}
	pub, _ := jwk.Key.(*ecdsa.PublicKey) // checked by publicKey
	if _, seen := r.states[rec.KID]; !seen {
		r.cfg.Logger.WarnContext(ctx, "DEV ONLY: signing key does not decrypt under this key-encryption key; publishing its stored public key until it expires, never signing with it",
			slog.String("kid", rec.KID))
	}
	return entry{Record: rec, pub: pub, jwk: published}, nil
}

// Rotate reloads the key set and creates a new key that activates after
// the publish lead (at once if no key can sign now). It fails with
// ErrRotationRace if another rotation got there first.
func (r *Ring) Rotate(ctx context.Context) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refreshLocked(ctx); err != nil {
		return Record{}, err
	}
	return r.rotateLocked(ctx)
}

func (r *Ring) rotate(ctx context.Context) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rotateLocked(ctx)
}

func (r *Ring) rotateLocked(ctx context.Context) (Record, error) {
	snap := r.snap.Load()
	now := r.cfg.Now()
	activate := now
	if _, err := r.SigningKey(ctx); err == nil {
		activate = now.Add(r.cfg.PublishLead)
	}
	key, err := Generate()
	if err != nil {
		return Record{}, err
	}
	rec, err := NewRecord(key, r.cfg.KEK, snap.newest, now, activate)
	if err != nil {
		return Record{}, err
	}
	if err := r.cfg.Store.RotateKeys(ctx, rec, Timestamp(rec.ActivateAt.Add(r.cfg.Retention))); err != nil {
		return Record{}, fmt.Errorf("signingkey: rotate: %w", err)
	}
	r.audit(ctx, "signing key created", "signing_key.created", &rec)
	if r.cfg.OnCreated != nil {
		r.cfg.OnCreated(ctx, rec)
	}
	if err := r.refreshLocked(ctx); err != nil {
		return rec, err
	}
	return rec, nil
}

// Tick is one round of maintenance: reload the key set, rotate if the
// newest key is RotationPeriod old (losing the race to another replica is
// fine), and delete expired keys. Run calls it every RefreshInterval.
func (r *Ring) Tick(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if err := r.refreshLocked(ctx); err != nil {
		errs = append(errs, err)
	}
	now := r.cfg.Now()
	snap := r.snap.Load()
	_, noKey := r.SigningKey(ctx)
	if snap.newest == "" || noKey != nil || !now.Before(snap.newestCreated.Add(r.cfg.RotationPeriod)) {
		if _, err := r.rotateLocked(ctx); errors.Is(err, ErrRotationRace) {
			r.cfg.Logger.InfoContext(ctx, "signing key rotation: another replica rotated first")
			errs = append(errs, r.refreshLocked(ctx))
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	deleted, err := r.cfg.Store.DeleteExpiredKeys(ctx, Timestamp(now))
	if err != nil {
		errs = append(errs, fmt.Errorf("signingkey: delete expired keys: %w", err))
	}
	for _, kid := range deleted {
		r.cfg.Logger.InfoContext(ctx, "signing key deleted", slog.String("event", "signing_key.deleted"), slog.String("kid", kid))
	}
	return errors.Join(errs...)
}

// Run calls Tick every RefreshInterval until ctx is done, logging failures;
// the last good key set stays in use meanwhile (Ready turns false once it
// is three intervals old).
func (r *Ring) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.ErrorContext(ctx, "signing key maintenance failed", slog.Any("error", err))
			}
		}
	}
}

// logTransitions writes an audit line for every key whose state changed
// since the last load: each replica logs what it observes, at its next
// refresh after the change (the line carries the exact scheduled times).
func (r *Ring) logTransitions(ctx context.Context, snap *snapshot, now time.Time) {
	seen := make(map[string]State, len(snap.entries))
	for i := range snap.entries {
		e := &snap.entries[i]
		st := e.State(now)
		seen[e.KID] = st
		old, known := r.states[e.KID]
		switch {
		case !known:
			r.audit(ctx, "signing key loaded", "signing_key.loaded", &e.Record, slog.String("state", string(st)))
		case old != st && st == StateActive:
			r.audit(ctx, "signing key activated", "signing_key.activated", &e.Record)
		case old != st && st == StateRetired:
			r.audit(ctx, "signing key retired", "signing_key.retired", &e.Record)
		}
	}
	for kid, old := range r.states {
		if _, ok := seen[kid]; !ok && old != StateExpired {
			r.cfg.Logger.InfoContext(ctx, "signing key expired", slog.String("event", "signing_key.expired"), slog.String("kid", kid))
		}
	}
	r.states = seen
}

// audit writes one key audit line: kid, algorithm and timestamps, never
// key material.
func (r *Ring) audit(ctx context.Context, msg, event string, rec *Record, extra ...slog.Attr) {
	attrs := []slog.Attr{
		slog.String("event", event),
		slog.String("kid", rec.KID),
		slog.String("alg", rec.Algorithm),
		slog.Time("created_at", rec.CreatedAt),
		slog.Time("activate_at", rec.ActivateAt),
	}
	if !rec.RetireAt.IsZero() {
		attrs = append(attrs, slog.Time("retire_at", rec.RetireAt), slog.Time("expire_at", rec.ExpireAt))
	}
	r.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, msg, append(attrs, extra...)...)
}
