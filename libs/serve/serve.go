// Package serve runs Gatehouse's HTTP servers: Connect, gRPC (h2c) and plain
// HTTP on one listener, with health endpoints and graceful shutdown.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Limits every Gatehouse server applies, whatever sits behind it.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	shutdownTimeout   = 10 * time.Second
)

// NewServer returns an http.Server for h that speaks HTTP/1.1 and cleartext
// HTTP/2 (so gRPC clients work without TLS inside the deployment), with
// header-size and slow-client limits set.
func NewServer(h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
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
