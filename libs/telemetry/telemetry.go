// Package telemetry wires OpenTelemetry tracing and metrics and structured
// JSON logging for one Gatehouse service. Nothing is global: each service
// (and each service inside the one-process demo) owns its providers.
package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Exporter names accepted in Config.Exporter.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout"
	ExporterOTLP   = "otlp"
)

// Config selects where traces go. Spans are always created (so trace ids
// reach logs and error bodies); they are only exported when an exporter is set.
type Config struct {
	// ServiceName becomes the service.name resource attribute.
	ServiceName string
	// Exporter is "none" (default), "stdout" or "otlp" (OTLP over HTTP).
	Exporter string
	// OTLPEndpoint is host:port of an OTLP/HTTP collector, for Exporter "otlp".
	OTLPEndpoint string
	// OTLPInsecure sends OTLP without TLS (inside a private network only).
	OTLPInsecure bool
}

// RegisterFlags binds the exporter settings to fs as -otel-exporter,
// -otel-endpoint and -otel-insecure (the same flags in every service).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Exporter, "otel-exporter", ExporterNone, "trace exporter: none, stdout or otlp")
	fs.StringVar(&c.OTLPEndpoint, "otel-endpoint", "", "OTLP/HTTP collector host:port")
	fs.BoolVar(&c.OTLPInsecure, "otel-insecure", false, "send OTLP without TLS")
}

// Telemetry holds one service's tracer and meter providers and the propagator
// that carries W3C trace context across Connect and HTTP calls.
type Telemetry struct {
	tracerProvider *sdktrace.TracerProvider
	meterProvider  *sdkmetric.MeterProvider
	propagator     propagation.TextMapPropagator
	registry       *prometheus.Registry
}

// New builds the providers for cfg. traceOut receives spans when
// cfg.Exporter is "stdout".
func New(ctx context.Context, cfg Config, traceOut io.Writer) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry: service name is required")
	}
	res := resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName))

	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	}
	switch cfg.Exporter {
	case "", ExporterNone:
		// Nothing would ever read a recorded span: record none. Spans still
		// get trace and span ids, so logs, errors and audit events carry a
		// trace_id and the W3C context still travels (unsampled); only the
		// attributes and events nobody exports are not built. On the PDP's
		// hot path that is a measurable share of a decision.
		opts[1] = sdktrace.WithSampler(sdktrace.NeverSample())
	case ExporterStdout:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(traceOut))
		if err != nil {
			return nil, fmt.Errorf("telemetry: stdout exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	case ExporterOTLP:
		if cfg.OTLPEndpoint == "" {
			return nil, errors.New("telemetry: exporter otlp needs an endpoint")
		}
		httpOpts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.OTLPInsecure {
			httpOpts = append(httpOpts, otlptracehttp.WithInsecure())
		}
		exp, err := otlptracehttp.New(ctx, httpOpts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	default:
		return nil, fmt.Errorf("telemetry: unknown exporter %q (want none, stdout or otlp)", cfg.Exporter)
	}

	registry := prometheus.NewRegistry()
	promExp, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return &Telemetry{
		tracerProvider: sdktrace.NewTracerProvider(opts...),
		meterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)),
		propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:       registry,
	}, nil
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tracerProvider.Shutdown(ctx), t.meterProvider.Shutdown(ctx))
}

// TracerProvider returns the service's tracer provider.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracerProvider }

// Tracer returns a named tracer of the service.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.tracerProvider.Tracer(name) }

// Propagator returns the W3C trace-context propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.propagator }

// MeterProvider returns the service's meter provider (exported on /metrics).
func (t *Telemetry) MeterProvider() *sdkmetric.MeterProvider { return t.meterProvider }

// MetricsHandler serves the service's metrics in Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// ConnectInterceptor traces and measures Connect calls, server or client
// side; opts add to (or override) the defaults, e.g. otelconnect.WithoutMetrics
// for a handler that measures itself.
func (t *Telemetry) ConnectInterceptor(opts ...otelconnect.Option) (*otelconnect.Interceptor, error) {
	return otelconnect.NewInterceptor(append([]otelconnect.Option{
		otelconnect.WithTracerProvider(t.tracerProvider),
		otelconnect.WithMeterProvider(t.meterProvider),
		otelconnect.WithPropagator(t.propagator),
		otelconnect.WithTrustRemote(),
	}, opts...)...)
}

// Middleware starts a server span for every HTTP request (continuing the
// caller's W3C trace context) and records HTTP metrics.
func (t *Telemetry) Middleware(operation string, h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, operation,
		otelhttp.WithTracerProvider(t.tracerProvider),
		otelhttp.WithMeterProvider(t.meterProvider),
		otelhttp.WithPropagators(t.propagator),
	)
}

// EdgeMiddleware is Middleware for a public entry point: a client's
// traceparent does not become the parent of our trace (it is kept as a span
// link), and client-supplied baggage is dropped, so outsiders can neither
// choose the trace ids that logs, errors and audit events carry nor inject
// baggage that travels to every service.
func (t *Telemetry) EdgeMiddleware(operation string, h http.Handler) http.Handler {
	traced := otelhttp.NewHandler(h, operation,
		otelhttp.WithTracerProvider(t.tracerProvider),
		otelhttp.WithMeterProvider(t.meterProvider),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Baggage")
		traced.ServeHTTP(w, r)
	})
}

// Transport wraps base so outgoing HTTP calls carry the trace context.
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.tracerProvider),
		otelhttp.WithMeterProvider(t.meterProvider),
		otelhttp.WithPropagators(t.propagator),
	)
}

// TraceID returns the trace id of the span in ctx, or "" when there is none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// NewLogger returns a JSON logger for service that adds trace_id and span_id
// to every record logged with a traced context.
func NewLogger(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(traceHandler{h}).With(slog.String("service", service))
}

// traceHandler decorates records with the trace context of their context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
