package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// Errors of an operation whose answer is not the expected one.
var (
	// errWrongAnswer: a decision other than the expected one.
	errWrongAnswer = errors.New("wrong answer")
	// errIndeterminate: INDETERMINATE where a decision was expected, the
	// PDP failing closed (an evaluation that timed out, say).
	errIndeterminate = errors.New("indeterminate answer")
)

// bundleSource is where the workload's expected answers come from: the
// signed policy directory both servers load.
type bundleSource struct {
	// Dir is the signed bundle directory (policies/).
	Dir string
	// KeyFile and KeyID verify its signature, as the PDP does.
	KeyFile, KeyID string
}

// loadBundle verifies and reads the bundle exactly as the PDP does on start.
func (s bundleSource) loadBundle() (*bundle.Bundle, error) {
	keyPEM, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("bundle verification key: %w", err)
	}
	v, err := bundle.NewVerifier(s.KeyID, keyPEM)
	if err != nil {
		return nil, err
	}
	b, err := bundle.LoadDir(s.Dir, v)
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: %w", s.Dir, err)
	}
	return b, nil
}

// item is one question of the workload: the parts of the CheckRequest
// that stay the same from call to call (shared, never modified), the OPA
// request body around its context time, and the expected answer.
type item struct {
	principal *authzv1.Principal
	action    string
	resource  *authzv1.Resource
	sourceIP  string
	// opaPrefix and opaSuffix enclose the JSON string of the context time
	// in the OPA request body {"input": <what the PDP's policy sees>}.
	opaPrefix, opaSuffix []byte
	// pdpPrefix is the item's CheckRequest without its context, in the
	// protobuf binary encoding: a Check body is it followed by the
	// encoded context (see appendPDPBody).
	pdpPrefix []byte
	want      answer
}

// workload is the fixed question set every worker cycles through, with
// the revision of the bundle that answered it.
type workload struct {
	items    []item
	revision string
}

// sentinelTime stands in for the context time while OPA bodies are built.
var sentinelTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// newWorkload draws n requests with seed around now and answers each, as
// asked at now, with the policy engine the PDP uses, compiled from src:
// those are the answers both servers must give (for maxRunTime).
func newWorkload(ctx context.Context, src bundleSource, seed uint64, n int, now time.Time) (*workload, error) {
	b, err := src.loadBundle()
	if err != nil {
		return nil, err
	}
	engine, err := policy.Compile(ctx, b)
	if err != nil {
		return nil, err
	}
	reqs, err := generate(seed, n, now)
	if err != nil {
		return nil, err
	}
	w := &workload{items: make([]item, len(reqs)), revision: b.Revision}
	for i, req := range reqs {
		asked := req
		asked.Context.Time = now
		norm, err := decision.Normalize(asked)
		if err != nil {
			return nil, fmt.Errorf("request %d is invalid: %w", i, err)
		}
		d, err := engine.Evaluate(ctx, norm)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		prefix, suffix, err := opaBody(norm)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		m := toProto(req)
		pdpPrefix, err := proto.Marshal(&authzv1.CheckRequest{Principal: m.GetPrincipal(), Action: m.GetAction(), Resource: m.GetResource()})
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		w.items[i] = item{
			principal: m.GetPrincipal(), action: m.GetAction(), resource: m.GetResource(), sourceIP: m.GetContext().GetSourceIp(),
			opaPrefix: prefix, opaSuffix: suffix, pdpPrefix: pdpPrefix,
			want: answerOf(d),
		}
	}
	return w, nil
}

// opaBody returns OPA's request body for the normalized request norm,
// {"input": <policy.Input(norm)>}, split around its context time: exactly
// the document the PDP's policy sees (request id empty, time to the
// second).
func opaBody(norm decision.Request) (prefix, suffix []byte, err error) {
	norm.Context.RequestID = ""
	norm.Context.Time = sentinelTime
	input, err := ast.JSON(policy.Input(norm))
	if err != nil {
		return nil, nil, fmt.Errorf("opa input: %w", err)
	}
	body, err := json.Marshal(map[string]any{"input": input})
	if err != nil {
		return nil, nil, fmt.Errorf("opa input: %w", err)
	}
	mark := []byte(`"` + sentinelTime.Format(time.RFC3339Nano) + `"`)
	if bytes.Count(body, mark) != 1 {
		return nil, nil, errors.New("opa input: the context time is not in the body exactly once")
	}
	prefix, suffix, _ = bytes.Cut(body, mark)
	return prefix, suffix, nil
}

// appendOPABody appends the item's OPA request body for a request made at t.
func (it *item) appendOPABody(dst []byte, t time.Time) []byte {
	dst = append(dst, it.opaPrefix...)
	dst = append(dst, '"')
	dst = t.UTC().Truncate(time.Second).AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	return append(dst, it.opaSuffix...)
}

