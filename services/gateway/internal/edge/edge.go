// Package edge is the gateway's request path: bound the request, authenticate
// the bearer token and check it against the issuer's revocations, find the
// route, ask the PDP (or a recent answer of it), and only then forward the
// request upstream with the verified identity. Every failure denies, in the
// Connect error format of the client's protocol.
package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/decisioncache"
	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// Verifier verifies bearer tokens (a verified-token cache in front of
// libs/accesstoken's verifier).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// Revocations is what the gateway knows of the issuer's revocations (a
// libs/revocation Set kept current by the feed).
type Revocations interface {
	// Revoked reports whether the issuer revoked the verified token c.
	Revoked(c *accesstoken.Claims) bool
	// Staleness is how long before now the feed was last heard from: the
	// age of what Revoked knows. Before the feed was first heard, longer
	// than any limit.
	Staleness(now time.Time) time.Duration
}

// Limiter is a set of token buckets (see package ratelimit).
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Decider asks the PDP (a circuit breaker in front of the enforcement
// SDK's client).
type Decider interface {
	Check(ctx context.Context, req *authzv1.CheckRequest) (enforce.Decision, error)
}

// Defaults of Config.
const (
	DefaultMaxBodyBytes          = 1 << 20
	DefaultMaxHeaderBytes        = 32 << 10
	DefaultMaxAuthorizationBytes = 8 << 10
	DefaultMaxStaleness          = 30 * time.Second
)

// Config configures a Handler.
type Config struct {
	Routes   *route.Table
	Verifier Verifier
	// Revocations is checked on every request, after verification
	// (cached or not). Required.
	Revocations Revocations
	// MaxStaleness is how stale Revocations may be before requests to
	// sensitive routes fail closed (DefaultMaxStaleness when zero).
	MaxStaleness time.Duration
	PDP          Decider
	// Decisions holds recent PDP answers, for reuse and for stale-allow;
	// nil keeps none.
	Decisions *decisioncache.Cache
	// Upstreams maps upstream names to base URLs.
	Upstreams map[string]*url.URL
	// Transport carries upstream requests (cleartext HTTP/2, so gRPC works).
	Transport http.RoundTripper
	// MaxBodyBytes bounds request bodies (DefaultMaxBodyBytes when zero).
	MaxBodyBytes int64
	// MaxHeaderBytes bounds the request's header fields, names and values
	// (DefaultMaxHeaderBytes when zero).
	MaxHeaderBytes int
	// MaxAuthorizationBytes bounds the Authorization header, checked
	// before any token work (DefaultMaxAuthorizationBytes when zero).
	MaxAuthorizationBytes int
	// SourceLimit limits requests per source address, before any token
	// work; ClientLimit per verified client_id. Nil means unlimited.
	SourceLimit Limiter
	ClientLimit Limiter
	Logger      *slog.Logger
	Now         func() time.Time
	// Meter records the edge's metrics; nil records nothing.
	Meter metric.Meter
}

// Handler is the gateway's edge handler.
type Handler struct {
	cfg     Config
	errors  *connect.ErrorWriter
	proxies map[string]*httputil.ReverseProxy

	revocationDenials metric.Int64Counter
	staleAllows       metric.Int64Counter
}

// NewHandler returns the edge handler for cfg.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Routes == nil || cfg.Verifier == nil || cfg.Revocations == nil || cfg.PDP == nil || cfg.Logger == nil || cfg.Transport == nil {
		return nil, errors.New("edge: routes, verifier, revocations, pdp, transport and logger are required")
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxHeaderBytes < 0 || cfg.MaxAuthorizationBytes < 0 || cfg.MaxStaleness < 0 {
		return nil, errors.New("edge: negative size or staleness limit")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxAuthorizationBytes == 0 {
		cfg.MaxAuthorizationBytes = DefaultMaxAuthorizationBytes
	}
	if cfg.MaxStaleness == 0 {
		cfg.MaxStaleness = DefaultMaxStaleness
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Meter == nil {
		cfg.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	h := &Handler{cfg: cfg, errors: connect.NewErrorWriter(), proxies: map[string]*httputil.ReverseProxy{}}
	for name, u := range cfg.Upstreams {
		h.proxies[name] = h.newProxy(u)
	}
	for _, r := range cfg.Routes.Routes() {
		if h.proxies[r.Upstream] == nil {
			return nil, errors.New("edge: route " + r.Path + " names upstream " + r.Upstream + " without a URL")
		}
	}
	if err := h.instrument(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Handler) instrument() error {
	m := h.cfg.Meter
	var err error
	if h.revocationDenials, err = m.Int64Counter("gatehouse.gateway.revocation.denials",
		metric.WithDescription("Requests denied on revocation grounds, by reason (token_revoked, revocation_feed_stale).")); err != nil {
		return fmt.Errorf("edge: counter: %w", err)
	}
	if h.staleAllows, err = m.Int64Counter("gatehouse.gateway.stale_allows",
		metric.WithDescription("Requests to read-only, low-risk routes allowed from a cached ALLOW while the PDP was unavailable.")); err != nil {
		return fmt.Errorf("edge: counter: %w", err)
	}
	return nil
}

var (
	deniedRevoked = metric.WithAttributes(attribute.String("reason", reason.TokenRevoked))
	deniedStale   = metric.WithAttributes(attribute.String("reason", reason.RevocationFeedStale))
)

func (h *Handler) newProxy(target *url.URL) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		// Identity headers are set here, on the outgoing request, after the
		// proxy removed hop-by-hop headers: a client naming them in its
		// Connection header cannot have them stripped.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			for _, name := range enforce.IdentityHeaders() {
				pr.Out.Header.Del(name)
			}
			if claims, ok := enforce.ClaimsFrom(pr.In.Context()); ok {
				pr.Out.Header.Set(enforce.HeaderSubject, claims.Subject)
				pr.Out.Header.Set(enforce.HeaderTenant, claims.Tenant)
				pr.Out.Header.Set(enforce.HeaderClientID, claims.ClientID)
			}
			if f, ok := forwardedFrom(pr.In.Context()); ok {
				pr.Out.Header.Set(enforce.HeaderRequestID, f.requestID)
			}
		},
		Transport: h.cfg.Transport,
		// Flush at once so streaming RPCs and gRPC trailers pass unbuffered.
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(h.cfg.Logger.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				h.writeError(w, r, h.bodyTooLarge(r.Context()))
				return
			}
			// The client's fault, not the upstream's: its body broke off or
			// did not arrive within the server's body deadline
			// (libs/serve).
			if f, ok := forwardedFrom(r.Context()); ok && f.body.failed.Load() {
				h.writeError(w, r, enforce.Error(r.Context(), connect.CodeInvalidArgument, reason.InvalidRequest,
					"the request body was not received in full in time"))
				return
			}
			h.cfg.Logger.WarnContext(r.Context(), "upstream failed", slog.String("path", r.URL.Path), slog.Any("error", err))
			h.writeError(w, r, enforce.Unavailable(r.Context(), reason.UpstreamUnavailable))
		},
	}
}

