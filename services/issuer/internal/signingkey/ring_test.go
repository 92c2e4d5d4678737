package signingkey_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
)

// Schedule of the rings under test.
const (
	lead      = 10 * time.Minute
	period    = 24 * time.Hour
	retention = time.Hour
	refresh   = time.Minute
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a fake clock safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type ringOpts struct {
	store   signingkey.Store
	kek     *signingkey.KEK
	clock   *clock
	replace bool
}

func newRing(t testing.TB, o ringOpts) (*signingkey.Ring, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	r, err := signingkey.NewRing(signingkey.RingConfig{
		Store:                o.store,
		KEK:                  o.kek,
		RotationPeriod:       period,
		PublishLead:          lead,
		Retention:            retention,
		RefreshInterval:      refresh,
		ReplaceUndecryptable: o.replace,
		Now:                  o.clock.Now,
		Logger:               slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, logs
}

func startRing(t testing.TB, o ringOpts) (*signingkey.Ring, *syncBuffer) {
	t.Helper()
	r, logs := newRing(t, o)
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return r, logs
}

func signingKID(t *testing.T, r *signingkey.Ring) string {
	t.Helper()
	k, err := r.SigningKey(t.Context())
	if err != nil {
		t.Fatalf("SigningKey: %v", err)
	}
	return k.KeyID()
}

func publishedKIDs(t *testing.T, r *signingkey.Ring) []string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.JWKS(), &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	kids := make([]string, 0, len(set.Keys))
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Algorithm != signingkey.Algorithm || k.Use != "sig" {
			t.Fatalf("published key %+v: want a public ES256 signing key", k)
		}
		kids = append(kids, k.KeyID)
	}
	slices.Sort(kids)
	return kids
}

func sorted(kids ...string) []string {
	return slices.Sorted(slices.Values(kids))
}

func TestRingStartCreatesFirstKeyActiveAtOnce(t *testing.T) {
	t.Parallel()
	st := memory.NewKeyStore()
	r, logs := startRing(t, ringOpts{store: st, kek: newKEK(t), clock: &clock{now: t0}})
	kid := signingKID(t, r)
	if got := publishedKIDs(t, r); !slices.Equal(got, []string{kid}) {
		t.Fatalf("JWKS = %v, want [%s]", got, kid)
	}
	recs, err := st.ListKeys(t.Context())
	if err != nil || len(recs) != 1 || recs[0].KID != kid || !recs[0].ActivateAt.Equal(t0) {
		t.Fatalf("store = %+v, %v; want one key active at %s", recs, err, t0)
	}
	if !strings.Contains(logs.String(), `"msg":"signing key created","event":"signing_key.created","kid":"`+kid+`"`) {
		t.Errorf("no created audit line:\n%s", logs)
	}
}

// TestRingLifecycle walks one rotation through time: the new key is
// published before it signs, the old one stays published until it expires.
func TestRingLifecycle(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	st := memory.NewKeyStore()
	kek := newKEK(t)
	r, logs := startRing(t, ringOpts{store: st, kek: kek, clock: clk})
	k1 := signingKID(t, r)

	rotatedAt := t0.Add(time.Hour)
	clk.Set(rotatedAt)
	rec, err := r.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	k2 := rec.KID
	if !rec.ActivateAt.Equal(rotatedAt.Add(lead)) || rec.Predecessor != k1 {
		t.Fatalf("new key activates %s after %q, want %s after %s", rec.ActivateAt, rec.Predecessor, rotatedAt.Add(lead), k1)
	}
	activate := rotatedAt.Add(lead)
	expire := activate.Add(retention)

	tests := []struct {
		name      string
		at        time.Time
		signer    string
		published []string
	}{
		{name: "new key pending: published, not signing", at: rotatedAt, signer: k1, published: sorted(k1, k2)},
		{name: "just before activation", at: activate.Add(-time.Microsecond), signer: k1, published: sorted(k1, k2)},
		{name: "new key active, old retired but published", at: activate, signer: k2, published: sorted(k1, k2)},
		{name: "just before the old key expires", at: expire.Add(-time.Microsecond), signer: k2, published: sorted(k1, k2)},
		{name: "old key expired: not published", at: expire, signer: k2, published: []string{k2}},
	}
	for _, tc := range tests { // sequential: one clock
		t.Run(tc.name, func(t *testing.T) {
			clk.Set(tc.at)
			if got := signingKID(t, r); got != tc.signer {
				t.Errorf("signing kid = %s, want %s", got, tc.signer)
			}
			if got := publishedKIDs(t, r); !slices.Equal(got, tc.published) {
				t.Errorf("JWKS = %v, want %v", got, tc.published)
			}
			_, err := r.VerificationKey(t.Context(), k1)
			if wantPublished := slices.Contains(tc.published, k1); wantPublished != (err == nil) {
				t.Errorf("VerificationKey(old) = %v, want published=%v", err, wantPublished)
			}
		})
	}

	// Maintenance after expiry deletes the old key from the store.
	if err := r.Tick(t.Context()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	recs, err := st.ListKeys(t.Context())
	if err != nil || len(recs) != 1 || recs[0].KID != k2 {
		t.Fatalf("store after expiry = %+v, %v; want only %s", recs, err, k2)
	}

	// One audit line per event, no key material.
	out := logs.String()
	for _, want := range []string{
		`"msg":"signing key created","event":"signing_key.created","kid":"` + k2 + `"`,
		`"msg":"signing key deleted","event":"signing_key.deleted","kid":"` + k1 + `"`,
		`"msg":"signing key expired","event":"signing_key.expired","kid":"` + k1 + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no audit line %s in:\n%s", want, out)
		}
	}
	assertNoKeyMaterial(t, out, kek, st)
}

func TestRingTickLogsTransitions(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	r, logs := startRing(t, ringOpts{store: memory.NewKeyStore(), kek: newKEK(t), clock: clk})
	k1 := signingKID(t, r)
	rec, err := r.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(rec.ActivateAt)
	if err := r.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{
		`"msg":"signing key activated","event":"signing_key.activated","kid":"` + rec.KID + `"`,
		`"msg":"signing key retired","event":"signing_key.retired","kid":"` + k1 + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no audit line %s in:\n%s", want, out)
		}
	}
}

