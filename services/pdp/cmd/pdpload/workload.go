package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// The demo-like population the workload draws from: tenants, users with
// the catalog's roles signed in through the demo clients, clients acting
// for themselves, and the catalog's actions.
var (
	tenants = []string{"acme", "globex", "initech", "umbrella"}

	// userClients are the demo's interactive clients and the scopes a
	// user's token from them carries.
	userClients = []struct {
		id     string
		scopes [][]string
	}{
		{"invoice-web", [][]string{
			{"openid", "invoice:read"},
			{"openid", "profile", "invoice:read", "invoice:write"},
			{"openid", "profile", "invoice:read", "invoice:write"},
			{"openid", "invoice:read", "invoice:write", "invoice:approve"},
		}},
		{"support-console", [][]string{
			{"openid", "invoice:read", "support:read"},
			{"openid", "support:read", "support:impersonate"},
		}},
	}

	// roleSets are the role combinations users hold, the empty one included.
	roleSets = [][]string{
		{"billing_viewer"}, {"billing_viewer"}, {"billing_viewer"},
		{"billing_approver"}, {"billing_approver"},
		{"support_agent"}, {"support_agent"},
		{"billing_viewer", "support_agent"},
		nil,
	}

	// serviceClients act for themselves (client_credentials tokens).
	serviceClients = []struct {
		id     string
		scopes []string
	}{
		{"reporting-job", []string{"invoice:read"}},
		{"billing-bot", []string{"invoice:read", "invoice:write"}},
	}

	// actions are weighted by how often real traffic asks them.
	actions = []struct {
		name   string
		weight int
	}{
		{"invoice:read", 64},
		{"invoice:write", 24},
		{"invoice:approve", 4},
		{"support:read", 5},
		{"support:impersonate", 3},
		// No policy covers ledgers: NOT_APPLICABLE, as for a service
		// whose policy is not written yet.
		{"ledger:read", 8},
	}

	// acrs are the issuer's authentication context classes.
	acrs = []string{"pwd", "pwd", "mfa"}
)

// usersPerTenant is how many distinct users each tenant has.
const usersPerTenant = 40

// Sign-in ages: a user signed in at most freshAge before the workload was
// drawn (three in ten) or at least staleAge before. Policies may compare
// auth_time with the request time (the approval step-up allows 300 s), so
// a fresh sign-in must stay fresh for a whole run: see maxRunTime.
const (
	freshAge = time.Minute
	staleAge = time.Hour
)

// maxRunTime bounds a run (warm-up included) so that no sign-in of the
// workload crosses a 300 s freshness limit while it lasts: the answers
// computed when the workload was drawn stay the right ones.
const maxRunTime = 5*time.Minute - freshAge - time.Minute

// generate returns n distinct requests drawn from the demo-like population
// with a generator seeded by seed: users and clients of four tenants asking
// about their own and (sometimes) other tenants' invoices and tickets,
// collection-level (as the gateway asks) and resource-level (as the
// services ask). The mix yields allow, deny and not_applicable decisions.
// Users' auth_time is relative to now. Request id and time are left
// unset: they differ per call and are stamped by whoever sends the
// request.
func generate(seed uint64, n int, now time.Time) ([]decision.Request, error) {
	if n <= 0 {
		return nil, fmt.Errorf("the workload needs at least one request, got %d", n)
	}
	// Seeded on purpose: every run and both servers get the same requests.
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) //nolint:gosec // G404: reproducible test data, not a secret
	seen := make(map[string]bool, n)
	reqs := make([]decision.Request, 0, n)
	for attempts := 0; len(reqs) < n; attempts++ {
		if attempts > 100*n {
			return nil, fmt.Errorf("could not draw %d distinct requests", n)
		}
		req := draw(rng, now)
		key, err := proto.MarshalOptions{Deterministic: true}.Marshal(toProto(req))
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		reqs = append(reqs, req)
	}
	return reqs, nil
}

// stepUpShare is the percentage of requests that are an approver
// approving one invoice of their tenant through invoice-web: the policy's
// step-up path, whose answer depends on the request time (the PDP's cache
// keeps such decisions for their second only). The mix above yields almost
// none of them.
const stepUpShare = 5

