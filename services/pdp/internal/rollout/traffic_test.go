package rollout_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	pdpbundle "github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// TestPolicyChangesDuringTraffic: real signed bundles, compiled by the
// policy engine, swapped back and forth through the store while requests
// are decided (with the decision cache on, as in production). Every
// decision must be exactly what the bundle it names decides: the allowing
// bundle's "allowed" or the denying bundle's "role_not_permitted", never a
// mix, an error or another version.
func TestPolicyChangesDuringTraffic(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	allow := bundletest.Policy(t, "allow-all", `{"decision": "allow", "reason_code": "allowed"}`)
	deny := bundletest.Policy(t, "deny-all", `{"decision": "deny", "reason_code": "role_not_permitted"}`)
	want := map[string]string{"allow-all": "allowed", "deny-all": "role_not_permitted"}

	store := memory.New()
	for _, b := range []*pdpbundle.Bundle{allow, deny} {
		if _, err := store.PutBundle(ctx, stored(b)); err != nil {
			t.Fatal(err)
		}
	}
	verifier := bundletest.Shared(t).Verifier
	cache, err := decision.NewCache(1000)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rollout.NewManager(store, func(ctx context.Context, b policystore.Bundle) (decision.Evaluator, error) {
		opened, err := pdpbundle.Open(b.Tarball, verifier)
		if err != nil {
			return nil, err
		}
		return policy.Compile(ctx, opened)
	}, rollout.Options{PollInterval: 10 * time.Millisecond, OnChange: func(policystore.Rollout) { cache.Purge() }})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Bootstrap(ctx, stored(allow), "test"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	svc, err := decision.NewService(decision.Options{
		Router: m, Audit: audit.NewSyncEmitter(auditmemory.New()), Cache: cache, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var decided atomic.Int64
	seen := sync.Map{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			req := decision.Request{
				Principal: decision.Principal{Subject: "bob", Tenant: "acme", Roles: []string{"billing_viewer"}},
				Action:    "invoice:read",
				Resource:  decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme"},
				Context:   decision.RequestContext{Time: time.Unix(int64(w), 0)},
			}
			for !stop.Load() {
				d := svc.Decide(ctx, req)
				decided.Add(1)
				seen.Store(d.PolicyVersion, true)
				if d.ReasonCode != want[d.PolicyVersion] {
					t.Errorf("decided %s %s by %q: not what that bundle decides", d.State, d.ReasonCode, d.PolicyVersion)
					return
				}
			}
		})
	}
	for i := range 60 {
		active := "deny-all"
		if i%2 == 1 {
			active = "allow-all"
		}
		st := update(t, store, policystore.Rollout{Active: active, Mode: policystore.ModeNone})
		if err := m.Await(ctx, st.Generation); err != nil {
			t.Fatal(err)
		}
		// Once served, the change holds for every request, cached ones
		// included: the same question the workers ask (and cache).
		probe := decision.Request{
			Principal: decision.Principal{Subject: "bob", Tenant: "acme", Roles: []string{"billing_viewer"}},
			Action:    "invoice:read",
			Resource:  decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme"},
			Context:   decision.RequestContext{Time: time.Unix(0, 0)},
		}
		if d := svc.Decide(ctx, probe); d.PolicyVersion != active {
			t.Fatalf("after the change to %s, decided by %s", active, d.PolicyVersion)
		}
	}
	stop.Store(true)
	wg.Wait()
	for _, v := range []string{"allow-all", "deny-all"} {
		if _, ok := seen.Load(v); !ok {
			t.Errorf("no decision by %s in %d decisions: the flips did not reach the traffic", v, decided.Load())
		}
	}
}

// stored turns an opened bundle into what the store keeps.
func stored(b *pdpbundle.Bundle) policystore.Bundle {
	return policystore.Bundle{Revision: b.Revision, Digest: b.Digest, Tarball: b.Tarball, SigningKeyID: b.SigningKeyID, UploadedBy: "test"}
}
