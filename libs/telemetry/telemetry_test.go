package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/gatehouse/gatehouse/libs/telemetry"
)

func newTelemetry(t *testing.T, cfg telemetry.Config, out io.Writer) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.New(t.Context(), cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]telemetry.Config{
		"no service name":   {},
		"unknown exporter":  {ServiceName: "x", Exporter: "zipkin"},
		"otlp without host": {ServiceName: "x", Exporter: telemetry.ExporterOTLP},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := telemetry.New(t.Context(), cfg, io.Discard); err == nil {
				t.Fatal("want error")
			}
		})
	}
}

// TestTracePropagates checks that a trace started by a client continues on
// the server (W3C traceparent) and that the server's logs carry its id.
func TestTracePropagates(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	server := newTelemetry(t, telemetry.Config{ServiceName: "server"}, io.Discard)
	client := newTelemetry(t, telemetry.Config{ServiceName: "client"}, io.Discard)
	logger := telemetry.NewLogger(&logs, "server", slog.LevelInfo)

	var serverTrace string
	h := server.Middleware("test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serverTrace = telemetry.TraceID(r.Context())
		logger.InfoContext(r.Context(), "handled")
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	ctx, span := client.Tracer("test").Start(t.Context(), "call")
	clientTrace := telemetry.TraceID(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := (&http.Client{Transport: client.Transport(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	span.End()

	if clientTrace == "" || serverTrace != clientTrace {
		t.Fatalf("trace not propagated: client %q server %q", clientTrace, serverTrace)
	}
	var rec map[string]any
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
		t.Fatalf("log is not JSON: %v: %s", err, logs.String())
	}
	if rec["trace_id"] != clientTrace || rec["service"] != "server" {
		t.Fatalf("log record lacks trace id or service: %v", rec)
	}
}

func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	tel := newTelemetry(t, telemetry.Config{ServiceName: "svc"}, io.Discard)
	h := tel.Middleware("op", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))

	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "http_server_request_duration") {
		t.Fatalf("metrics lack the HTTP server histogram:\n%s", rec.Body.String())
	}
}

func TestStdoutExporterWritesSpans(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	tel, err := telemetry.New(t.Context(), telemetry.Config{ServiceName: "svc", Exporter: telemetry.ExporterStdout}, &out)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("t").Start(t.Context(), "exported-span")
	span.End()
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "exported-span") {
		t.Fatalf("span not exported: %s", out.String())
	}
}

func TestAccessLogWritesOneLinePerCall(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := telemetry.NewLogger(&logs, "svc", slog.LevelInfo)
	handler := telemetry.AccessLog(logger)(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) {
		return nil, connect.NewError(connect.CodePermissionDenied, nil)
	})
	_, err := handler(t.Context(), connect.NewRequest(&emptypb.Empty{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("the interceptor changed the error: %v", err)
	}
	if !strings.Contains(logs.String(), `"code":"permission_denied"`) {
		t.Fatalf("log line: %s", logs.String())
	}
}

// TestEdgeMiddlewareStartsItsOwnTrace: at the public edge a client's
// traceparent must not decide our trace id, and its baggage must not pass.
func TestEdgeMiddlewareStartsItsOwnTrace(t *testing.T) {
	t.Parallel()
	tel := newTelemetry(t, telemetry.Config{ServiceName: "gateway"}, io.Discard)
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	var got, baggage string
	h := tel.EdgeMiddleware("edge", http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got = telemetry.TraceID(r.Context())
		baggage = r.Header.Get("Baggage")
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("traceparent", "00-"+clientTrace+"-00f067aa0ba902b7-01")
	req.Header.Set("baggage", "tenant=globex")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got == "" || got == clientTrace {
		t.Fatalf("edge trace id %q: must be new, not the client's", got)
	}
	if baggage != "" {
		t.Fatalf("client baggage passed the edge: %q", baggage)
	}
}
