package decision

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
)

// evaluationFailedMessage is all a caller learns about a failed evaluation;
// the cause is logged under the decision id.
const evaluationFailedMessage = "the policy could not be evaluated; see the PDP log for this decision_id"

// Service decides Requests. It normalizes the input, evaluates it within a
// deadline, stamps the answer with a decision id and the policy version, and
// logs and counts every decision.
type Service struct {
	eval      Evaluator
	timeout   time.Duration
	logger    *slog.Logger
	decisions metric.Int64Counter
	latency   metric.Float64Histogram
}

// NewService returns a Service that evaluates with eval, giving each
// evaluation at most timeout, logging to logger and recording metrics with
// meter.
func NewService(eval Evaluator, timeout time.Duration, logger *slog.Logger, meter metric.Meter) (*Service, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("decision: evaluation timeout must be positive, got %s", timeout)
	}
	decisions, err := meter.Int64Counter("gatehouse.pdp.decisions",
		metric.WithDescription("Decisions made, by decision state and reason code."))
	if err != nil {
		return nil, fmt.Errorf("decision: counter: %w", err)
	}
	latency, err := meter.Float64Histogram("gatehouse.pdp.decision.duration",
		metric.WithDescription("Time to decide one request, validation and evaluation included."),
		metric.WithUnit("s"),
		// Decisions take tens of microseconds to a few milliseconds; the
		// last bucket is the default eval-timeout.
		metric.WithExplicitBucketBoundaries(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
	if err != nil {
		return nil, fmt.Errorf("decision: histogram: %w", err)
	}
	return &Service{eval: eval, timeout: timeout, logger: logger, decisions: decisions, latency: latency}, nil
}

// Decide answers req. It always returns a decision (never Unspecified) with
// an ID and PolicyVersion: invalid input is Indeterminate with
// missing_attribute or invalid_attribute, and an evaluation that fails,
// times out or yields an unexpected answer is Indeterminate with
// evaluation_error.
func (s *Service) Decide(ctx context.Context, req Request) Decision {
	start := time.Now()
	id := newID()
	d, norm := s.decide(ctx, id, req)
	d.ID = id
	elapsed := time.Since(start)

	s.logger.LogAttrs(ctx, slog.LevelInfo, "decision",
		slog.String("decision_id", d.ID),
		slog.String("decision", d.State.String()),
		slog.String("reason_code", d.ReasonCode),
		slog.String("policy_version", d.PolicyVersion),
		slog.String("action", norm.Action),
		slog.String("subject", norm.Principal.Subject),
		slog.String("client_id", norm.Principal.ClientID),
		slog.String("tenant", norm.Principal.Tenant),
		slog.String("request_id", norm.Context.RequestID),
		slog.Duration("latency", elapsed),
	)
	attrs := metric.WithAttributes(
		attribute.String("decision", d.State.String()),
		attribute.String("reason_code", d.ReasonCode),
	)
	s.decisions.Add(ctx, 1, attrs)
	s.latency.Record(ctx, elapsed.Seconds(), attrs)
	return d
}

// decide returns the decision (without ID) and the request to log: the
// normalized one, or for invalid input the raw one cut to loggable length.
func (s *Service) decide(ctx context.Context, id string, req Request) (Decision, Request) {
	norm, err := Normalize(req)
	if err != nil {
		code := reason.InvalidAttribute
		if errors.Is(err, ErrMissingAttribute) {
			code = reason.MissingAttribute
		}
		return Decision{
			State:         Indeterminate,
			ReasonCode:    code,
			Message:       err.Error(),
			PolicyVersion: s.eval.PolicyVersion(),
		}, loggable(req)
	}

	evalCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	d, err := s.eval.Evaluate(evalCtx, norm)
	if err == nil && d.State != Allow && d.State != Deny && d.State != NotApplicable {
		err = fmt.Errorf("evaluator returned state %s", d.State)
	}
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelError, "policy evaluation failed",
			slog.String("decision_id", id), slog.Any("error", err))
		return Decision{
			State:         Indeterminate,
			ReasonCode:    reason.EvaluationError,
			Message:       evaluationFailedMessage,
			PolicyVersion: s.eval.PolicyVersion(),
		}, norm
	}
	return d, norm
}

// loggable cuts the fields Decide logs to MaxStringBytes, so an invalid
// request cannot flood the log. (The JSON log handler escapes control
// characters.)
func loggable(req Request) Request {
	return Request{
		Action: truncate(req.Action),
		Principal: Principal{
			Subject:  truncate(req.Principal.Subject),
			ClientID: truncate(req.Principal.ClientID),
			Tenant:   truncate(req.Principal.Tenant),
		},
		Context: RequestContext{RequestID: truncate(req.Context.RequestID)},
	}
}

func truncate(s string) string {
	if len(s) <= MaxStringBytes {
		return s
	}
	return s[:MaxStringBytes]
}

// newID returns a random 128-bit decision id in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails; it crashes the program instead.
	return hex.EncodeToString(b[:])
}
