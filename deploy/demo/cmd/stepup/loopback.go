package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"sync"
	"time"
)

// callbackPath is the path of invoice-web's registered redirect URI
// (http://127.0.0.1/callback, any port: RFC 8252 section 7.3).
const callbackPath = "/callback"

// errAuthorization is an error the authorization endpoint sent back to the
// redirect URI (RFC 6749 section 4.1.2.1).
var errAuthorization = errors.New("the authorization was refused")

// callbackResult is what came back to the redirect URI for one
// authorization request.
type callbackResult struct {
	code string
	err  error
}

// loopback receives authorization responses on a loopback redirect URI.
// Each authorization request registers its state first; a response is
// delivered only to the request whose state it carries, once. Anything else
// (an unknown or used state, another path) is refused and changes nothing.
type loopback struct {
	server      *http.Server
	redirectURI string

	mu      sync.Mutex
	pending map[string]chan callbackResult
}

// listenLoopback starts a loopback receiver on 127.0.0.1 and the given port
// (0: any free port).
func listenLoopback(ctx context.Context, port int) (*loopback, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("listen for the redirect: %w", err)
	}
	l := &loopback{
		redirectURI: "http://" + ln.Addr().String() + callbackPath,
		pending:     map[string]chan callbackResult{},
	}
	l.server = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.server.Serve(ln) }()
	return l, nil
}

// expect registers an authorization request's state and returns the channel
// its response will arrive on.
func (l *loopback) expect(state string) <-chan callbackResult {
	ch := make(chan callbackResult, 1)
	l.mu.Lock()
	l.pending[state] = ch
	l.mu.Unlock()
	return ch
}

// forget drops a state whose response is no longer awaited.
func (l *loopback) forget(state string) {
	l.mu.Lock()
	delete(l.pending, state)
	l.mu.Unlock()
}

// ServeHTTP receives the browser's redirect.
func (l *loopback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != callbackPath || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	l.mu.Lock()
	ch, ok := l.pending[q.Get("state")]
	delete(l.pending, q.Get("state"))
	l.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprint(w, page("sign-in-unexpected", "This sign-in response was not expected (unknown or already used state). Nothing was done."))
		return
	}
	if e := q.Get("error"); e != "" {
		ch <- callbackResult{err: fmt.Errorf("%w: %s: %s", errAuthorization, e, q.Get("error_description"))}
		_, _ = fmt.Fprint(w, page("sign-in-failed", "Sign-in failed. The terminal says why."))
		return
	}
	if q.Get("code") == "" {
		ch <- callbackResult{err: fmt.Errorf("%w: the response carries neither a code nor an error", errAuthorization)}
		_, _ = fmt.Fprint(w, page("sign-in-failed", "Sign-in failed. The terminal says why."))
		return
	}
	ch <- callbackResult{code: q.Get("code")}
	_, _ = fmt.Fprint(w, page("signed-in", "Signed in. You can close this tab and return to the terminal."))
}

// page is the small HTML page the browser shows after the redirect; id
// marks the outcome for browser tests.
func page(id, text string) string {
	return `<!doctype html><meta charset="utf-8"><title>stepup</title><p id="` + id + `">` + html.EscapeString(text) + `</p>`
}

// close stops the receiver.
func (l *loopback) close(ctx context.Context) error {
	return l.server.Shutdown(ctx)
}