func TestRingScheduledRotation(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	st := memory.NewKeyStore()
	r, _ := startRing(t, ringOpts{store: st, kek: newKEK(t), clock: clk})
	tests := []struct {
		name string
		at   time.Time
		keys int
	}{
		{name: "before the period", at: t0.Add(period - time.Second), keys: 1},
		{name: "at the period", at: t0.Add(period), keys: 2},
		{name: "again at once: the newest key is new", at: t0.Add(period + time.Second), keys: 2},
		// A third key; the first, long expired, is deleted.
		{name: "a period after the second key", at: t0.Add(2 * period), keys: 2},
	}
	for _, tc := range tests { // sequential: one clock
		t.Run(tc.name, func(t *testing.T) {
			clk.Set(tc.at)
			if err := r.Tick(t.Context()); err != nil {
				t.Fatalf("Tick: %v", err)
			}
			recs, err := st.ListKeys(t.Context())
			if err != nil || len(recs) != tc.keys {
				t.Fatalf("%d keys (%v), want %d", len(recs), err, tc.keys)
			}
		})
	}
}

// TestConcurrentRotationCreatesOneKey runs replicas that share a store and
// find the rotation due at the same moment: exactly one new key results,
// and the replicas that lose the race are not in error.
func TestConcurrentRotationCreatesOneKey(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	st := memory.NewKeyStore()
	kek := newKEK(t)
	const replicas = 4
	rings := make([]*signingkey.Ring, replicas)
	for i := range rings {
		rings[i], _ = startRing(t, ringOpts{store: st, kek: kek, clock: clk})
	}
	clk.Set(t0.Add(period))
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() { errs[i] = r.Tick(t.Context()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("Tick: %v", err)
		}
	}
	recs, err := st.ListKeys(t.Context())
	if err != nil || len(recs) != 2 {
		t.Fatalf("%d keys (%v) after concurrent rotations, want 2", len(recs), err)
	}
	// Every replica converges on the same set once refreshed.
	for _, r := range rings {
		if err := r.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := publishedKIDs(t, r); !slices.Equal(got, sorted(recs[0].KID, recs[1].KID)) {
			t.Errorf("replica publishes %v", got)
		}
	}
}