// clientBody remembers whether reading the client's request body failed,
// so that the proxy's error handler tells the client's fault from the
// upstream's: when the body breaks off, the transport may report the
// request's cancellation rather than the read error.
type clientBody struct {
	io.ReadCloser
	failed atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.failed.Store(true)
	}
	return n, err
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.cfg.Now()
	ctx := r.Context()
	// Identity headers are the gateway's alone: drop whatever the client sent.
	for _, name := range enforce.IdentityHeaders() {
		r.Header.Del(name)
	}
	// The request id is always ours: a client's id is logged beside it, but
	// it never names our request in logs and audit events.
	requestID := enforce.NewRequestID()
	w.Header().Set(enforce.HeaderRequestID, requestID)
	log := h.cfg.Logger.With(slog.String("request_id", requestID), slog.String("path", r.URL.Path))
	if clientID := r.Header.Get(enforce.HeaderRequestID); enforce.ValidRequestID(clientID) {
		log = log.With(slog.String("client_request_id", clientID))
	}
	r.Header.Del(enforce.HeaderRequestID)

	// The source address is the TCP peer, never a forwarded-for header a
	// client could rotate to get a fresh bucket.
	if h.limited(w, r, log, start, h.cfg.SourceLimit, enforce.RemoteIP(r.RemoteAddr)) {
		return
	}
	if err := h.checkSizes(r); err != nil {
		h.deny(w, r, log, start, err)
		return
	}
	raw, ok := enforce.BearerToken(r.Header)
	if !ok {
		h.deny(w, r, log, start, enforce.Unauthenticated(ctx, reason.MissingToken))
		return
	}
	claims, err := h.cfg.Verifier.Verify(ctx, raw)
	if errors.Is(err, accesstoken.ErrKeysUnavailable) {
		log.ErrorContext(ctx, "cannot verify tokens: issuer keys unavailable", slog.Any("error", err))
		h.deny(w, r, log, start, enforce.Unavailable(ctx, reason.IssuerUnavailable))
		return
	}
	if err != nil {
		log.InfoContext(ctx, "token rejected", slog.Any("error", err))
		h.deny(w, r, log, start, enforce.Unauthenticated(ctx, reason.InvalidToken))
		return
	}
	log = log.With(slog.String("subject", claims.Subject), slog.String("tenant", claims.Tenant), slog.String("client_id", claims.ClientID))
	// Every request, whether its token was verified now or found in the
	// cache: a revocation takes effect on the next request.
	if h.cfg.Revocations.Revoked(claims) {
		h.revocationDenials.Add(ctx, 1, deniedRevoked)
		log.InfoContext(ctx, "token revoked", slog.String("jti", claims.ID))
		h.deny(w, r, log, start, enforce.Unauthenticated(ctx, reason.TokenRevoked))
		return
	}
	if h.limited(w, r, log, start, h.cfg.ClientLimit, claims.ClientID) {
		return
	}

	rt, ok := h.cfg.Routes.Lookup(r.URL.Path)
	if !ok {
		h.deny(w, r, log, start, enforce.Error(ctx, connect.CodePermissionDenied, reason.RouteNotConfigured, "no route is configured for this path"))
		return
	}
	if !rt.Allows(r.Method) {
		w.Header().Set("Allow", strings.Join(rt.Methods, ", "))
		h.deny(w, r, log, start, enforce.Error(ctx, connect.CodeUnimplemented, reason.InvalidRequest, "method not allowed for this procedure"))
		return
	}
	if rt.Sensitive() {
		if stale := h.cfg.Revocations.Staleness(start); stale > h.cfg.MaxStaleness {
			h.revocationDenials.Add(ctx, 1, deniedStale)
			log.WarnContext(ctx, "revocation feed stale: denying a sensitive route", slog.Duration("staleness", stale),
				slog.Duration("max_staleness", h.cfg.MaxStaleness))
			h.deny(w, r, log, start, enforce.Error(ctx, connect.CodeUnavailable, reason.RevocationFeedStale,
				"revocation data is stale; this route is unavailable until it is current again"))
			return
		}
	}

	decision, source, err := h.decide(ctx, log, rt, &authzv1.CheckRequest{
		Principal: enforce.Principal(claims),
		Action:    rt.Action,
		Resource:  &authzv1.Resource{Type: rt.Resource.Type, Tenant: claims.Tenant},
		Context:   &authzv1.RequestContext{RequestId: requestID, Time: timestamppb.New(start), SourceIp: enforce.RemoteIP(r.RemoteAddr)},
	})
	if err != nil {
		log.ErrorContext(ctx, "pdp unavailable: denying", slog.Any("error", err))
		h.deny(w, r, log, start, enforce.Unavailable(ctx, reason.PDPUnavailable))
		return
	}
	log = log.With(slog.String("decision_id", decision.DecisionID), slog.String("policy_version", decision.PolicyVersion),
		slog.String("decision_source", source))
	if !decision.Allowed() {
		h.deny(w, r, log, start, enforce.Denied(ctx, decision))
		return
	}

	f := &forwarded{requestID: requestID, body: clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)}}
	r = r.WithContext(context.WithValue(enforce.WithClaims(ctx, claims), forwardedKey{}, f))
	r.Body = &f.body
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.proxies[rt.Upstream].ServeHTTP(sw, r)
	log.InfoContext(ctx, "request", slog.String("action", rt.Action), slog.String("reason_code", decision.ReasonCode),
		slog.Int("status", sw.status), slog.Duration("latency", h.cfg.Now().Sub(start)))
}

