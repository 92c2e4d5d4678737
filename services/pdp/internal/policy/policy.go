// Package policy evaluates the PDP's Rego policy bundles with OPA. It
// compiles a verified bundle (see package bundle) into an Engine, which
// implements decision.Evaluator: it turns a normalized decision.Request
// into the Rego input, evaluates data.gatehouse.main.decision, and checks
// the answer's shape before trusting it.
package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// Query is the one rule the PDP evaluates. It must be total: the bundle's
// gatehouse.main package gives it a default.
const Query = "data.gatehouse.main.decision"

// ErrUnexpectedResult means the policy answered, but not with a decision
// object of the documented shape.
var ErrUnexpectedResult = errors.New("unexpected policy result")

// Engine evaluates one compiled policy bundle. It is safe for concurrent use.
type Engine struct {
	query    rego.PreparedEvalQuery
	revision string
	// tracksTime is false for an engine compiled WithoutTimeReads: it
	// claims no decision independent of the time.
	tracksTime bool
	// timeReads marks what may read the request time; nil when nothing in
	// the bundle may (every decision is then independent of it), or
	// without tracksTime.
	timeReads *timeReads
}

// Option configures Compile.
type Option func(*options)

type options struct{ withoutTimeReads bool }

// WithoutTimeReads makes the engine skip finding out which decisions
// depend on the request time: every decision then has TimeIndependent
// false. For a PDP without a decision cache, the only user of the claim,
// it saves the tracing on every evaluation (a third of its cost).
func WithoutTimeReads() Option { return func(o *options) { o.withoutTimeReads = true } }

// Compile compiles a verified bundle (see bundle.Open) and checks that
// Query yields a well-formed decision for an empty input. Policies may
// not use built-ins that reach the network or the PDP's environment, and
// built-in errors fail an evaluation. A bundle that does not compile or
// whose decision is not total is refused with an error wrapping
// bundle.ErrInvalid.
func Compile(ctx context.Context, b *bundle.Bundle, opts ...Option) (*Engine, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if b == nil || b.Parsed() == nil {
		return nil, fmt.Errorf("%w: policy: no verified bundle to compile", bundle.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy: compile bundle %s: %w", b.Revision, err)
	}

	// A decision depends on its input and the bundle alone: policies may not
	// reach the network or the PDP's environment (opa.runtime exposes
	// environment variables), so those built-ins fail compilation.
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(bi *ast.Builtin) bool {
		switch bi.Name {
		case "http.send", "net.lookup_ip_addr", "opa.runtime":
			return true
		}
		return false
	})
	var compiler *ast.Compiler
	query, err := rego.New(
		rego.Query(Query),
		rego.ParsedBundle("gatehouse", b.Parsed()),
		rego.Capabilities(caps),
		rego.StrictBuiltinErrors(true),
		rego.CompilerHook(func(c *ast.Compiler) { compiler = c }),
	).PrepareForEval(ctx)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("policy: compile bundle %s: %w", b.Revision, ctxErr)
		}
		return nil, fmt.Errorf("%w: policy: compile bundle %s: %s", bundle.ErrInvalid, b.Revision, bundle.Describe(err))
	}

	if compiler == nil {
		return nil, fmt.Errorf("policy: compile bundle %s: OPA did not hand over its compiler", b.Revision)
	}
	e := &Engine{query: query, revision: b.Revision}
	if e.tracksTime = !o.withoutTimeReads; e.tracksTime {
		e.timeReads = findTimeReads(compiler.Modules)
	}
	if _, err := e.eval(ctx, ast.NewObject(), false); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("policy: check bundle %s: %w", b.Revision, ctxErr)
		}
		return nil, fmt.Errorf("%w: policy: bundle %s: %s must yield a decision for any input: %w", bundle.ErrInvalid, b.Revision, Query, err)
	}
	return e, nil
}

// PolicyVersion returns the bundle's revision.
func (e *Engine) PolicyVersion() string { return e.revision }

// Evaluate decides a normalized request (see decision.Normalize). The
// decision is TimeIndependent when nothing the evaluation did could read
// the request time (timeread.go).
func (e *Engine) Evaluate(ctx context.Context, req decision.Request) (decision.Decision, error) {
	return e.eval(ctx, Input(req), true)
}

// EvaluateWithoutTimeReads is Evaluate without finding out whether the
// decision depends on the request time (decision.TimeReadSkipper): the
// tracing that finds out makes an evaluation about 1.8 times as costly.
func (e *Engine) EvaluateWithoutTimeReads(ctx context.Context, req decision.Request) (decision.Decision, error) {
	return e.eval(ctx, Input(req), false)
}