// TestRotateLosingTheRace: a rotation based on a key that already has a
// successor fails with ErrRotationRace and stores nothing.
func TestRotateLosingTheRace(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	st := memory.NewKeyStore()
	kek := newKEK(t)
	r, _ := startRing(t, ringOpts{store: st, kek: kek, clock: clk})
	k1 := signingKID(t, r)
	rec, err := signingkey.NewRecord(newKey(t), kek, k1, t0, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Another replica's rotation, which r has not seen.
	if err := st.RotateKeys(t.Context(), rec, t0.Add(retention)); err != nil {
		t.Fatal(err)
	}
	blocked := &raceStore{Store: st, stale: k1}
	r2, _ := newRing(t, ringOpts{store: blocked, kek: kek, clock: clk})
	if _, err := r2.Rotate(t.Context()); !errors.Is(err, signingkey.ErrRotationRace) {
		t.Fatalf("Rotate = %v, want ErrRotationRace", err)
	}
	if recs, _ := st.ListKeys(t.Context()); len(recs) != 2 {
		t.Fatalf("%d keys, want 2", len(recs))
	}
}

// raceStore lists keys as they were before another replica's rotation: only
// the one whose kid is stale.
type raceStore struct {
	signingkey.Store
	stale string
}

func (s *raceStore) ListKeys(ctx context.Context) ([]signingkey.Record, error) {
	recs, err := s.Store.ListKeys(ctx)
	return slices.DeleteFunc(recs, func(r signingkey.Record) bool { return r.KID != s.stale }), err
}

func TestRingRefusesKeysItCannotDecrypt(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	tampered := func(t *testing.T) signingkey.Store {
		st := memory.NewKeyStore()
		rec, err := signingkey.NewRecord(newKey(t), kek, "", t0, t0)
		if err != nil {
			t.Fatal(err)
		}
		rec.Sealed[len(rec.Sealed)-1] ^= 1
		if err := st.RotateKeys(t.Context(), rec, t0); err != nil {
			t.Fatal(err)
		}
		return st
	}
	sealedByOther := func(t *testing.T) signingkey.Store {
		st := memory.NewKeyStore()
		startRing(t, ringOpts{store: st, kek: newKEK(t), clock: &clock{now: t0}})
		return st
	}
	for _, tc := range []struct {
		name  string
		store func(*testing.T) signingkey.Store
	}{
		{name: "another KEK", store: sealedByOther},
		{name: "tampered ciphertext", store: tampered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := newRing(t, ringOpts{store: tc.store(t), kek: kek, clock: &clock{now: t0}})
			if err := r.Start(t.Context()); !errors.Is(err, signingkey.ErrUndecryptable) {
				t.Fatalf("Start = %v, want ErrUndecryptable", err)
			}
		})
	}
}

// TestDemoRestartWithNewKEK: a demo issuer restarted with a new ephemeral
// KEK cannot use the old key, but keeps publishing it, so tokens it signed
// still verify until they expire.
func TestDemoRestartWithNewKEK(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	st := memory.NewKeyStore()
	before, _ := startRing(t, ringOpts{store: st, kek: newKEK(t), clock: clk, replace: true})
	oldKey, err := before.SigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, oldKey)

	restart := t0.Add(time.Minute)
	clk.Set(restart)
	after, logs := startRing(t, ringOpts{store: st, kek: newKEK(t), clock: clk, replace: true})
	newKID := signingKID(t, after)
	if newKID == oldKey.KeyID() {
		t.Fatal("the restarted ring signs with a key it cannot have decrypted")
	}
	if got := publishedKIDs(t, after); !slices.Equal(got, sorted(oldKey.KeyID(), newKID)) {
		t.Fatalf("JWKS = %v, want the old and the new key", got)
	}
	verify(t, after.JWKS(), token)
	if !strings.Contains(logs.String(), "DEV ONLY: signing key does not decrypt") {
		t.Errorf("no DEV ONLY warning:\n%s", logs)
	}
	clk.Set(restart.Add(retention))
	if got := publishedKIDs(t, after); !slices.Equal(got, []string{newKID}) {
		t.Fatalf("after retention JWKS = %v, want only the new key", got)
	}
}

