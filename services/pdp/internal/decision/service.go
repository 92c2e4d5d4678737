package decision

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
)

// evaluationFailedMessage is all a caller learns about a failed evaluation;
// the cause is logged under the decision id.
const evaluationFailedMessage = "the policy could not be evaluated; see the PDP log for this decision_id"

// Options are a Service's collaborators. Router, Audit and Timeout are
// required.
type Options struct {
	// Router picks the evaluator that decides each request (and, during a
	// rollout, the one to compare with).
	Router Router
	// Shadower evaluates the other bundle of a rollout off the caller's
	// path; nil evaluates no shadow.
	Shadower Shadower
	// Audit receives every decision as a TypeDecision event.
	Audit audit.Emitter
	// Cache, when set, remembers decisions by request and policy version.
	Cache *Cache
	// Timeout bounds one evaluation; a slower one is Indeterminate.
	Timeout time.Duration
	// Logger receives evaluation failures (and each decision at debug
	// level); nil discards.
	Logger *slog.Logger
	// Meter records the metrics listed in docs/pdp.md; nil records none.
	Meter metric.Meter
	// Tracer starts a span per decision; nil starts none.
	Tracer trace.Tracer
}

// Service decides Requests. It normalizes the input, finds the decision in
// its cache or evaluates it within a deadline, stamps the answer with a
// decision id, and records every decision in the audit log, metrics and a
// span.
type Service struct {
	router   Router
	shadower Shadower
	audit    audit.Emitter
	cache    *Cache
	timeout  time.Duration
	logger   *slog.Logger
	tracer   trace.Tracer

	attrSets  sync.Map // attrKey -> metric.MeasurementOption
	attrCount atomic.Int64

	decisions    metric.Int64Counter
	latency      metric.Float64Histogram
	cacheLookups metric.Int64Counter
	auditErrors  metric.Int64Counter
}