var _ decision.TimeReadSkipper = (*Engine)(nil)

// eval evaluates input; with claimTime (and an engine that tracks the
// time) the decision says whether it is independent of the time.
func (e *Engine) eval(ctx context.Context, input ast.Value, claimTime bool) (decision.Decision, error) {
	claimTime = claimTime && e.tracksTime
	var rs rego.ResultSet
	var err error
	tracer := timeTracer{reads: e.timeReads}
	if claimTime && e.timeReads != nil {
		rs, err = e.query.Eval(ctx, rego.EvalParsedInput(input), rego.EvalQueryTracer(&tracer))
	} else {
		rs, err = e.query.Eval(ctx, rego.EvalParsedInput(input))
	}
	if err != nil {
		return decision.Decision{}, fmt.Errorf("evaluate %s: %w", Query, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return decision.Decision{}, fmt.Errorf("%w: %s is undefined", ErrUnexpectedResult, Query)
	}
	d, err := parseDecision(rs[0].Expressions[0].Value)
	if err != nil {
		return decision.Decision{}, err
	}
	d.PolicyVersion = e.revision
	d.TimeIndependent = claimTime && !tracer.read
	return d, nil
}

// Input returns the Rego input for a normalized request: the request's
// fields under their protobuf (snake_case) names, every string and list
// present (empty when unset), timestamps as RFC 3339 strings in UTC and
// left out when unset, attributes as plain JSON values.
func Input(req decision.Request) ast.Value {
	p := req.Principal
	actors := make([]*ast.Term, len(p.ActorChain))
	for i, a := range p.ActorChain {
		actors[i] = ast.ObjectTerm(
			ast.Item(ast.InternedTerm("subject"), ast.StringTerm(a.Subject)),
			ast.Item(ast.InternedTerm("client_id"), ast.StringTerm(a.ClientID)),
		)
	}
	principal := ast.NewObject(
		ast.Item(ast.InternedTerm("subject"), ast.StringTerm(p.Subject)),
		ast.Item(ast.InternedTerm("tenant"), ast.StringTerm(p.Tenant)),
		ast.Item(ast.InternedTerm("roles"), stringsTerm(p.Roles)),
		ast.Item(ast.InternedTerm("scopes"), stringsTerm(p.Scopes)),
		ast.Item(ast.InternedTerm("client_id"), ast.StringTerm(p.ClientID)),
		ast.Item(ast.InternedTerm("acr"), ast.StringTerm(p.ACR)),
		ast.Item(ast.InternedTerm("actor_chain"), ast.ArrayTerm(actors...)),
	)
	addTime(principal, "auth_time", p.AuthTime)

	attrs := ast.NewObject()
	for k, v := range req.Resource.Attributes {
		attrs.Insert(ast.StringTerm(k), valueTerm(v))
	}
	resource := ast.NewObject(
		ast.Item(ast.InternedTerm("type"), ast.StringTerm(req.Resource.Type)),
		ast.Item(ast.InternedTerm("id"), ast.StringTerm(req.Resource.ID)),
		ast.Item(ast.InternedTerm("tenant"), ast.StringTerm(req.Resource.Tenant)),
		ast.Item(ast.InternedTerm("attributes"), ast.NewTerm(attrs)),
	)

	reqCtx := ast.NewObject(
		ast.Item(ast.InternedTerm("request_id"), ast.StringTerm(req.Context.RequestID)),
		ast.Item(ast.InternedTerm("source_ip"), ast.StringTerm(req.Context.SourceIP)),
	)
	addTime(reqCtx, "time", req.Context.Time)

	return ast.NewObject(
		ast.Item(ast.InternedTerm("principal"), ast.NewTerm(principal)),
		ast.Item(ast.InternedTerm("action"), ast.StringTerm(req.Action)),
		ast.Item(ast.InternedTerm("resource"), ast.NewTerm(resource)),
		ast.Item(ast.InternedTerm("context"), ast.NewTerm(reqCtx)),
	)
}

func stringsTerm(ss []string) *ast.Term {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(terms...)
}

func addTime(obj ast.Object, key string, t time.Time) {
	if !t.IsZero() {
		obj.Insert(ast.InternedTerm(key), ast.StringTerm(t.UTC().Format(time.RFC3339Nano)))
	}
}

// valueTerm converts an attribute value that decision.Normalize accepted.
func valueTerm(v any) *ast.Term {
	switch v := v.(type) {
	case string:
		return ast.StringTerm(v)
	case int64:
		return ast.IntNumberTerm(int(v))
	case bool:
		return ast.BooleanTerm(v)
	case float64:
		return ast.FloatNumberTerm(v)
	default:
		return ast.NullTerm()
	}
}
