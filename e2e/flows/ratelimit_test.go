package flows

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
)

// TestRateLimitIgnoresRotatedHeaders: the gateway's per-source bucket is
// keyed by the TCP peer, so a client that rotates X-Forwarded-For,
// X-Real-IP and Forwarded on every request still runs dry (429 with
// Retry-After, reason rate_limited) and gets no fresh bucket; after
// Retry-After it is served again. Requests carry no token, so only the
// source bucket is in play (it is checked before any token work).
func TestRateLimitIgnoresRotatedHeaders(t *testing.T) {
	send := func(i int) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gh.GatewayURL+listProcedure, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		ip := fmt.Sprintf("203.0.113.%d", i%250+1)
		req.Header.Set("X-Forwarded-For", ip)
		req.Header.Set("X-Real-IP", ip)
		req.Header.Set("Forwarded", "for="+ip)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}

	// The demo gateway allows a burst of 100 at 50 per second per source.
	limited := -1
	for i := range 400 {
		if resp := send(i); resp.StatusCode == http.StatusTooManyRequests {
			limited = i
			break
		}
	}
	if limited < 0 {
		t.Fatal("400 requests with rotating forwarding headers were never rate limited")
	}
	var retryAfter int
	for range 5 {
		resp, ce := post(t, listProcedure, "", "{}")
		if resp.StatusCode != http.StatusTooManyRequests {
			// A token or two may have refilled; rotate once more and re-check below.
			continue
		}
		if r, _ := errorInfo(t, ce); r != reason.RateLimited {
			t.Fatalf("reason %q, want rate_limited", r)
		}
		n, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || n < 1 {
			t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
		}
		retryAfter = n
		break
	}
	if retryAfter == 0 {
		t.Fatal("no 429 with Retry-After once the bucket ran dry")
	}
	// Fresh forwarding headers buy nothing: no more requests are served
	// than the bucket refills in the time they take (50 per second).
	start := time.Now()
	served := 0
	for i := range 20 {
		if send(1000+i).StatusCode != http.StatusTooManyRequests {
			served++
		}
	}
	if refill := int(time.Since(start).Seconds()*50) + 2; served > refill {
		t.Errorf("%d of 20 requests with new forwarding headers served in %s (refill allows %d): a rotated header opened a fresh bucket", served, time.Since(start), refill)
	}

	// After Retry-After the source is served again (401: no token).
	time.Sleep(time.Duration(retryAfter) * time.Second)
	if resp := send(2000); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after Retry-After: %d, want 401 (served, no token)", resp.StatusCode)
	}
	// Leave the bucket full for the tests after this one.
	time.Sleep(2 * time.Second)
}