// NewService returns a Service with opts.
func NewService(opts Options) (*Service, error) {
	switch {
	case opts.Router == nil:
		return nil, errors.New("decision: a router is required")
	case opts.Audit == nil:
		return nil, errors.New("decision: an audit emitter is required")
	case opts.Timeout <= 0:
		return nil, fmt.Errorf("decision: evaluation timeout must be positive, got %s", opts.Timeout)
	}
	s := &Service{
		router: opts.Router, shadower: opts.Shadower, audit: opts.Audit, cache: opts.Cache,
		timeout: opts.Timeout, logger: opts.Logger, tracer: opts.Tracer,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.tracer == nil {
		s.tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if err := s.instrument(opts.Meter); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) instrument(meter metric.Meter) error {
	if meter == nil {
		meter = metricNoop()
	}
	var err error
	if s.decisions, err = meter.Int64Counter("gatehouse.pdp.decisions",
		metric.WithDescription("Decisions made, by decision state, reason code and deciding role (active or candidate).")); err != nil {
		return fmt.Errorf("decision: counter: %w", err)
	}
	if s.latency, err = meter.Float64Histogram("gatehouse.pdp.decision.duration",
		metric.WithDescription("Time to decide one request, validation, cache and evaluation included."),
		metric.WithUnit("s"),
		// Decisions take microseconds (cache hits) to a few milliseconds;
		// the last bucket is the default eval-timeout.
		metric.WithExplicitBucketBoundaries(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)); err != nil {
		return fmt.Errorf("decision: histogram: %w", err)
	}
	if s.cacheLookups, err = meter.Int64Counter("gatehouse.pdp.cache.lookups",
		metric.WithDescription("Decision cache lookups, by result (hit or miss); hit rate = hit / (hit + miss).")); err != nil {
		return fmt.Errorf("decision: counter: %w", err)
	}
	if s.auditErrors, err = meter.Int64Counter("gatehouse.pdp.decision_log.errors",
		metric.WithDescription("Decisions whose audit event could not be queued (the recorder was closed or refused the event).")); err != nil {
		return fmt.Errorf("decision: counter: %w", err)
	}
	return nil
}

// attrKey names one metric attribute set of decisions.
type attrKey struct {
	state  State
	reason string
	role   string
}

// maxAttrSets bounds the memoized attribute sets: reason codes come from
// the policy, so a bundle could in principle invent many; past the bound
// sets are built per call.
const maxAttrSets = 256

// attrs returns the metric attributes of a decision, built once per
// (state, reason, role): the hot path records without allocating them.
func (s *Service) attrs(state State, reasonCode, role string) metric.MeasurementOption {
	k := attrKey{state, reasonCode, role}
	if v, ok := s.attrSets.Load(k); ok {
		return v.(metric.MeasurementOption)
	}
	opt := metric.WithAttributes(
		attribute.String("decision", state.String()),
		attribute.String("reason_code", reasonCode),
		attribute.String("decided_by", role),
	)
	if s.attrCount.Load() < maxAttrSets {
		if _, loaded := s.attrSets.LoadOrStore(k, opt); !loaded {
			s.attrCount.Add(1)
		}
	}
	return opt
}

// Precomputed metric attributes: the hot path records without allocating
// them per decision.
var (
	cacheHit  = metric.WithAttributes(attribute.String("result", "hit"))
	cacheMiss = metric.WithAttributes(attribute.String("result", "miss"))
)

// Decide answers req. It always returns a decision (never Unspecified) with
// an ID and PolicyVersion: invalid input is Indeterminate with
// missing_attribute or invalid_attribute, and an evaluation that fails,
// times out or yields an unexpected answer is Indeterminate with
// evaluation_error. Every decision is recorded in the audit log.
func (s *Service) Decide(ctx context.Context, req Request) Decision {
	start := time.Now()
	ctx, span := s.tracer.Start(ctx, "pdp.decide", trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()

	id := newID()
	d, norm, sel, hit := s.decide(ctx, id, req)
	d.ID = id
	elapsed := time.Since(start)

	role := "active"
	if sel.DeciderIsCandidate {
		role = "candidate"
	}
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("gatehouse.decision_id", d.ID),
			attribute.String("gatehouse.decision", d.State.String()),
			attribute.String("gatehouse.reason_code", d.ReasonCode),
			attribute.String("gatehouse.policy_version", d.PolicyVersion),
			attribute.String("gatehouse.decided_by", role),
			attribute.Bool("gatehouse.cache_hit", hit),
		)
		if d.ReasonCode == reason.EvaluationError {
			span.SetStatus(codes.Error, "policy evaluation failed")
		}
	}
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.LogAttrs(ctx, slog.LevelDebug, "decision",
			slog.String("decision_id", d.ID),
			slog.String("decision", d.State.String()),
			slog.String("reason_code", d.ReasonCode),
			slog.String("policy_version", d.PolicyVersion),
			slog.String("action", norm.Action),
			slog.String("request_id", norm.Context.RequestID),
			slog.Duration("latency", elapsed),
		)
	}
	attrs := s.attrs(d.State, d.ReasonCode, role)
	s.decisions.Add(ctx, 1, attrs)
	s.latency.Record(ctx, elapsed.Seconds(), attrs)

	event := auditEvent(ctx, d, norm, start, elapsed)
	if sel.Other != nil && s.shadower != nil && !invalidInput(d) &&
		s.shadower.Submit(ShadowJob{Request: norm, Decision: d, Selection: sel, Event: event}) {
		return d
	}
	if err := s.audit.Record(ctx, event); err != nil {
		s.auditErrors.Add(ctx, 1)
		s.logger.LogAttrs(ctx, slog.LevelError, "decision not recorded in the audit log",
			slog.String("decision_id", d.ID), slog.Any("error", err))
	}
	return d
}

// decide returns the decision (without ID), the request to log and audit
// (the normalized one, or for invalid input the raw one cut to loggable
// length), what decided it, and whether it came from the cache.
func (s *Service) decide(ctx context.Context, id string, req Request) (Decision, Request, Selection, bool) {
	norm, err := Normalize(req)
	sel := s.router.Select(norm.Principal)
	if err != nil {
		code := reason.InvalidAttribute
		if errors.Is(err, ErrMissingAttribute) {
			code = reason.MissingAttribute
		}
		return Decision{
			State:         Indeterminate,
			ReasonCode:    code,
			Message:       err.Error(),
			PolicyVersion: sel.Decider.PolicyVersion(),
		}, loggable(req), Selection{Decider: sel.Decider}, false
	}

	// The request id identifies the request in the audit trail; policies
	// do not see it, so that equal questions get equal (cacheable) answers.
	evalReq := norm
	evalReq.Context.RequestID = ""
	var keys questionKeys
	if s.cache != nil {
		var d Decision
		var ok bool
		if d, keys, ok = s.cache.get(sel.Decider.PolicyVersion(), &evalReq); ok {
			s.cacheLookups.Add(ctx, 1, cacheHit)
			return d, norm, sel, true
		}
		s.cacheLookups.Add(ctx, 1, cacheMiss)
	}

	// keys.timed: the cache holds the note that this question's decision
	// depends on the time.
	d, err := evaluate(ctx, sel.Decider, evalReq, s.timeout, keys.timed)
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelError, "policy evaluation failed",
			slog.String("decision_id", id), slog.Any("error", err))
		return d, norm, sel, false
	}
	if s.cache != nil {
		s.cache.add(sel.Decider.PolicyVersion(), &evalReq, keys, d)
	}
	return d, norm, sel, false
}