func TestRingReady(t *testing.T) {
	t.Parallel()
	clk := &clock{now: t0}
	r, _ := newRing(t, ringOpts{store: memory.NewKeyStore(), kek: newKEK(t), clock: clk})
	if err := r.Ready(t.Context()); !errors.Is(err, signingkey.ErrNoSigningKey) {
		t.Fatalf("before Start: Ready = %v, want ErrNoSigningKey", err)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(t.Context()); err != nil {
		t.Fatalf("after Start: Ready = %v", err)
	}
	clk.Set(t0.Add(3*refresh + time.Second))
	if err := r.Ready(t.Context()); err == nil {
		t.Fatal("Ready with a key set not refreshed for over three intervals")
	}
}

func TestNewRingRejectsBadSchedule(t *testing.T) {
	t.Parallel()
	base := signingkey.RingConfig{
		Store: memory.NewKeyStore(), KEK: newKEK(t), Logger: slog.New(slog.DiscardHandler),
		RotationPeriod: period, PublishLead: lead, Retention: retention, RefreshInterval: refresh,
	}
	for _, tc := range []struct {
		name string
		edit func(*signingkey.RingConfig)
	}{
		{name: "no store", edit: func(c *signingkey.RingConfig) { c.Store = nil }},
		{name: "no KEK", edit: func(c *signingkey.RingConfig) { c.KEK = nil }},
		{name: "period not above lead", edit: func(c *signingkey.RingConfig) { c.RotationPeriod = c.PublishLead }},
		{name: "negative lead", edit: func(c *signingkey.RingConfig) { c.PublishLead = -time.Second }},
		{name: "no retention", edit: func(c *signingkey.RingConfig) { c.Retention = 0 }},
		{name: "no refresh interval", edit: func(c *signingkey.RingConfig) { c.RefreshInterval = 0 }},
	} {
		cfg := base
		tc.edit(&cfg)
		if _, err := signingkey.NewRing(cfg); err == nil {
			t.Errorf("%s: NewRing accepted the configuration", tc.name)
		}
	}
}

func BenchmarkSigningKey(b *testing.B) {
	st := memory.NewKeyStore()
	kek, err := signingkey.GenerateKEK()
	if err != nil {
		b.Fatal(err)
	}
	r, err := signingkey.NewRing(signingkey.RingConfig{
		Store: st, KEK: kek, Logger: slog.New(slog.DiscardHandler),
		RotationPeriod: period, PublishLead: lead, Retention: retention, RefreshInterval: refresh,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		b.Fatal(err)
	}
	// A pending key and a retired one around the active key, as mid-rotation.
	for range 2 {
		if _, err := r.Rotate(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.SigningKey(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// sign returns a compact JWS signed by k with its kid.
func sign(t *testing.T, k *signingkey.Key) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.Private()},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), k.KeyID()))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(`{"sub":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verify checks token against the key its kid names in jwks.
func verify(t *testing.T, jwks []byte, token string) {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s matches %d published keys, want 1", jws.Signatures[0].Header.KeyID, len(keys))
	}
	if _, err := jws.Verify(keys[0].Key); err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
}

// assertNoKeyMaterial fails if logs hold any private key or sealed key.
func assertNoKeyMaterial(t *testing.T, logs string, kek *signingkey.KEK, st signingkey.Store) {
	t.Helper()
	recs, err := st.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs, `"d":`) {
		t.Error("logs contain a private JWK")
	}
	for _, rec := range recs {
		k, err := kek.Open(rec.KID, rec.Sealed)
		if err != nil {
			t.Fatal(err)
		}
		pemKey, err := k.MarshalPKCS8PEM()
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range [][]byte{pemKey[30:60], rec.Sealed[13:40]} {
			if strings.Contains(logs, string(secret)) {
				t.Errorf("logs contain key material of %s", rec.KID)
			}
		}
	}
}

func newKEK(t testing.TB) *signingkey.KEK {
	t.Helper()
	kek, err := signingkey.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func newKey(t testing.TB) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
