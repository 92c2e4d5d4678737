package signin

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// CallbackPath is the path of the demo clients' registered redirect URI
// (http://127.0.0.1/callback, any port: RFC 8252 section 7.3).
const CallbackPath = "/callback"

// ErrAuthorization is an error the authorization endpoint sent back to the
// redirect URI (RFC 6749 section 4.1.2.1).
var ErrAuthorization = errors.New("the authorization was refused")

// Redirect is what came back to the redirect URI for one authorization
// request: a code, or the error.
type Redirect struct {
	Code string
	Err  error
}

// Loopback receives authorization responses on a loopback redirect URI.
// Each authorization request registers its state first; a response is
// delivered only to the request whose state it carries, once. Anything else
// (an unknown or used state, another path) is refused and changes nothing.
type Loopback struct {
	server      *http.Server
	redirectURI string

	mu      sync.Mutex
	pending map[string]chan Redirect
}

// Listen starts a loopback receiver on 127.0.0.1 and the given port (0: any
// free port).
func Listen(ctx context.Context, port int) (*Loopback, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listen for the redirect: %w", err)
	}
	l := &Loopback{
		redirectURI: "http://" + ln.Addr().String() + CallbackPath,
		pending:     map[string]chan Redirect{},
	}
	l.server = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.server.Serve(ln) }()
	return l, nil
}

// RedirectURI is the receiver's redirect URI,
// http://127.0.0.1:PORT/callback.
func (l *Loopback) RedirectURI() string { return l.redirectURI }

// Expect registers an authorization request's state and returns the channel
// its response will arrive on.
func (l *Loopback) Expect(state string) <-chan Redirect {
	ch := make(chan Redirect, 1)
	l.mu.Lock()
	l.pending[state] = ch
	l.mu.Unlock()
	return ch
}

// Forget drops a state whose response is no longer awaited.
func (l *Loopback) Forget(state string) {
	l.mu.Lock()
	delete(l.pending, state)
	l.mu.Unlock()
}

// ServeHTTP receives the browser's redirect.
func (l *Loopback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != CallbackPath || r.Method != http.MethodGet {
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
		ch <- Redirect{Err: fmt.Errorf("%w: %s: %s", ErrAuthorization, e, q.Get("error_description"))}
		_, _ = fmt.Fprint(w, page("sign-in-failed", "Sign-in failed. The terminal says why."))
		return
	}
	if q.Get("code") == "" {
		ch <- Redirect{Err: fmt.Errorf("%w: the response carries neither a code nor an error", ErrAuthorization)}
		_, _ = fmt.Fprint(w, page("sign-in-failed", "Sign-in failed. The terminal says why."))
		return
	}
	ch <- Redirect{Code: q.Get("code")}
	_, _ = fmt.Fprint(w, page("signed-in", "Signed in. You can close this tab and return to the terminal."))
}

// page is the small HTML page the browser shows after the redirect; id
// marks the outcome for browser tests.
func page(id, text string) string {
	return `<!doctype html><meta charset="utf-8"><title>Gatehouse demo sign-in</title><p id="` + id + `">` + html.EscapeString(text) + `</p>`
}

// Close stops the receiver.
func (l *Loopback) Close(ctx context.Context) error {
	return l.server.Shutdown(ctx)
}

// closeTimeout bounds the receiver's shutdown in WithLoopback.
const closeTimeout = 5 * time.Second

// WithLoopback listens on port (0: any), runs f with the receiver, and
// stops the receiver when f returns, also when ctx has ended; the error
// joins f's and the shutdown's.
func WithLoopback(ctx context.Context, port int, f func(*Loopback) error) (err error) {
	l, err := Listen(ctx, port)
	if err != nil {
		return err
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		err = errors.Join(err, l.Close(shutdownCtx))
	}()
	return f(l)
}
