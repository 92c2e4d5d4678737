// Package edge is the gateway's request path: authenticate the bearer token,
// find the route, ask the PDP, and only then forward the request upstream
// with the verified identity. Every failure denies, in the Connect error
// format of the client's protocol.
package edge

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// Verifier verifies bearer tokens.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// Limiter is a set of token buckets (see package ratelimit).
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Decider asks the PDP.
type Decider interface {
	Check(ctx context.Context, req *authzv1.CheckRequest) (enforce.Decision, error)
}

// Config configures a Handler.
type Config struct {
	Routes   *route.Table
	Verifier Verifier
	PDP      Decider
	// Upstreams maps upstream names to base URLs.
	Upstreams map[string]*url.URL
	// Transport carries upstream requests (cleartext HTTP/2, so gRPC works).
	Transport http.RoundTripper
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// SourceLimit limits requests per source address, before any token
	// work; ClientLimit per verified client_id. Nil means unlimited.
	SourceLimit Limiter
	ClientLimit Limiter
	Logger      *slog.Logger
	Now         func() time.Time
}

// Handler is the gateway's edge handler.
type Handler struct {
	cfg     Config
	errors  *connect.ErrorWriter
	proxies map[string]*httputil.ReverseProxy
}

// NewHandler returns the edge handler for cfg.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Routes == nil || cfg.Verifier == nil || cfg.PDP == nil || cfg.Logger == nil || cfg.Transport == nil {
		return nil, errors.New("edge: routes, verifier, pdp, transport and logger are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, errors: connect.NewErrorWriter(), proxies: map[string]*httputil.ReverseProxy{}}
	for name, u := range cfg.Upstreams {
		h.proxies[name] = h.newProxy(u)
	}
	for _, p := range cfg.Routes.Paths() {
		r, _ := cfg.Routes.Lookup(p)
		if h.proxies[r.Upstream] == nil {
			return nil, errors.New("edge: route " + p + " names upstream " + r.Upstream + " without a URL")
		}
	}
	return h, nil
}

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
			if id, ok := requestIDFrom(pr.In.Context()); ok {
				pr.Out.Header.Set(enforce.HeaderRequestID, id)
			}
		},
		Transport: h.cfg.Transport,
		// Flush at once so streaming RPCs and gRPC trailers pass unbuffered.
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(h.cfg.Logger.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.cfg.Logger.WarnContext(r.Context(), "upstream failed", slog.String("path", r.URL.Path), slog.Any("error", err))
			h.writeError(w, r, enforce.Unavailable(r.Context(), reason.UpstreamUnavailable))
		},
	}
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

	decision, err := h.cfg.PDP.Check(ctx, &authzv1.CheckRequest{
		Principal: enforce.Principal(claims),
		Action:    rt.Action,
		Resource:  &authzv1.Resource{Type: rt.ResourceType, Tenant: claims.Tenant},
		Context:   &authzv1.RequestContext{RequestId: requestID, Time: timestamppb.New(start), SourceIp: enforce.RemoteIP(r.RemoteAddr)},
	})
	if err != nil {
		log.ErrorContext(ctx, "pdp unavailable: denying", slog.Any("error", err))
		h.deny(w, r, log, start, enforce.Unavailable(ctx, reason.PDPUnavailable))
		return
	}
	log = log.With(slog.String("decision_id", decision.DecisionID), slog.String("policy_version", decision.PolicyVersion))
	if !decision.Allowed() {
		h.deny(w, r, log, start, enforce.Denied(ctx, decision))
		return
	}

	r = r.WithContext(withRequestID(enforce.WithClaims(ctx, claims), requestID))
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.proxies[rt.Upstream].ServeHTTP(sw, r)
	log.InfoContext(ctx, "request", slog.String("action", rt.Action), slog.String("reason_code", decision.ReasonCode),
		slog.Int("status", sw.status), slog.Duration("latency", h.cfg.Now().Sub(start)))
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

type requestIDKey struct{}

func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(requestIDKey{}).(string)
	return id, ok
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
