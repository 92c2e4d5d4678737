// Package serve runs Gatehouse's HTTP servers: Connect, gRPC (h2c) and plain
// HTTP on one listener, with health endpoints and graceful shutdown.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Limits every Gatehouse server applies, whatever sits behind it.
const (
	readHeaderTimeout = 5 * time.Second
	// BodyTimeout bounds how long a client may take to send a request's
	// body, counted from the end of its headers. Without it, a client that
	// sends a declared body a byte at a time holds a connection and a
	// goroutine for as long as it likes: even a request refused before its
	// body is read waits for the body, since the server reads what is
	// left of it before answering.
	BodyTimeout     = 10 * time.Second
	idleTimeout     = 120 * time.Second
	maxHeaderBytes  = 64 << 10
	shutdownTimeout = 10 * time.Second
)

// NewServer returns an http.Server for h that speaks HTTP/1.1 and cleartext
// HTTP/2 (so gRPC clients work without TLS inside the deployment), with
// header-size and slow-client limits set: headers within 5 s, a body
// within BodyTimeout.
func NewServer(h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           WithBodyDeadline(h, BodyTimeout),
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// ListenAndServe listens on addr and serves h until ctx is done; see Serve.
func ListenAndServe(ctx context.Context, logger *slog.Logger, name, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return Serve(ctx, logger, name, ln, h)
}

// Serve serves h on ln until ctx is done, then stops accepting connections and
// lets in-flight requests finish for up to ten seconds.
func Serve(ctx context.Context, logger *slog.Logger, name string, ln net.Listener, h http.Handler) error {
	srv := NewServer(h)
	srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.InfoContext(ctx, "listening", slog.String("server", name), slog.String("addr", ln.Addr().String()))

	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve: %w", name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: serve: %w", name, err)
	}
	logger.InfoContext(ctx, "stopped", slog.String("server", name))
	return nil
}

// ReadyFunc reports whether a dependency is reachable.
type ReadyFunc func(ctx context.Context) error

// HTTPReady is a ReadyFunc for a dependency that serves /readyz itself: it is
// ready when GET url answers 200.
func HTTPReady(client *http.Client, url string) ReadyFunc {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// readyTimeout bounds one /readyz probe.
const readyTimeout = 2 * time.Second

// MountHealth adds /healthz (the process is alive) and /readyz (every
// dependency answers) to mux. A failing dependency is logged, never echoed to
// the caller.
func MountHealth(mux *http.ServeMux, logger *slog.Logger, checks map[string]ReadyFunc) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		for name, check := range checks {
			if err := check(ctx); err != nil {
				logger.WarnContext(ctx, "not ready", slog.String("dependency", name), slog.Any("error", err))
				writeStatus(w, http.StatusServiceUnavailable, "unavailable: "+name)
				return
			}
		}
		writeStatus(w, http.StatusOK, "ready")
	})
}

func writeStatus(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body + "\n"))
}

// WithBodyDeadline gives every request d to deliver its body: a read
// deadline on the request's connection (its stream, over HTTP/2), lifted
// once the body has been read to its end, so that a long response, or a
// stream the server keeps open, is not cut off by it. Unlike
// http.Server.ReadTimeout, which stays in force over HTTP/1.1 until the
// response is written and cancels whatever is still running then.
func WithBodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			// A writer without deadlines (a test recorder): nothing to bound.
			h.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts its read deadline at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

// Read is called by one goroutine at a time, as every io.Reader.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.lifted && errors.Is(err, io.EOF) {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
