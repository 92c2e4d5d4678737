package faults

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// The load of TestSigningKeyRotationUnderLoad.
const (
	// reuseWorkers send every request with the one token issued before the
	// rotation; freshWorkers get a new token for every request.
	reuseWorkers = 3
	freshWorkers = 3
	// warmUp is how many requests succeed before the rotation starts.
	warmUp = 30
	// afterSwitch is how long the load goes on once tokens carry the new
	// kid: twice the verifiers' cache age, so each has refreshed its key
	// set (and dropped nothing it still needs) at least twice.
	afterSwitch = 2 * verifierKeyCacheAge
	// minPerSide is the least number of requests on each side of the
	// switch, and of successes with the new kid, for the test to count.
	minPerSide = 50
	// minReusedAfter is the least number of requests with the token of the
	// old key after the switch.
	minReusedAfter = 20
	// jwksPoll is how often the issuer's JWKS is read.
	jwksPoll = 100 * time.Millisecond
)

// TestSigningKeyRotationUnderLoad rotates the issuer's signing key through
// the admin API while workers keep calling ListInvoices through the gateway
// (which verifies each token, and the invoice service verifies it again):
// some with a token issued before the rotation, some with a fresh token for
// every request. The load runs until freshly issued tokens carry the new
// kid and for afterSwitch more. Not one request may fail; both kids must
// have been used successfully on both sides of the switch; and the issuer's
// JWKS must have listed the new key at least verifierKeyCacheAge before the
// first token signed with it was requested (publish-then-use), while the
// old key stays published. See the timings in main_test.go for why a
// too-short publish lead would fail this test.
func TestSigningKeyRotationUnderLoad(t *testing.T) {
	// The whole test, load included, takes about 11s.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	httpClient := loadClient()
	tokenCtx := context.WithValue(ctx, oauth2.HTTPClient, httpClient)
	tokens := clientcredentials.Config{
		ClientID:     "reporting-job",
		ClientSecret: "reporting-job-secret",
		TokenURL:     gh.IssuerURL + "/oauth2/token",
		Scopes:       []string{"invoice:read"},
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	api := invoicev1connect.NewInvoiceServiceClient(httpClient, gh.GatewayURL)
	tl := newTimeline()

	oldToken, err := tokens.Token(tokenCtx)
	if err != nil {
		t.Fatalf("token before the rotation: %v", err)
	}
	oldKid, err := kidOf(oldToken.AccessToken)
	if err != nil {
		t.Fatal(err)
	}

	// The JWKS watcher and the workers run until stopLoad; each writes only
	// its own slot of the results.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pollErrs []error
	wg.Go(func() { pollErrs = watchJWKS(ctx, httpClient, tl, stop) })
	var succeeded atomic.Int64
	results := make([][]result, reuseWorkers+freshWorkers)
	for w := range results {
		reused := w < reuseWorkers
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := call(tokenCtx, api, &tokens, tl, reused, oldToken.AccessToken, oldKid)
				results[w] = append(results[w], r)
				if r.err == nil {
					succeeded.Add(1)
				}
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	// The phases. A phase that does not complete in time ends the load, and
	// what was observed is still reported below.
	var newKid string
	var switchAt time.Time
	phaseErr := func() error {
		if err := waitFor(ctx, "the old key in the JWKS", func() bool { return tl.published(oldKid) }); err != nil {
			return err
		}
		if err := waitFor(ctx, fmt.Sprintf("%d successful requests before the rotation", warmUp), func() bool { return succeeded.Load() >= warmUp }); err != nil {
			return err
		}
		kid, activateAt, err := rotate(ctx, httpClient)
		if err != nil {
			return err
		}
		newKid = kid
		t.Logf("rotated: new kid %s, signing from %s (in %s)", newKid, activateAt.Format(time.RFC3339Nano), time.Until(activateAt).Round(time.Millisecond))
		signCtx, cancelSign := context.WithTimeout(ctx, publishLead+20*time.Second)
		defer cancelSign()
		if err := waitFor(signCtx, "a freshly issued token with the new kid", func() bool { return tl.issued(newKid) }); err != nil {
			return err
		}
		switchAt = tl.firstIssued(newKid)
		return waitFor(ctx, fmt.Sprintf("%s of load after the switch", afterSwitch), func() bool { return time.Since(switchAt) >= afterSwitch })
	}()
	stopLoad()

	// Zero failed requests, and every token carried one of the two kids.
	var all []result
	for _, rs := range results {
		all = append(all, rs...)
	}
	var failed []result
	var before, after, okOld, okNew, reusedAfter int
	otherKids := map[string]int{}
	for _, r := range all {
		if r.err != nil {
			failed = append(failed, r)
			continue
		}
		switch {
		case r.kid == oldKid:
			okOld++
		case newKid != "" && r.kid == newKid:
			okNew++
		default:
			otherKids[r.kid]++
		}
		if switchAt.IsZero() || r.start.Before(switchAt) {
			before++
			continue
		}
		after++
		if r.reused {
			reusedAfter++
		}
	}
	t.Logf("%d requests (%d reused the pre-rotation token): %d failed; succeeded: %d before the switch, %d after (%d of them with the pre-rotation token); %d with the old kid, %d with the new",
		len(all), countWhere(all, func(r result) bool { return r.reused }), len(failed), before, after, reusedAfter, okOld, okNew)
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed during the rotation, want none; the first ones:", len(failed), len(all))
		for _, r := range failed[:min(len(failed), 5)] {
			t.Errorf("  %s", r.describe(switchAt))
		}
	}
	if phaseErr != nil {
		t.Fatal(phaseErr)
	}
	if len(otherKids) > 0 {
		t.Errorf("tokens with kids other than the old %s and the new %s: %v", oldKid, newKid, otherKids)
	}
	if before < minPerSide || after < minPerSide {
		t.Errorf("%d successful requests before the switch and %d after, want at least %d on each side", before, after, minPerSide)
	}
	if okOld == 0 || okNew < minPerSide {
		t.Errorf("succeeded with the old kid %d times and with the new %d times, want both (the new at least %d times)", okOld, okNew, minPerSide)
	}
	if reusedAfter < minReusedAfter {
		t.Errorf("the token of the old key succeeded %d times after the switch, want at least %d: a retired key must verify until its tokens expire",
			reusedAfter, minReusedAfter)
	}

	// Publish-then-use, as observed from outside: the JWKS listed the new
	// key at least a verifier's cache age before the first token request
	// that got a token signed with it even started.
	for _, err := range pollErrs[:min(len(pollErrs), 5)] {
		t.Errorf("reading the JWKS during the rotation: %v", err)
	}
	publishedAt, firstUse := tl.firstPublished(newKid), switchAt
	if publishedAt.IsZero() {
		t.Fatalf("the new key %s never appeared in the JWKS, yet tokens carried it", newKid)
	}
	t.Logf("new key first in the JWKS at %s, first token with it requested %s later", publishedAt.Format(time.RFC3339Nano), firstUse.Sub(publishedAt).Round(time.Millisecond))
	if lead := firstUse.Sub(publishedAt); lead < verifierKeyCacheAge {
		t.Errorf("the new key was in the JWKS %s before a token signed with it was requested, want at least the verifiers' cache age %s", lead, verifierKeyCacheAge)
	}
	if !tl.stillPublished(oldKid) {
		t.Errorf("the old key %s left the JWKS while a token it signed is still valid", oldKid)
	}
}

// result is one request of a worker.
type result struct {
	// start is when the ListInvoices call started (after its token).
	start time.Time
	// kid is the kid of the token used; reused marks the pre-rotation token.
	kid    string
	reused bool
	// op is what failed: "token" or "ListInvoices".
	op  string
	err error
}

// countWhere counts the elements of xs for which keep holds.
func countWhere[T any](xs []T, keep func(T) bool) int {
	n := 0
	for _, x := range xs {
		if keep(x) {
			n++
		}
	}
	return n
}

// describe says what failed, with the code and reason of a Connect error.
func (r result) describe(switchAt time.Time) string {
	when := "before any token carried the new kid"
	if !switchAt.IsZero() {
		when = fmt.Sprintf("%s after the switch", r.start.Sub(switchAt).Round(time.Millisecond))
	}
	token := "a fresh token"
	if r.reused {
		token = "the pre-rotation token"
	}
	detail := r.err.Error()
	if ce := new(connect.Error); errors.As(r.err, &ce) {
		reason := "none"
		for _, d := range ce.Details() {
			if v, err := d.Value(); err == nil {
				if info, ok := v.(*errdetails.ErrorInfo); ok {
					reason = info.GetReason()
				}
			}
		}
		detail = fmt.Sprintf("%s, reason %s: %s", ce.Code(), reason, ce.Message())
	}
	return fmt.Sprintf("%s with %s (kid %q), %s: %s", r.op, token, r.kid, when, detail)
}

// call makes one request: with the pre-rotation token (of oldKid), or with
// a token issued for it (recorded in tl).
func call(ctx context.Context, api invoicev1connect.InvoiceServiceClient, tokens *clientcredentials.Config, tl *timeline,
	reused bool, oldToken, oldKid string) result {
	r := result{reused: reused, op: "token"}
	token := oldToken
	if reused {
		r.kid = oldKid
	} else {
		asked := time.Now()
		tok, err := tokens.Token(ctx)
		if err != nil {
			r.start, r.err = asked, err
			return r
		}
		token = tok.AccessToken
		if r.kid, r.err = kidOf(token); r.err != nil {
			r.start = asked
			return r
		}
		tl.sawToken(r.kid, asked)
	}
	r.op = "ListInvoices"
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{})
	req.Header().Set("Authorization", "Bearer "+token)
	r.start = time.Now()
	_, r.err = api.ListInvoices(ctx, req)
	return r
}

