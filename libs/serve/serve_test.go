package serve_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse/gatehouse/libs/serve"
)

func TestHealthAndShutdown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var dbErr atomic.Pointer[error]
	mux := http.NewServeMux()
	serve.MountHealth(mux, logger, map[string]serve.ReadyFunc{
		"db": func(context.Context) error {
			if e := dbErr.Load(); e != nil {
				return *e
			}
			return nil
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve.Serve(ctx, logger, "test", ln, mux) }()

	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz: %d", code)
	}
	e := errors.New("password=hunter2 refused")
	dbErr.Store(&e)
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with failing dep: %d", code)
	}
	if strings.Contains(body, "hunter2") {
		t.Fatalf("readyz leaked the dependency error: %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v after cancel", err)
	}
}

func TestHTTPReady(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer srv.Close()
	ready := serve.HTTPReady(srv.Client(), srv.URL+"/readyz")
	if err := ready(t.Context()); err != nil {
		t.Fatalf("ready dependency: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := ready(t.Context()); err == nil {
		t.Fatal("a 503 dependency reported ready")
	}
	if err := serve.HTTPReady(srv.Client(), "http://127.0.0.1:1/readyz")(t.Context()); err == nil {
		t.Fatal("an unreachable dependency reported ready")
	}
}
