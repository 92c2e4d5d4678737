package signin_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
)

func TestLoopback(t *testing.T) {
	l, err := signin.Listen(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(t.Context()) })
	if !strings.HasPrefix(l.RedirectURI(), "http://127.0.0.1:") || !strings.HasSuffix(l.RedirectURI(), "/callback") {
		t.Fatalf("redirect URI %q, want http://127.0.0.1:PORT/callback", l.RedirectURI())
	}
	get := func(t *testing.T, path string, q url.Values) (int, string) {
		t.Helper()
		base := strings.TrimSuffix(l.RedirectURI(), "/callback")
		resp, err := http.Get(base + path + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// received returns what ch got, or fails after a short wait.
	received := func(t *testing.T, ch <-chan signin.Redirect) signin.Redirect {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("nothing delivered")
			return signin.Redirect{}
		}
	}
	nothing := func(t *testing.T, ch <-chan signin.Redirect) {
		t.Helper()
		select {
		case r := <-ch:
			t.Fatalf("delivered %+v, want nothing", r)
		default:
		}
	}

	t.Run("the code, once, to the request with the state", func(t *testing.T) {
		ch := l.Expect("state-1")
		other := l.Expect("state-2")
		status, body := get(t, "/callback", url.Values{"code": {"the-code"}, "state": {"state-1"}})
		if status != http.StatusOK || !strings.Contains(body, `id="signed-in"`) {
			t.Fatalf("callback: %d %s", status, body)
		}
		if r := received(t, ch); r.Code != "the-code" || r.Err != nil {
			t.Fatalf("delivered %+v, want the code", r)
		}
		nothing(t, other)
		// Replayed: refused, nothing delivered.
		status, body = get(t, "/callback", url.Values{"code": {"another"}, "state": {"state-1"}})
		if status != http.StatusBadRequest || !strings.Contains(body, `id="sign-in-unexpected"`) {
			t.Fatalf("replayed callback: %d %s", status, body)
		}
		nothing(t, ch)
		l.Forget("state-2")
	})
	t.Run("unknown state", func(t *testing.T) {
		ch := l.Expect("state-3")
		defer l.Forget("state-3")
		if status, _ := get(t, "/callback", url.Values{"code": {"c"}, "state": {"forged"}}); status != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", status)
		}
		if status, _ := get(t, "/callback", url.Values{"code": {"c"}}); status != http.StatusBadRequest {
			t.Fatalf("no state: status %d, want 400", status)
		}
		nothing(t, ch)
	})
	t.Run("an error response", func(t *testing.T) {
		ch := l.Expect("state-4")
		status, body := get(t, "/callback", url.Values{"error": {"access_denied"}, "error_description": {"no TOTP <b>"}, "state": {"state-4"}})
		if status != http.StatusOK || !strings.Contains(body, `id="sign-in-failed"`) || strings.Contains(body, "<b>") {
			t.Fatalf("callback: %d %s", status, body)
		}
		r := received(t, ch)
		if !errors.Is(r.Err, signin.ErrAuthorization) || !strings.Contains(r.Err.Error(), "access_denied") || r.Code != "" {
			t.Fatalf("delivered %+v, want access_denied", r)
		}
	})
	t.Run("neither code nor error", func(t *testing.T) {
		ch := l.Expect("state-5")
		get(t, "/callback", url.Values{"state": {"state-5"}})
		if r := received(t, ch); !errors.Is(r.Err, signin.ErrAuthorization) {
			t.Fatalf("delivered %+v, want an error", r)
		}
	})
	t.Run("another path", func(t *testing.T) {
		ch := l.Expect("state-6")
		defer l.Forget("state-6")
		if status, _ := get(t, "/favicon.ico", url.Values{"code": {"c"}, "state": {"state-6"}}); status != http.StatusNotFound {
			t.Fatalf("status %d, want 404", status)
		}
		nothing(t, ch)
	})
}