// kidOf decodes the kid from a JWT's protected header (the token is not
// verified: the services do that).
func kidOf(jwt string) (string, error) {
	header, _, ok := strings.Cut(jwt, ".")
	if !ok {
		return "", errors.New("the access token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	if h.Kid == "" {
		return "", errors.New("token header without kid")
	}
	return h.Kid, nil
}

// rotate asks the issuer for a new signing key now (POST /admin/keys/rotate
// as the demo seed's issuer-admin) and returns its kid and when it signs.
func rotate(ctx context.Context, client *http.Client) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gh.IssuerURL+"/admin/keys/rotate", nil)
	if err != nil {
		return "", time.Time{}, err
	}
	req.SetBasicAuth("issuer-admin", "issuer-admin-secret")
	resp, err := client.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", time.Time{}, fmt.Errorf("rotate: %s: %s", resp.Status, body)
	}
	var out struct {
		Rotated string `json:"rotated"`
		Keys    []struct {
			KID        string    `json:"kid"`
			ActivateAt time.Time `json:"activate_at"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", time.Time{}, fmt.Errorf("rotate: %w: %s", err, body)
	}
	for _, k := range out.Keys {
		if k.KID == out.Rotated && out.Rotated != "" {
			return k.KID, k.ActivateAt, nil
		}
	}
	return "", time.Time{}, fmt.Errorf("rotate: the answer does not list the rotated key %q: %s", out.Rotated, body)
}

// timeline records when each kid was first seen: in the issuer's JWKS (the
// first answer listing it, when it was received) and in issued tokens (the
// earliest start of a token request whose token carried it).
type timeline struct {
	mu       sync.Mutex
	inJWKS   map[string]time.Time
	lastJWKS map[string]bool
	inTokens map[string]time.Time
}

func newTimeline() *timeline {
	return &timeline{inJWKS: map[string]time.Time{}, inTokens: map[string]time.Time{}}
}

func (tl *timeline) sawJWKS(kids map[string]bool, at time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for kid := range kids {
		if _, ok := tl.inJWKS[kid]; !ok {
			tl.inJWKS[kid] = at
		}
	}
	tl.lastJWKS = kids
}

func (tl *timeline) sawToken(kid string, asked time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if first, ok := tl.inTokens[kid]; !ok || asked.Before(first) {
		tl.inTokens[kid] = asked
	}
}

func (tl *timeline) published(kid string) bool { return !tl.firstPublished(kid).IsZero() }

func (tl *timeline) firstPublished(kid string) time.Time {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.inJWKS[kid]
}

func (tl *timeline) stillPublished(kid string) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.lastJWKS[kid]
}

func (tl *timeline) issued(kid string) bool { return !tl.firstIssued(kid).IsZero() }

func (tl *timeline) firstIssued(kid string) time.Time {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.inTokens[kid]
}

// watchJWKS reads the issuer's JWKS every jwksPoll until stop, recording
// the kids in tl, and returns the reads that failed.
func watchJWKS(ctx context.Context, client *http.Client, tl *timeline, stop <-chan struct{}) []error {
	var errs []error
	tick := time.NewTicker(jwksPoll)
	defer tick.Stop()
	for {
		kids, err := readJWKS(ctx, client)
		if err != nil {
			errs = append(errs, err)
		} else {
			tl.sawJWKS(kids, time.Now())
		}
		if !nextTick(ctx, stop, tick) {
			return errs
		}
	}
}

// nextTick waits for a load loop's next tick; false when the load is to
// stop (stop closed or ctx done).
func nextTick(ctx context.Context, stop <-chan struct{}, tick *time.Ticker) bool {
	select {
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	case <-tick.C:
		return true
	}
}

func readJWKS(ctx context.Context, client *http.Client) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gh.IssuerURL+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: %s", resp.Status)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	kids := map[string]bool{}
	for _, k := range set.Keys {
		kids[k.KID] = true
	}
	return kids, nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// loadClient is one HTTP client for the whole load, keeping a connection
// per worker alive (and never going through a proxy).
func loadClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.MaxIdleConnsPerHost = 4 * (reuseWorkers + freshWorkers)
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

// TestRetiredKeyIsRefusedOnceExpired: a token signed by a key the issuer
// has retired verifies while the key is still published (its tokens must
// live out their lifetime), and is refused once the key has expired and
// left the JWKS, however genuine its signature. The test rotates the
// issuer's key, waits until the old one is retired, and signs tokens of
// fresh claims with the old key's private half (read from the issuer's
// database with the stack's key-encryption key): the same token body is
// accepted before the expiry and refused after, so the refusal comes from
// the key alone. Expiry waits -max-token-lifetime plus a minute after
// retirement; the test brings the retired key's expire_at forward to now
// in the issuer's database instead, as the issuer's clock would after that
// wait: the issuer deletes it and drops it from the JWKS at its next
// refresh, and a verifier drops it once its cached set is older than its
// -jwks-max-age.
func TestRetiredKeyIsRefusedOnceExpired(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	client := loadClient()
	tokens := clientcredentials.Config{
		ClientID: "reporting-job", ClientSecret: "reporting-job-secret",
		TokenURL: gh.IssuerURL + "/oauth2/token", Scopes: []string{"invoice:read"}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	genuine, err := tokens.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	newKid, err := kidOf(genuine.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	// TestSigningKeyRotationUnderLoad, just before, rotated and left the
	// old key retired; the issuer allows one rotation a minute through its
	// API, so this test rotates only when run alone.
	oldKid, found, err := retiredKid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		oldKid = newKid
		var activateAt time.Time
		if newKid, activateAt, err = rotate(ctx, client); err != nil {
			t.Fatal(err)
		}
		// The old key retires when the new one activates.
		if err := waitFor(ctx, "the new key to sign", func() bool { return time.Now().After(activateAt.Add(issuerKeyRefresh)) }); err != nil {
			t.Fatal(err)
		}
	}
	oldKey, err := gh.IssuerKey(ctx, oldKid)
	if err != nil {
		t.Fatal(err)
	}
	if state, err := keyState(ctx, oldKid); err != nil || state != "retired" {
		t.Fatalf("the old key %s is %q (%v), want retired", oldKid, state, err)
	}

	// Retired and still published: a token it signs now verifies.
	if status, err := listWith(ctx, client, resigned(t, genuine.AccessToken, oldKid, oldKey)); err != nil || status != http.StatusOK {
		t.Fatalf("a token signed by the retired, still published key: %d (%v), want 200", status, err)
	}

	if err := expireNow(ctx, oldKid); err != nil {
		t.Fatal(err)
	}
	expiredAt := time.Now()
	if err := waitFor(ctx, "the expired key to leave the JWKS", func() bool {
		kids, err := readJWKS(ctx, client)
		return err == nil && !kids[oldKid] && kids[newKid]
	}); err != nil {
		t.Fatal(err)
	}
	left := time.Since(expiredAt)
	// Every verifier refreshes its set within its cache age of the key
	// leaving it; from then on, the same kind of token, signed anew, is
	// refused. Until then it may pass: the bound is what is asserted.
	bound := verifierKeyCacheAge + 2*time.Second
	var status int
	for deadline := time.Now().Add(bound); ; {
		if status, err = listWith(ctx, client, resigned(t, genuine.AccessToken, oldKid, oldKey)); err != nil {
			t.Fatal(err)
		}
		if status == http.StatusUnauthorized || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	refusedAfter := time.Since(expiredAt) - left
	if status != http.StatusUnauthorized {
		t.Errorf("a token signed by the expired key: %d %s after it left the JWKS, want 401 within %s", status, refusedAfter.Round(time.Millisecond), bound)
	}
	// The new key's tokens still pass: nothing else changed.
	if status, err := listWith(ctx, client, resigned(t, genuine.AccessToken, newKid, nil)); err != nil || status != http.StatusOK {
		t.Errorf("a fresh token of the new key: %d (%v), want 200", status, err)
	}
	t.Logf("old key %s left the JWKS %s after its expiry; its tokens were refused %s after that", oldKid, left.Round(time.Millisecond), refusedAfter.Round(time.Millisecond))
}
