package decisioncache_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/decisioncache"
)

var t0 = time.Unix(1_800_000_000, 0)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func request() *authzv1.CheckRequest {
	return &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "alice", Tenant: "acme", ClientId: "invoice-web", Scopes: []string{"invoice:read"},
			Roles: []string{"billing_viewer"}, Acr: "pwd", AuthTime: timestamppb.New(t0),
		},
		Action:   "invoice:read",
		Resource: &authzv1.Resource{Type: "invoice", Tenant: "acme"},
		Context:  &authzv1.RequestContext{RequestId: "r1", Time: timestamppb.New(t0), SourceIp: "192.0.2.1"},
	}
}

// TestKeyCoversWhatPoliciesSee: every principal, action, resource and
// source field changes the key; the request id and time do not.
func TestKeyCoversWhatPoliciesSee(t *testing.T) {
	t.Parallel()
	base := decisioncache.KeyOf(request())
	tests := []struct {
		name     string
		edit     func(*authzv1.CheckRequest)
		wantSame bool
	}{
		{"request id", func(r *authzv1.CheckRequest) { r.Context.RequestId = "r2" }, true},
		{"request time", func(r *authzv1.CheckRequest) { r.Context.Time = timestamppb.New(t0.Add(time.Second)) }, true},
		{"subject", func(r *authzv1.CheckRequest) { r.Principal.Subject = "bob" }, false},
		{"tenant", func(r *authzv1.CheckRequest) { r.Principal.Tenant = "globex" }, false},
		{"client", func(r *authzv1.CheckRequest) { r.Principal.ClientId = "billing-bot" }, false},
		{"scopes", func(r *authzv1.CheckRequest) { r.Principal.Scopes = append(r.Principal.Scopes, "invoice:write") }, false},
		{"roles", func(r *authzv1.CheckRequest) { r.Principal.Roles = []string{"billing_approver"} }, false},
		{"acr", func(r *authzv1.CheckRequest) { r.Principal.Acr = "mfa" }, false},
		{"auth_time", func(r *authzv1.CheckRequest) { r.Principal.AuthTime = timestamppb.New(t0.Add(time.Minute)) }, false},
		{"actor chain", func(r *authzv1.CheckRequest) {
			r.Principal.ActorChain = []*authzv1.Actor{{Subject: "sam", ClientId: "support-console"}}
		}, false},
		{"action", func(r *authzv1.CheckRequest) { r.Action = "invoice:write" }, false},
		{"resource type", func(r *authzv1.CheckRequest) { r.Resource.Type = "ticket" }, false},
		{"resource tenant", func(r *authzv1.CheckRequest) { r.Resource.Tenant = "globex" }, false},
		{"resource id", func(r *authzv1.CheckRequest) { r.Resource.Id = "inv_1" }, false},
		{"source address", func(r *authzv1.CheckRequest) { r.Context.SourceIp = "192.0.2.2" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := request()
			tc.edit(r)
			if same := decisioncache.KeyOf(r) == base; same != tc.wantSame {
				t.Fatalf("same key: %v, want %v", same, tc.wantSame)
			}
		})
	}
	r := request()
	before := proto.Clone(r)
	decisioncache.KeyOf(r)
	if !proto.Equal(r, before) {
		t.Fatal("KeyOf modified the request")
	}
}

var (
	allow  = enforce.Decision{State: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed", DecisionID: "d-allow"}
	deny   = enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "role_not_permitted"}
	na     = enforce.Decision{State: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: "no_applicable_policy"}
	indet  = enforce.Decision{State: authzv1.Decision_DECISION_INDETERMINATE, ReasonCode: "evaluation_error"}
	stepUp = enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "step_up_required",
		Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: map[string]string{"acr": "mfa", "max_age": "300"}}}}
	allowWithObligation = enforce.Decision{State: authzv1.Decision_DECISION_ALLOW,
		Obligations: []*authzv1.Obligation{{Type: "log"}}}
)

