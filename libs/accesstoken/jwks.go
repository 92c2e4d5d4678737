package accesstoken

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds the key-set document we read from the issuer.
const maxJWKSBytes = 1 << 20

// emptyRefetchInterval is the least time between fetches while no key set
// has been loaded yet.
const emptyRefetchInterval = time.Second

// fetchTimeout bounds one fetch of the key set.
const fetchTimeout = 5 * time.Second

// JWKSConfig configures a JWKS.
type JWKSConfig struct {
	// URL of the issuer's JWKS document.
	URL string
	// Client makes the requests; it must have a timeout. Default: 5s timeout.
	Client *http.Client
	// MinRefetchInterval is the least time between two fetches, however many
	// unknown kids arrive: random kids cannot cause a refetch storm. Default 10s.
	MinRefetchInterval time.Duration
	// MaxAge is how long a fetched set is used before it is refreshed on the
	// next lookup. Default 5 minutes.
	MaxAge time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// OnFetch, when set, hears of every fetch of the key set, with its
	// error (nil when it succeeded): a caller's count of fetches shows a
	// refetch storm, or an issuer that cannot be reached.
	OnFetch func(err error)
}

// JWKS is a KeySource backed by the issuer's JWKS endpoint. Keys are cached;
// an unknown kid triggers at most one refetch per MinRefetchInterval, and
// concurrent lookups share one fetch. When a refresh fails the last good set
// stays in use. Safe for concurrent use.
type JWKS struct {
	cfg JWKSConfig

	// fetchMu serialises fetches so concurrent misses share one request.
	fetchMu sync.Mutex

	mu        sync.RWMutex
	keys      map[string]*jose.JSONWebKey
	fetchedAt time.Time
	triedAt   time.Time
}

// NewJWKS returns a JWKS for cfg. It fetches lazily, on first use.
func NewJWKS(cfg JWKSConfig) (*JWKS, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("accesstoken: JWKS URL is required")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.MinRefetchInterval == 0 {
		cfg.MinRefetchInterval = 10 * time.Second
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &JWKS{cfg: cfg}, nil
}

// Key implements KeySource.
func (j *JWKS) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	if key, fresh, _ := j.lookup(kid); key != nil && fresh {
		return key, nil
	}
	// Unknown kid, or a stale set: refresh if the rate limit allows. A failed
	// refresh keeps the last good set in use.
	err := j.refresh(ctx)
	key, _, loaded := j.lookup(kid)
	switch {
	case key != nil:
		return key, nil
	case !loaded && err != nil:
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	case !loaded:
		return nil, fmt.Errorf("%w: no key set fetched yet", ErrKeysUnavailable)
	}
	return nil, ErrUnknownKey
}

// Ready reports whether a key set has been loaded, fetching one if needed.
func (j *JWKS) Ready(ctx context.Context) error {
	if _, _, loaded := j.lookup(""); loaded {
		return nil
	}
	err := j.refresh(ctx)
	if _, _, loaded := j.lookup(""); loaded {
		return nil
	}
	if err == nil {
		err = errors.New("no key set fetched yet")
	}
	return fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
}

func (j *JWKS) lookup(kid string) (key *jose.JSONWebKey, fresh, loaded bool) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	loaded = j.keys != nil
	fresh = loaded && j.cfg.Now().Sub(j.fetchedAt) < j.cfg.MaxAge
	return j.keys[kid], fresh, loaded
}

// refresh fetches the set unless another fetch happened within
// MinRefetchInterval. Callers waiting on fetchMu reuse that fetch's result.
func (j *JWKS) refresh(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()

	j.mu.RLock()
	// With no key set at all nothing can be verified, so try again sooner
	// (at most once a second) until the issuer answers.
	interval := j.cfg.MinRefetchInterval
	if j.keys == nil {
		interval = min(interval, emptyRefetchInterval)
	}
	tooSoon := !j.triedAt.IsZero() && j.cfg.Now().Sub(j.triedAt) < interval
	j.mu.RUnlock()
	if tooSoon {
		return nil
	}

	// The fetch serves every waiting caller, not just this one: it must not
	// die with this caller's context (a client that hangs up would otherwise
	// use up the refetch window for everyone). It has its own deadline.
	fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	now := j.cfg.Now()
	keys, err := j.fetch(fetchCtx)
	if j.cfg.OnFetch != nil {
		j.cfg.OnFetch(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.triedAt = now
	if err != nil {
		return err
	}
	j.keys = keys
	j.fetchedAt = now
	return nil
}

func (j *JWKS) fetch(ctx context.Context) (map[string]*jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.cfg.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks fetch: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks fetch: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks document larger than %d bytes", maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("jwks decode: %w", err)
	}
	keys := make(map[string]*jose.JSONWebKey, len(set.Keys))
	for i := range set.Keys {
		k := set.Keys[i]
		// Only public EC signing keys for our allow-listed algorithm count;
		// a private or symmetric key in the set is ignored, never used.
		if _, ok := k.Key.(*ecdsa.PublicKey); !ok || k.KeyID == "" {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
			continue
		}
		keys[k.KeyID] = &k
	}
	return keys, nil
}