// appendPDPBody appends the item's Check request body, as a caller sends it
// at t under request id id, in the protobuf binary encoding: the fields
// encoded once, then the context. Concatenated encodings decode as one
// message with the fields of both (protobuf's merge), so the server reads
// exactly checkRequest(id, t).
func (it *item) appendPDPBody(dst []byte, id string, t time.Time) ([]byte, error) {
	dst = append(dst, it.pdpPrefix...)
	return proto.MarshalOptions{}.MarshalAppend(dst, &authzv1.CheckRequest{Context: contextAt(id, t, it.sourceIP)})
}

// checkRequest returns the item's CheckRequest as a caller sends it at t under
// request id id. The principal and resource are shared, read-only.
func (it *item) checkRequest(id string, t time.Time) *authzv1.CheckRequest {
	return &authzv1.CheckRequest{
		Principal: it.principal,
		Action:    it.action,
		Resource:  it.resource,
		Context:   contextAt(id, t, it.sourceIP),
	}
}

// answer is what two deciders must agree on: everything of a decision but
// its id and policy version.
type answer struct {
	Decision       authzv1.Decision
	ReasonCode     string
	Message        string
	RequiredScopes []string
	Obligations    []string // "type k=v k=v", params sorted
}

func (a answer) String() string {
	return fmt.Sprintf("%s/%s", strings.TrimPrefix(a.Decision.String(), "DECISION_"), a.ReasonCode)
}

// equal compares every field; nil and empty lists are equal.
func (a answer) equal(b answer) bool {
	return a.Decision == b.Decision && a.ReasonCode == b.ReasonCode && a.Message == b.Message &&
		slices.Equal(a.RequiredScopes, b.RequiredScopes) && slices.Equal(a.Obligations, b.Obligations)
}

// answerOf returns the answer of a decision by the policy engine.
func answerOf(d decision.Decision) answer {
	a := answer{ReasonCode: d.ReasonCode, Message: d.Message, RequiredScopes: d.RequiredScopes}
	switch d.State {
	case decision.Allow:
		a.Decision = authzv1.Decision_DECISION_ALLOW
	case decision.Deny:
		a.Decision = authzv1.Decision_DECISION_DENY
	case decision.NotApplicable:
		a.Decision = authzv1.Decision_DECISION_NOT_APPLICABLE
	default:
		a.Decision = authzv1.Decision_DECISION_INDETERMINATE
	}
	for _, o := range d.Obligations {
		a.Obligations = append(a.Obligations, obligation(o.Type, o.Params))
	}
	return a
}

// answerOfPDP returns the answer in a PDP response.
func answerOfPDP(r *authzv1.CheckResponse) answer {
	a := answer{Decision: r.GetDecision(), ReasonCode: r.GetReasonCode(), Message: r.GetMessage(), RequiredScopes: r.GetRequiredScopes()}
	for _, o := range r.GetObligations() {
		a.Obligations = append(a.Obligations, obligation(o.GetType(), o.GetParams()))
	}
	return a
}

// opaResult is OPA's response to POST /v1/data/gatehouse/main/decision.
type opaResult struct {
	Result *struct {
		Decision       string   `json:"decision"`
		ReasonCode     string   `json:"reason_code"`
		Message        string   `json:"message"`
		RequiredScopes []string `json:"required_scopes"`
		Obligations    []struct {
			Type   string            `json:"type"`
			Params map[string]string `json:"params"`
		} `json:"obligations"`
	} `json:"result"`
}

// answerOfOPA parses an OPA response body; a body without a result (the
// rule undefined) is an error.
func answerOfOPA(body []byte) (answer, error) {
	var r opaResult
	if err := json.Unmarshal(body, &r); err != nil {
		return answer{}, fmt.Errorf("opa response: %w", err)
	}
	if r.Result == nil {
		return answer{}, errors.New("opa response has no result")
	}
	a := answer{ReasonCode: r.Result.ReasonCode, Message: r.Result.Message, RequiredScopes: r.Result.RequiredScopes}
	switch r.Result.Decision {
	case "allow":
		a.Decision = authzv1.Decision_DECISION_ALLOW
	case "deny":
		a.Decision = authzv1.Decision_DECISION_DENY
	case "not_applicable":
		a.Decision = authzv1.Decision_DECISION_NOT_APPLICABLE
	default:
		a.Decision = authzv1.Decision_DECISION_UNSPECIFIED
	}
	for _, o := range r.Result.Obligations {
		a.Obligations = append(a.Obligations, obligation(o.Type, o.Params))
	}
	return a, nil
}

func obligation(typ string, params map[string]string) string {
	var b strings.Builder
	b.WriteString(typ)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		b.WriteString(" " + k + "=" + params[k])
	}
	return b.String()
}