// Where a decision came from, for the access log.
const (
	sourcePDP   = "pdp"
	sourceCache = "cache"
	sourceStale = "stale_allow"
)

// decide answers req from the decision cache, else from the PDP (and
// caches the answer). When the PDP is unavailable, a read-only, low-risk
// route may be allowed from a recent ALLOW if stale-allow is enabled;
// every other route is denied.
func (h *Handler) decide(ctx context.Context, log *slog.Logger, rt route.Route, req *authzv1.CheckRequest) (enforce.Decision, string, error) {
	key := decisioncache.KeyOf(req)
	if d, ok := h.cfg.Decisions.Get(ctx, key); ok {
		return d, sourceCache, nil
	}
	d, err := h.cfg.PDP.Check(ctx, req)
	if err == nil {
		h.cfg.Decisions.Put(key, d)
		return d, sourcePDP, nil
	}
	if rt.StaleAllowEligible() {
		if d, age, ok := h.cfg.Decisions.StaleAllow(key); ok {
			h.staleAllows.Add(ctx, 1)
			log.WarnContext(ctx, "pdp unavailable: allowing a read-only, low-risk route from a cached decision",
				slog.Duration("decision_age", age), slog.Any("error", err))
			return d, sourceStale, nil
		}
	}
	return enforce.Decision{}, "", err
}

