package policy

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// The decision cache keeps a decision beyond the second it was asked in
// only when the decision cannot depend on the request time
// (decision.Decision.TimeIndependent). This file finds that out for an
// evaluation: Compile marks the parts of a bundle that may read the time,
// and a tracer watches the evaluation for them (the Service asks only at a
// question's first evaluation; see decision.TimeReadSkipper). OPA offers
// no such dependency report (its non-deterministic built-in cache covers
// time.now_ns but not input fields), hence this code.
//
// What "may read the time" means, conservatively:
//   - a reference into the input that can reach input.context.time:
//     input.context.time itself (and anything below it), input.context and
//     input whole (passed to a function, iterated, walked, assigned), and
//     any such path with a variable where "context" or "time" would be;
//   - a call of a built-in that reads OPA's clock (time.now_ns, and
//     io.jwt.decode_verify without an explicit time) or is otherwise
//     non-deterministic.
//
// An evaluation read the time when it evaluated an expression that may
// read it, entered a rule whose head may, or had OPA's rule index look up
// a rule set holding either (the index can select rules by an input value
// without evaluating their bodies). Expressions and rules OPA evaluates
// that Compile did not see (copies, the query itself) are examined as they
// come.

// timeReads is what Compile learned of a compiled bundle.
type timeReads struct {
	// exprs holds every expression of the compiled modules: whether it may
	// read the time.
	exprs map[*ast.Expr]bool
	// heads holds every rule of the compiled modules: whether its head
	// (reference, arguments, key or value) may read the time.
	heads map[*ast.Rule]bool
	// sets holds the paths (data.pkg.name, and any ground keys) of the rule
	// sets with a rule whose head or top-level body expressions may read
	// the time: an index lookup of such a set may select rules by the
	// time without evaluating their bodies.
	sets []string
}

// findTimeReads examines the compiled modules. It returns nil when nothing
// in them may read the time: every decision of the bundle is then
// independent of it, and evaluations need no tracer.
func findTimeReads(modules map[string]*ast.Module) *timeReads {
	r := &timeReads{exprs: map[*ast.Expr]bool{}, heads: map[*ast.Rule]bool{}}
	found := false
	for _, m := range modules {
		for _, top := range m.Rules {
			indexed := false
			for rule := top; rule != nil; rule = rule.Else {
				head := headReadsTime(rule.Head)
				r.heads[rule] = head
				found = found || head
				ast.WalkExprs(rule.Body, func(e *ast.Expr) bool {
					reads := exprReadsTime(e)
					r.exprs[e] = reads
					found = found || reads
					return false // nested bodies too
				})
				// The rule index looks at the top-level expressions of a
				// body (equalities, membership, prefixes, a bare reference's
				// being defined, and more with each OPA release); any of
				// them that reads the time counts.
				indexed = indexed || head
				for _, e := range rule.Body {
					indexed = indexed || r.exprs[e]
				}
			}
			if indexed {
				r.sets = append(r.sets, top.Ref().GroundPrefix().String())
			}
		}
	}
	if !found {
		return nil
	}
	return r
}

func headReadsTime(h *ast.Head) bool {
	for _, t := range h.Reference {
		if readsTime(t) {
			return true
		}
	}
	for _, t := range h.Args {
		if readsTime(t) {
			return true
		}
	}
	return (h.Key != nil && readsTime(h.Key)) || (h.Value != nil && readsTime(h.Value))
}

func exprReadsTime(e *ast.Expr) bool {
	return (e.IsCall() && clockBuiltin(e.Operator())) || readsTime(e)
}

// readsTime reports whether x (an expression, a term, anything ast.WalkTerms
// walks) holds a reference that can reach the request time or a call of a
// clock built-in.
func readsTime(x any) bool {
	found := false
	ast.WalkTerms(x, func(t *ast.Term) bool {
		if found {
			return true
		}
		switch v := t.Value.(type) {
		case ast.Ref:
			if refReachesTime(v) {
				found = true
				return true
			}
			// Not the reference's head (a variable such as "input" only
			// names a document there), but its keys may hold references.
			for _, k := range v[1:] {
				if readsTime(k) {
					found = true
					break
				}
			}
			return true
		case ast.Call:
			if len(v) > 0 {
				op, ok := v[0].Value.(ast.Ref)
				found = ok && clockBuiltin(op)
			}
		}
		return found
	})
	return found
}

// timePath is the input path of the request time.
var timePath = []string{"context", "time"}

// refReachesTime reports whether ref, rooted at the input, can name the
// request time or something holding or below it: input (whole),
// input.context, input.context.time..., or such a path with a variable in
// place of "context" or "time".
func refReachesTime(ref ast.Ref) bool {
	if len(ref) == 0 || !ref[0].Equal(ast.InputRootDocument) {
		return false
	}
	for i, t := range ref[1:] {
		if i == len(timePath) {
			break
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			if t.IsGround() {
				return false // a number or another ground key names no field
			}
			continue // a variable may be "context" or "time"
		}
		if string(s) != timePath[i] {
			return false
		}
	}
	return true
}

// clockBuiltin reports whether operator names a built-in that reads OPA's
// clock or is otherwise non-deterministic.
func clockBuiltin(operator ast.Ref) bool {
	name := operator.String()
	if name == ast.JWTDecodeVerify.Name {
		return true // reads the clock when its constraints name no time
	}
	b, ok := ast.BuiltinMap[name]
	return ok && b.Nondeterministic
}

// timeTracer watches one evaluation for reads of the time.
type timeTracer struct {
	reads *timeReads
	read  bool
}

var _ topdown.QueryTracer = (*timeTracer)(nil)

func (*timeTracer) Enabled() bool { return true }

func (*timeTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (t *timeTracer) TraceEvent(ev topdown.Event) {
	// Only these say what an evaluation read: an expression evaluated, a
	// rule entered, a rule set looked up. The rest (redo, exit, fail,
	// unify, ...) are steps inside those.
	if t.read || (ev.Op != topdown.EvalOp && ev.Op != topdown.EnterOp && ev.Op != topdown.IndexOp) {
		return
	}
	switch n := ev.Node.(type) {
	case *ast.Expr:
		reads, known := t.reads.exprs[n]
		if !known {
			reads = exprReadsTime(n)
		}
		t.read = reads
	case *ast.Rule:
		reads, known := t.reads.heads[n]
		if !known {
			reads = headReadsTime(n.Head)
		}
		t.read = reads
	}
	if !t.read && ev.Op == topdown.IndexOp && ev.Ref != nil {
		t.read = t.indexesTime(*ev.Ref)
	}
}

// indexesTime reports whether an index lookup of ref can involve a rule
// set that reads the time: one path is a prefix of the other (the ref of
// a partial rule carries variables past its ground prefix). The string
// comparison errs towards a read (data.p.ab shares a prefix with data.p.a).
func (t *timeTracer) indexesTime(ref ast.Ref) bool {
	prefix := ref.GroundPrefix().String()
	for _, set := range t.reads.sets {
		if strings.HasPrefix(set, prefix) || strings.HasPrefix(prefix, set) {
			return true
		}
	}
	return false
}