// draw returns one random request made around now.
func draw(rng *rand.Rand, now time.Time) decision.Request {
	tenant := pick(rng, tenants)
	if rng.IntN(100) < stepUpShare {
		return drawApproval(rng, now, tenant)
	}
	var p decision.Principal
	if rng.IntN(100) < 20 {
		c := pick(rng, serviceClients)
		p = decision.Principal{Subject: c.id, ClientID: c.id, Tenant: tenant, Scopes: c.scopes}
	} else {
		c := pick(rng, userClients)
		p = decision.Principal{
			Subject:  fmt.Sprintf("user-%s-%02d", tenant, rng.IntN(usersPerTenant)),
			ClientID: c.id,
			Tenant:   tenant,
			Roles:    pick(rng, roleSets),
			Scopes:   pick(rng, c.scopes),
			ACR:      pick(rng, acrs),
		}
		p.AuthTime = now.Add(-signInAge(rng)).Truncate(time.Second)
		// A support agent acting as a customer (token exchange).
		if c.id == "support-console" && rng.IntN(100) < 25 {
			p.ActorChain = []decision.Actor{{Subject: fmt.Sprintf("agent-%s-%d", tenant, rng.IntN(5)), ClientID: c.id}}
		}
	}

	action := pickAction(rng)
	resourceType, _, _ := strings.Cut(action, ":")
	r := decision.Resource{Type: resourceType}
	// Four in ten are collection-level (list, create), as the gateway asks;
	// the rest name one resource and its tenant, as the services ask, one
	// in seven of them another tenant's.
	if rng.IntN(100) >= 40 {
		r.Tenant = tenant
		if rng.IntN(7) == 0 {
			r.Tenant = pick(rng, tenants)
		}
		switch resourceType {
		case "invoice":
			r.ID = "inv-" + strconv.Itoa(1000+rng.IntN(5000))
			if rng.IntN(2) == 0 {
				r.Attributes = map[string]any{"amount_cents": int64(100 * rng.IntN(50000)), "status": pick(rng, []string{"draft", "open", "paid"})}
			}
		default:
			r.ID = "ticket-" + strconv.Itoa(rng.IntN(5000))
		}
	}
	return decision.Request{
		Principal: p,
		Action:    action,
		Resource:  r,
		Context:   decision.RequestContext{SourceIP: fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(256), 1+rng.IntN(254))},
	}
}

// drawApproval returns an approver's approval of one invoice of their
// tenant, signed in with pwd or mfa, recently or long ago, for an amount
// below or (four in five) above the step-up threshold: allowed, or denied
// with step_up_required.
func drawApproval(rng *rand.Rand, now time.Time, tenant string) decision.Request {
	return decision.Request{
		Principal: decision.Principal{
			Subject:  fmt.Sprintf("user-%s-%02d", tenant, rng.IntN(usersPerTenant)),
			ClientID: "invoice-web",
			Tenant:   tenant,
			Roles:    []string{"billing_approver"},
			Scopes:   []string{"openid", "invoice:read", "invoice:write", "invoice:approve"},
			ACR:      pick(rng, acrs),
			AuthTime: now.Add(-signInAge(rng)).Truncate(time.Second),
		},
		Action: "invoice:approve",
		Resource: decision.Resource{
			Type:       "invoice",
			ID:         "inv-" + strconv.Itoa(1000+rng.IntN(5000)),
			Tenant:     tenant,
			Attributes: map[string]any{"amount_cents": int64(100 * rng.IntN(50000)), "status": "draft"},
		},
		Context: decision.RequestContext{SourceIP: fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(256), 1+rng.IntN(254))},
	}
}

// signInAge is how long ago a user signed in: at most freshAge (three in
// ten) or at least staleAge.
func signInAge(rng *rand.Rand) time.Duration {
	if rng.IntN(10) < 3 {
		return time.Duration(rng.IntN(int(freshAge/time.Second))) * time.Second
	}
	return staleAge + time.Duration(rng.IntN(7*3600))*time.Second
}

func pick[T any](rng *rand.Rand, from []T) T { return from[rng.IntN(len(from))] }

func pickAction(rng *rand.Rand) string {
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	n := rng.IntN(total)
	for _, a := range actions {
		if n < a.weight {
			return a.name
		}
		n -= a.weight
	}
	return actions[len(actions)-1].name
}

// toProto returns req as the CheckRequest a caller sends.
func toProto(req decision.Request) *authzv1.CheckRequest {
	p := req.Principal
	m := &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject:  p.Subject,
			Tenant:   p.Tenant,
			Roles:    p.Roles,
			Scopes:   p.Scopes,
			ClientId: p.ClientID,
			Acr:      p.ACR,
		},
		Action: req.Action,
		Resource: &authzv1.Resource{
			Type:   req.Resource.Type,
			Id:     req.Resource.ID,
			Tenant: req.Resource.Tenant,
		},
		Context: &authzv1.RequestContext{
			RequestId: req.Context.RequestID,
			SourceIp:  req.Context.SourceIP,
		},
	}
	if !p.AuthTime.IsZero() {
		m.Principal.AuthTime = timestamppb.New(p.AuthTime)
	}
	if !req.Context.Time.IsZero() {
		m.Context.Time = timestamppb.New(req.Context.Time)
	}
	for _, a := range p.ActorChain {
		m.Principal.ActorChain = append(m.Principal.ActorChain, &authzv1.Actor{Subject: a.Subject, ClientId: a.ClientID})
	}
	if len(req.Resource.Attributes) > 0 {
		m.Resource.Attributes = make(map[string]*authzv1.AttributeValue, len(req.Resource.Attributes))
		for k, v := range req.Resource.Attributes {
			switch v := v.(type) {
			case string:
				m.Resource.Attributes[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: v}}
			case int64:
				m.Resource.Attributes[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: v}}
			case bool:
				m.Resource.Attributes[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: v}}
			case float64:
				m.Resource.Attributes[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_DoubleValue{DoubleValue: v}}
			}
		}
	}
	return m
}