// Evaluate evaluates a normalized request with eval within timeout, the way
// the Service does: an error, a timeout or an answer other than Allow, Deny
// or NotApplicable becomes Indeterminate with evaluation_error (and the
// error is returned for logging). The Shadower uses it for the other
// bundle of a rollout.
func Evaluate(ctx context.Context, eval Evaluator, norm Request, timeout time.Duration) (Decision, error) {
	norm.Context.RequestID = ""
	// Not cached: whether the decision depends on the time does not matter.
	return evaluate(ctx, eval, norm, timeout, true)
}

// evaluate evaluates req with eval within timeout; skipTimeReads lets a
// TimeReadSkipper skip finding out whether the decision depends on the
// time, when the caller knows or does not care.
func evaluate(ctx context.Context, eval Evaluator, req Request, timeout time.Duration, skipTimeReads bool) (Decision, error) {
	evalCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d Decision
	var err error
	if skipper, ok := eval.(TimeReadSkipper); ok && skipTimeReads {
		d, err = skipper.EvaluateWithoutTimeReads(evalCtx, req)
	} else {
		d, err = eval.Evaluate(evalCtx, req)
	}
	if err == nil && d.State != Allow && d.State != Deny && d.State != NotApplicable {
		err = fmt.Errorf("evaluator returned state %s", d.State)
	}
	if err != nil {
		return Decision{
			State:         Indeterminate,
			ReasonCode:    reason.EvaluationError,
			Message:       evaluationFailedMessage,
			PolicyVersion: eval.PolicyVersion(),
		}, err
	}
	return d, nil
}

// invalidInput reports whether d refused the input before any policy saw
// it; a shadow evaluation of such a request would tell nothing.
func invalidInput(d Decision) bool {
	return d.ReasonCode == reason.MissingAttribute || d.ReasonCode == reason.InvalidAttribute
}

// auditEvent is the decision log entry of d (DESIGN.md, audit events).
// Its time is when the decision began, also when the event is recorded
// later (after a shadow evaluation).
func auditEvent(ctx context.Context, d Decision, req Request, at time.Time, latency time.Duration) audit.Event {
	var chain []string
	if n := len(req.Principal.ActorChain); n > 0 {
		chain = make([]string, n)
		for i, a := range req.Principal.ActorChain {
			chain[i] = a.Subject
			if chain[i] == "" {
				chain[i] = a.ClientID
			}
		}
	}
	e := audit.Event{
		EventID:       d.ID,
		Time:          at,
		Type:          audit.TypeDecision,
		Subject:       req.Principal.Subject,
		ActorChain:    chain,
		ClientID:      req.Principal.ClientID,
		Tenant:        req.Principal.Tenant,
		Action:        req.Action,
		Resource:      ResourceName(req.Resource),
		Decision:      StateName(d.State),
		ReasonCode:    d.ReasonCode,
		PolicyVersion: d.PolicyVersion,
		RequestID:     req.Context.RequestID,
		Latency:       latency,
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		e.TraceID = sc.TraceID().String()
	}
	return e
}

// ResourceName names a resource in the audit log: "<type>/<id>", or the
// type alone for a collection.
func ResourceName(r Resource) string {
	if r.ID == "" {
		return r.Type
	}
	return r.Type + "/" + r.ID
}

// StateName is a state as the audit log and the API spell it: ALLOW, DENY,
// NOT_APPLICABLE or INDETERMINATE.
func StateName(s State) string { return strings.ToUpper(s.String()) }

// loggable cuts the fields Decide logs and audits to MaxStringBytes, so an
// invalid request cannot flood the log. (The JSON log handler escapes
// control characters; the audit log refuses them, so they are dropped.)
func loggable(req Request) Request {
	return Request{
		Action: truncate(req.Action),
		Principal: Principal{
			Subject:  truncate(req.Principal.Subject),
			ClientID: truncate(req.Principal.ClientID),
			Tenant:   truncate(req.Principal.Tenant),
		},
		Resource: Resource{Type: truncate(req.Resource.Type), ID: truncate(req.Resource.ID)},
		Context:  RequestContext{RequestID: truncate(req.Context.RequestID)},
	}
}

func truncate(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) <= MaxStringBytes {
		return s
	}
	return strings.ToValidUTF8(s[:MaxStringBytes], "")
}

// newID returns a random 128-bit decision id in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails; it crashes the program instead.
	return hex.EncodeToString(b[:])
}