func TestGet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		put      enforce.Decision
		after    time.Duration
		wantHit  bool
		wantCode string
	}{
		{"allow within TTL", allow, time.Second, true, "allowed"},
		{"deny within TTL", deny, time.Second, true, "role_not_permitted"},
		{"not applicable within TTL", na, 0, true, "no_applicable_policy"},
		{"allow at the TTL", allow, 2 * time.Second, false, ""},
		{"indeterminate is never cached", indet, 0, false, ""},
		{"step-up challenge is never cached", stepUp, 0, false, ""},
		{"allow with an obligation is never cached", allowWithObligation, 0, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: t0}
			cache, err := decisioncache.New(decisioncache.Config{Size: 8, TTL: 2 * time.Second, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			k := decisioncache.KeyOf(request())
			cache.Put(k, tc.put)
			c.add(tc.after)
			d, ok := cache.Get(t.Context(), k)
			if ok != tc.wantHit || d.ReasonCode != tc.wantCode {
				t.Fatalf("hit %v %q, want %v %q", ok, d.ReasonCode, tc.wantHit, tc.wantCode)
			}
			other := request()
			other.Principal.Subject = "bob"
			if _, ok := cache.Get(t.Context(), decisioncache.KeyOf(other)); ok {
				t.Fatal("another principal's answer was returned")
			}
		})
	}
}

func TestStaleAllow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ttl      time.Duration
		staleFor time.Duration
		puts     []enforce.Decision
		after    time.Duration
		want     bool
	}{
		{"allow within the window", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow}, 20 * time.Second, true},
		{"allow at the window's end", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow}, 30 * time.Second, true},
		{"allow past the window", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow}, 31 * time.Second, false},
		{"deny is never served stale", 2 * time.Second, 30 * time.Second, []enforce.Decision{deny}, time.Second, false},
		{"a newer deny replaces the allow", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow, deny}, time.Second, false},
		{"a newer step-up forgets the allow", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow, stepUp}, time.Second, false},
		{"a newer indeterminate forgets the allow", 2 * time.Second, 30 * time.Second, []enforce.Decision{allow, indet}, time.Second, false},
		{"off by default", 2 * time.Second, 0, []enforce.Decision{allow}, time.Second, false},
		{"works with the fresh cache off", 0, 30 * time.Second, []enforce.Decision{allow}, 10 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: t0}
			cache, err := decisioncache.New(decisioncache.Config{Size: 8, TTL: tc.ttl, StaleFor: tc.staleFor, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			k := decisioncache.KeyOf(request())
			for _, d := range tc.puts {
				cache.Put(k, d)
			}
			c.add(tc.after)
			d, age, ok := cache.StaleAllow(k)
			if ok != tc.want {
				t.Fatalf("stale allow %v, want %v", ok, tc.want)
			}
			if ok && (!d.Allowed() || age != tc.after || d.DecisionID != "d-allow") {
				t.Fatalf("got %+v age %v", d, age)
			}
			if tc.ttl == 0 {
				if _, hit := cache.Get(t.Context(), k); hit {
					t.Fatal("Get hit with a zero TTL")
				}
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	off, err := decisioncache.New(decisioncache.Config{Size: 8})
	if err != nil || off != nil {
		t.Fatalf("both windows zero: got %v, %v; want a nil cache", off, err)
	}
	k := decisioncache.KeyOf(request())
	off.Put(k, allow)
	if _, ok := off.Get(t.Context(), k); ok || off.Len() != 0 {
		t.Fatal("a nil cache held an answer")
	}
	for name, cfg := range map[string]decisioncache.Config{
		"TTL over the limit":     {Size: 8, TTL: decisioncache.MaxTTL + 1},
		"negative TTL":           {Size: 8, TTL: -1},
		"stale over the limit":   {Size: 8, StaleFor: decisioncache.MaxStaleFor + 1},
		"negative stale":         {Size: 8, StaleFor: -1},
		"no size with a TTL":     {TTL: time.Second},
		"no size with stale-for": {StaleFor: time.Second},
	} {
		if _, err := decisioncache.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestBounded(t *testing.T) {
	t.Parallel()
	cache, err := decisioncache.New(decisioncache.Config{Size: 4, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		r := request()
		r.Principal.Subject = string(rune('a' + i))
		cache.Put(decisioncache.KeyOf(r), allow)
	}
	if n := cache.Len(); n != 4 {
		t.Fatalf("%d answers held, want 4", n)
	}
}