// checkSizes bounds the request before any token work: its header fields,
// its declared body, and the Authorization header.
func (h *Handler) checkSizes(r *http.Request) *connect.Error {
	ctx := r.Context()
	size := 0
	for name, values := range r.Header {
		for _, v := range values {
			size += len(name) + len(v) + 4 // ": " and CRLF, as on the wire
		}
	}
	if size > h.cfg.MaxHeaderBytes {
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest,
			fmt.Sprintf("request header fields larger than %d bytes", h.cfg.MaxHeaderBytes))
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return h.bodyTooLarge(ctx)
	}
	auth := 0
	for _, v := range r.Header.Values("Authorization") {
		auth += len(v)
	}
	if auth > h.cfg.MaxAuthorizationBytes {
		return enforce.Unauthenticated(ctx, reason.InvalidToken)
	}
	return nil
}

func (h *Handler) bodyTooLarge(ctx context.Context) *connect.Error {
	return enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest,
		fmt.Sprintf("request body larger than %d bytes", h.cfg.MaxBodyBytes))
}

// limited answers 429 with Retry-After when key's bucket is empty.
func (h *Handler) limited(w http.ResponseWriter, r *http.Request, log *slog.Logger, start time.Time, l Limiter, key string) bool {
	if l == nil {
		return false
	}
	ok, wait := l.Allow(key)
	if ok {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(ratelimit.RetryAfterSeconds(wait)))
	h.deny(w, r, log, start, enforce.Error(r.Context(), connect.CodeResourceExhausted, reason.RateLimited, "too many requests; retry later"))
	return true
}

func (h *Handler) deny(w http.ResponseWriter, r *http.Request, log *slog.Logger, start time.Time, err *connect.Error) {
	log.InfoContext(r.Context(), "denied", slog.String("code", err.Code().String()), slog.String("reason_code", enforce.ReasonOf(err)),
		slog.Duration("latency", h.cfg.Now().Sub(start)))
	h.writeError(w, r, err)
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if werr := h.errors.Write(w, r, err); werr != nil {
		h.cfg.Logger.DebugContext(r.Context(), "writing error response failed", slog.Any("error", werr))
	}
}

// forwarded is what the proxy's hooks need of a request it forwards, in
// one context value: the request id (Rewrite sends it upstream) and the
// body (the error handler, which gets the outgoing request, tells a body
// that broke off from a failing upstream).
type forwarded struct {
	requestID string
	body      clientBody
}

type forwardedKey struct{}

func forwardedFrom(ctx context.Context) (*forwarded, bool) {
	f, ok := ctx.Value(forwardedKey{}).(*forwarded)
	return f, ok
}

// statusWriter records the status code for the access log. It keeps
// http.ResponseController working (Flush, trailers) through Unwrap.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
