package exchange_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/exchange"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

const accessTokenType = exchange.TokenTypeAccessToken

// impersonate is sam's request to act as alice on ticket T-1.
func impersonate(subject string) url.Values {
	return form("subject_token", subject, "subject_token_type", accessTokenType,
		"requested_subject", "alice", "support_ticket", "T-1", "ticket_access", "read", "scope", "invoice:read")
}

// delegate is the export job's request to act for subject's user.
func delegate(subject, actor string) url.Values {
	return form("subject_token", subject, "subject_token_type", accessTokenType,
		"actor_token", actor, "actor_token_type", accessTokenType, "scope", "invoice:read")
}

func with(v url.Values, kv ...string) url.Values {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			v.Del(kv[i])
			continue
		}
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// TestRefused covers every refusal: the status and RFC 6749 §5.2 error,
// the reason_code of refusals by policy (and only of those), whether the
// PDP was asked, that nothing was stored, that the refusal was audited
// with its reason, and that no token reaches the body.
func TestRefused(t *testing.T) {
	t.Parallel()
	otherKey, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	type request struct {
		client string
		secret bool
		form   url.Values
	}
	console := func(f url.Values) request { return request{client: "support-console", secret: true, form: f} }
	export := func(f url.Values) request { return request{client: "support-export", secret: true, form: f} }
	tests := []struct {
		name  string
		setup func(t *testing.T, h *harness) request
		pdp   func(*fakePDP)
		// status and error of the response; reason is its reason_code
		// ("" for none).
		status        int
		error, reason string
		// askPDP: the PDP was asked. auditReason is the audit event's
		// reason code ("" for no event: the client never authenticated).
		askPDP      bool
		auditReason string
	}{
		{
			name:   "missing subject_token",
			setup:  func(t *testing.T, h *harness) request { return console(with(impersonate(""), "subject_token", "")) },
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "missing subject_token_type",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "subject_token_type", ""))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "unsupported subject_token_type",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "subject_token_type", "urn:ietf:params:oauth:token-type:id_token"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "actor_token without actor_token_type",
			setup: func(t *testing.T, h *harness) request {
				return export(with(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw), "actor_token_type", ""))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "unsupported actor_token_type",
			setup: func(t *testing.T, h *harness) request {
				return export(with(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw), "actor_token_type", "urn:ietf:params:oauth:token-type:refresh_token"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "unsupported requested_token_type",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "actor_token and requested_subject together",
			setup: func(t *testing.T, h *harness) request {
				return export(with(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw), "requested_subject", "bob"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "neither actor_token nor requested_subject",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_subject", "", "support_ticket", "", "ticket_access", ""))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "impersonating oneself",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_subject", "sam"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "ticket with delegation",
			setup: func(t *testing.T, h *harness) request {
				return export(with(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw), "support_ticket", "T-1"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "ticket_access neither read nor write",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "ticket_access", "admin"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "requested_lifetime not a number",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_lifetime", "5m"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "requested_lifetime zero",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_lifetime", "0"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "impersonation lifetime over 900 seconds",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_lifetime", "901"))
			},
			status: 400, error: "invalid_request", auditReason: "invalid_request",
		},
		{
			name: "bad signature",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.signer, spec.kid = otherKey, h.key.KeyID()
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "forged act claim",
			setup: func(t *testing.T, h *harness) request {
				good := h.mint(t, alice()).raw
				parts := strings.Split(good, ".")
				payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
				forged := strings.Replace(string(payload), `"client_id"`, `"act":{"sub":"support-export"},"client_id"`, 1)
				parts[1] = base64.RawURLEncoding.EncodeToString([]byte(forged))
				return export(delegate(strings.Join(parts, "."), h.mint(t, exporter()).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "unknown signing key",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.signer = otherKey
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "HMAC-signed token",
			setup: func(t *testing.T, h *harness) request {
				signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
					(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", h.key.KeyID()))
				if err != nil {
					t.Fatal(err)
				}
				_, claims := h.claims(t, h.mint(t, sam()).raw)
				raw, err := josejwt.Signed(signer).Claims(claims).Serialize()
				if err != nil {
					t.Fatal(err)
				}
				return console(impersonate(raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "unsigned token",
			setup: func(t *testing.T, h *harness) request {
				parts := strings.Split(h.mint(t, sam()).raw, ".")
				header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"` + h.key.KeyID() + `"}`))
				return console(impersonate(header + "." + parts[1] + "."))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "not an access token (typ JWT)",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.typ = "JWT"
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "another issuer",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.iss = "http://evil.test"
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "expired subject token",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.exp = -time.Second
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "revoked subject token",
			setup: func(t *testing.T, h *harness) request {
				m := h.mint(t, sam())
				if _, err := h.store.RevokeRequest(t.Context(), m.requestID); err != nil {
					t.Fatal(err)
				}
				return console(impersonate(m.raw))
			},
			status: 400, error: "invalid_grant", auditReason: "token_revoked",
		},
		{
			name: "subject token never issued here",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.unstored = true
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "token_revoked",
		},
		{
			name: "expired actor token",
			setup: func(t *testing.T, h *harness) request {
				spec := exporter()
				spec.exp = -time.Second
				return export(delegate(h.mint(t, alice()).raw, h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_token",
		},
		{
			name: "revoked actor token",
			setup: func(t *testing.T, h *harness) request {
				m := h.mint(t, exporter())
				if _, err := h.store.RevokeRequest(t.Context(), m.requestID); err != nil {
					t.Fatal(err)
				}
				return export(delegate(h.mint(t, alice()).raw, m.raw))
			},
			status: 400, error: "invalid_grant", auditReason: "token_revoked",
		},
		{
			name: "actor token of another client",
			setup: func(t *testing.T, h *harness) request {
				spec := exporter()
				spec.sub, spec.clientID = "reporting-job", "reporting-job"
				return export(delegate(h.mint(t, alice()).raw, h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_grant",
		},
		{
			name: "another tenant's subject token",
			setup: func(t *testing.T, h *harness) request {
				return export(delegate(h.mint(t, carol()).raw, h.mint(t, exporter()).raw))
			},
			status: 400, error: "invalid_grant", reason: "tenant_mismatch", auditReason: "tenant_mismatch",
		},
		{
			name: "scope widening beyond the subject token",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "scope", "invoice:read invoice:write"))
			},
			status: 400, error: "invalid_scope", auditReason: "invalid_scope",
		},
		{
			name: "scope beyond the client's allowance",
			setup: func(t *testing.T, h *harness) request {
				return export(with(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw), "scope", "invoice:write"))
			},
			status: 400, error: "invalid_scope", auditReason: "invalid_scope",
		},
		{
			name: "audience widening",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "audience", demoseed.PDPAudience))
			},
			status: 400, error: "invalid_target", auditReason: "invalid_target",
		},
		{
			name: "resource widening",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "resource", "https://evil.test/api"))
			},
			status: 400, error: "invalid_target", auditReason: "invalid_target",
		},
		{
			name: "audience and resource disagree",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "audience", audience, "resource", "https://api.test/"))
			},
			status: 400, error: "invalid_target", auditReason: "invalid_target",
		},
		{
			name: "subject token for an audience the client may not request",
			setup: func(t *testing.T, h *harness) request {
				spec := sam()
				spec.aud = []string{"gatehouse-pdp"}
				return console(impersonate(h.mint(t, spec).raw))
			},
			status: 400, error: "invalid_target", auditReason: "invalid_target",
		},
		{
			name: "may_act names someone else",
			setup: func(t *testing.T, h *harness) request {
				spec := alice()
				spec.mayAct = map[string]any{"sub": "reporting-job"}
				return export(delegate(h.mint(t, spec).raw, h.mint(t, exporter()).raw))
			},
			status: 400, error: "invalid_grant", reason: "actor_not_permitted", auditReason: "actor_not_permitted",
		},
		{
			name: "may_act names the actor under another client",
			setup: func(t *testing.T, h *harness) request {
				spec := alice()
				spec.mayAct = map[string]any{"sub": "support-export", "client_id": "support-console"}
				return export(delegate(h.mint(t, spec).raw, h.mint(t, exporter()).raw))
			},
			status: 400, error: "invalid_grant", reason: "actor_not_permitted", auditReason: "actor_not_permitted",
		},
		{
			name: "act chain too deep",
			setup: func(t *testing.T, h *harness) request {
				spec := alice()
				var act map[string]any
				for i := range 8 {
					next := map[string]any{"sub": "svc-" + string(rune('a'+i)), "client_id": "svc"}
					if act != nil {
						next["act"] = act
					}
					act = next
				}
				spec.act = act
				return export(delegate(h.mint(t, spec).raw, h.mint(t, exporter()).raw))
			},
			status: 400, error: "invalid_grant", reason: "actor_chain_too_long", auditReason: "actor_chain_too_long",
		},
		{
			name: "client without the grant",
			setup: func(t *testing.T, h *harness) request {
				return request{client: "billing-bot", secret: true, form: impersonate(h.mint(t, sam()).raw)}
			},
			status: 400, error: "unauthorized_client", auditReason: "unauthorized_client",
		},
		{
			name: "public client",
			setup: func(t *testing.T, h *harness) request {
				return request{client: "invoice-web", form: impersonate(h.mint(t, sam()).raw)}
			},
			status: 401, error: "invalid_client", auditReason: "invalid_client",
		},
		{
			name: "wrong client secret",
			setup: func(t *testing.T, h *harness) request {
				f := impersonate(h.mint(t, sam()).raw)
				f.Set("client_id", "support-console")
				f.Set("client_secret", "guess")
				return request{client: "support-console", form: f}
			},
			status: 401, error: "invalid_client",
		},
		{
			name: "unknown requested_subject",
			setup: func(t *testing.T, h *harness) request {
				return console(with(impersonate(h.mint(t, sam()).raw), "requested_subject", "mallory"))
			},
			status: 400, error: "invalid_grant", auditReason: "invalid_grant",
		},
		{
			name:  "PDP denies",
			setup: func(t *testing.T, h *harness) request { return console(impersonate(h.mint(t, sam()).raw)) },
			pdp: func(p *fakePDP) {
				p.decision = enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "ticket_required", PolicyVersion: "policy-7"}
			},
			status: 400, error: "invalid_grant", reason: "ticket_required", askPDP: true, auditReason: "ticket_required",
		},
		{
			name: "PDP finds no policy",
			setup: func(t *testing.T, h *harness) request {
				return export(delegate(h.mint(t, alice()).raw, h.mint(t, exporter()).raw))
			},
			pdp: func(p *fakePDP) {
				p.decision = enforce.Decision{State: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: "no_applicable_policy"}
			},
			status: 400, error: "invalid_grant", reason: "no_applicable_policy", askPDP: true, auditReason: "no_applicable_policy",
		},
		{
			name:   "PDP allows with an obligation",
			setup:  func(t *testing.T, h *harness) request { return console(impersonate(h.mint(t, sam()).raw)) },
			pdp:    func(p *fakePDP) { p.decision.Obligations = []*authzv1.Obligation{{Type: "step_up"}} },
			status: 400, error: "invalid_grant", reason: "unsupported_obligation", askPDP: true, auditReason: "unsupported_obligation",
		},
		{
			name:  "PDP reason code not fit to show",
			setup: func(t *testing.T, h *harness) request { return console(impersonate(h.mint(t, sam()).raw)) },
			pdp: func(p *fakePDP) {
				p.decision = enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "Denied: <b>policy text</b>"}
			},
			status: 400, error: "invalid_grant", askPDP: true, auditReason: "Denied: <b>policy text</b>",
		},
		{
			name:   "PDP down",
			setup:  func(t *testing.T, h *harness) request { return console(impersonate(h.mint(t, sam()).raw)) },
			pdp:    func(p *fakePDP) { p.err = enforce.ErrPDPUnavailable },
			status: 503, error: "temporarily_unavailable", askPDP: true, auditReason: "pdp_unavailable",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if tc.pdp != nil {
				tc.pdp(h.pdp)
			}
			req := tc.setup(t, h)
			before := h.store.count()
			resp := h.exchange(t, req.client, req.secret, req.form)

			if resp.status != tc.status || resp.body["error"] != tc.error {
				t.Fatalf("got %d %v, want %d %s: %s", resp.status, resp.body["error"], tc.status, tc.error, resp.raw)
			}
			if d, _ := resp.body["error_description"].(string); d == "" {
				t.Errorf("no error_description: %s", resp.raw)
			}
			if got, _ := resp.body["reason_code"].(string); got != tc.reason {
				t.Errorf("reason_code = %q, want %q: %s", got, tc.reason, resp.raw)
			}
			if tc.reason != "" && resp.body["error_description"] != "token exchange not permitted" {
				t.Errorf("error_description of a policy refusal = %v", resp.body["error_description"])
			}
			for k := range resp.body {
				if !slices.Contains([]string{"error", "error_description", "reason_code"}, k) {
					t.Errorf("unexpected member %q: %s", k, resp.raw)
				}
			}
			if form := req.form; strings.Contains(resp.raw, "eyJ") || (form.Get("subject_token") != "" && strings.Contains(resp.raw, form.Get("subject_token"))) {
				t.Errorf("response echoes a token: %s", resp.raw)
			}
			if cc := resp.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if n := h.store.count() - before; n != 0 {
				t.Errorf("%d token sessions stored by a refused exchange", n)
			}
			if asked := len(h.pdp.calls()) > 0; asked != tc.askPDP {
				t.Errorf("PDP asked = %t, want %t", asked, tc.askPDP)
			}
			events := h.audit.all()
			if tc.auditReason == "" {
				if len(events) != 0 {
					t.Fatalf("audit events for a request that never authenticated: %+v", events)
				}
				return
			}
			if len(events) != 1 {
				t.Fatalf("%d audit events, want 1: %+v", len(events), events)
			}
			ev := events[0]
			if ev.Type != audit.TypeTokenExchanged || ev.Decision != "DENY" || ev.ReasonCode != tc.auditReason ||
				ev.ClientID != req.client || ev.Action != "token:exchange" || ev.Attributes["error"] != tc.error {
				t.Errorf("audit event = %+v", ev)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("audit event invalid: %v", err)
			}
			assertNoToken(t, ev, req.form.Get("subject_token"), req.form.Get("actor_token"))
		})
	}
}

func assertNoToken(t *testing.T, ev audit.Event, tokens ...string) {
	t.Helper()
	text := ev.Subject + ev.ClientID + ev.Resource + strings.Join(ev.ActorChain, " ")
	for k, v := range ev.Attributes {
		text += k + v
	}
	for _, tok := range tokens {
		parts := strings.Split(tok, ".")
		for _, part := range parts {
			if len(part) > 16 && strings.Contains(text, part) {
				t.Errorf("audit event holds a token: %+v", ev)
			}
		}
	}
}

// TestImpersonation checks the minted claims, the response and the PDP
// input of impersonation, and the lifetime bounds.
func TestImpersonation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		client    string
		requested string // requested_lifetime
		want      int64  // lifetime in seconds
	}{
		{name: "client lifespan caps the request", client: "support-console", requested: "600", want: 300},
		{name: "request below the client lifespan", client: "support-console", requested: "120", want: 120},
		{name: "no request: client lifespan", client: "support-console", want: 300},
		{name: "impersonation bound caps a long client lifespan", client: consoleLong, want: 900},
		{name: "impersonation bound itself may be asked for", client: consoleLong, requested: "900", want: 900},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			agent := sam()
			agent.clientID = tc.client
			subject := h.mint(t, agent)
			f := impersonate(subject.raw)
			if tc.requested != "" {
				f.Set("requested_lifetime", tc.requested)
			}
			resp := h.exchange(t, tc.client, true, f)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.raw)
			}
			assertResponse(t, resp, "invoice:read", tc.want)
			raw := resp.body["access_token"].(string)
			header, claims := h.claims(t, raw)
			if header.ExtraHeaders["typ"] != "at+jwt" || header.KeyID != h.key.KeyID() {
				t.Errorf("header = %+v", header)
			}
			assertClaims(t, claims, map[string]any{
				"iss": issuer, "sub": "alice", "tenant": "acme", "client_id": tc.client, "scope": "invoice:read",
				"aud": []any{audience}, "roles": []any{"billing_approver"},
				"act": map[string]any{"sub": "sam", "client_id": tc.client},
			}, tc.want)

			calls := h.pdp.calls()
			if len(calls) != 1 {
				t.Fatalf("PDP asked %d times", len(calls))
			}
			want := &authzv1.CheckRequest{
				Principal: &authzv1.Principal{
					Subject: "sam", Tenant: "acme", Roles: []string{"support_agent"},
					Scopes:   []string{"openid", "support:read", "support:impersonate", "invoice:read"},
					ClientId: tc.client, Acr: "mfa", AuthTime: calls[0].GetPrincipal().GetAuthTime(),
				},
				Action: "token:exchange",
				Resource: &authzv1.Resource{Type: "token", Id: "alice", Tenant: "acme", Attributes: attrs(map[string]any{
					"mode": "impersonation", "client_id": tc.client, "audience": audience, "scope": "invoice:read",
					"lifetime_seconds": tc.want, "subject_exchanged": false,
					"actor_subject": "", "actor_client_id": "", "actor_tenant": "",
					"target_roles": "billing_approver", "ticket_id": "T-1", "ticket_access": "read",
				})},
			}
			assertCheck(t, calls[0], want)

			events := h.audit.all()
			if len(events) != 1 {
				t.Fatalf("audit events: %+v", events)
			}
			ev := events[0]
			if ev.Type != audit.TypeTokenExchanged || ev.Decision != "ALLOW" || ev.Subject != "alice" || ev.Tenant != "acme" ||
				!slices.Equal(ev.ActorChain, []string{"sam"}) || ev.ClientID != tc.client || ev.PolicyVersion != "policy-7" ||
				ev.ReasonCode != "allowed" || ev.Attributes["jti"] != claims["jti"] || ev.Attributes["mode"] != "impersonation" ||
				ev.Attributes["ticket_id"] != "T-1" || ev.Attributes["decision_id"] != "decision-1" || ev.Attributes["subject_jti"] != subject.jti ||
				ev.RequestID == "" || ev.RequestID != calls[0].GetContext().GetRequestId() {
				t.Errorf("audit event = %+v", ev)
			}
			assertNoToken(t, ev, subject.raw, raw)

			// The token is stored, in the subject token's grant: revoking that
			// grant (the agent signs out) revokes it too.
			sig := raw[strings.LastIndexByte(raw, '.')+1:]
			rec, err := h.store.GetTokenSession(t.Context(), sig)
			if err != nil || rec.RequestID != subject.requestID || rec.ClientID != tc.client || rec.Subject != "alice" {
				t.Fatalf("stored session = %+v, %v", rec, err)
			}
			if _, err := h.store.RevokeRequest(t.Context(), subject.requestID); err != nil {
				t.Fatal(err)
			}
			if _, err := h.store.GetTokenSession(t.Context(), sig); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("exchanged token survives its subject's grant: %v", err)
			}
		})
	}
}

// TestDelegation checks delegation's claims, PDP input and the nesting of
// act through a second exchange: a chain of two actors.
func TestDelegation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	user := h.mint(t, alice())
	actor := h.mint(t, exporter())
	resp := h.exchange(t, "support-export", true, with(delegate(user.raw, actor.raw), "scope", "", "requested_lifetime", "60", "audience", audience))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.raw)
	}
	// No scope asked: the subject token's scopes the client may request.
	assertResponse(t, resp, "invoice:read", 60)
	first := resp.body["access_token"].(string)
	_, claims := h.claims(t, first)
	assertClaims(t, claims, map[string]any{
		"iss": issuer, "sub": "alice", "tenant": "acme", "client_id": "support-export", "scope": "invoice:read",
		"aud": []any{audience}, "roles": []any{"billing_approver"},
		"act": map[string]any{"sub": "support-export", "client_id": "support-export"},
	}, 60)
	calls := h.pdp.calls()
	if len(calls) != 1 {
		t.Fatalf("PDP asked %d times", len(calls))
	}
	assertCheck(t, calls[0], &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "alice", Tenant: "acme", Roles: []string{"billing_approver"},
			Scopes:   []string{"openid", "invoice:read", "invoice:write", "support:write"},
			ClientId: "invoice-web", Acr: "mfa", AuthTime: calls[0].GetPrincipal().GetAuthTime(),
		},
		Action: "token:exchange",
		Resource: &authzv1.Resource{Type: "token", Id: "alice", Tenant: "acme", Attributes: attrs(map[string]any{
			"mode": "delegation", "client_id": "support-export", "audience": audience, "scope": "invoice:read",
			"lifetime_seconds": int64(60), "subject_exchanged": false,
			"actor_subject": "support-export", "actor_client_id": "support-export", "actor_tenant": "acme",
			"target_roles": "billing_approver", "ticket_id": "", "ticket_access": "",
		})},
	})

	// Re-exchange: the delegated token is the subject, a fresh actor
	// token acts; the first actor nests below.
	second := h.exchange(t, "support-export", true, delegate(first, h.mint(t, exporter()).raw))
	if second.status != http.StatusOK {
		t.Fatalf("re-exchange: status %d: %s", second.status, second.raw)
	}
	_, claims = h.claims(t, second.body["access_token"].(string))
	assertClaims(t, claims, map[string]any{
		"iss": issuer, "sub": "alice", "tenant": "acme", "client_id": "support-export", "scope": "invoice:read",
		"aud": []any{audience}, "roles": []any{"billing_approver"},
		"act": map[string]any{"sub": "support-export", "client_id": "support-export",
			"act": map[string]any{"sub": "support-export", "client_id": "support-export"}},
	}, 300)
	calls = h.pdp.calls()
	principal := calls[1].GetPrincipal()
	if principal.GetClientId() != "support-export" || len(principal.GetActorChain()) != 1 ||
		principal.GetActorChain()[0].GetSubject() != "support-export" || principal.GetAcr() != "" {
		t.Errorf("principal of the re-exchange = %v", principal)
	}
	if !calls[1].GetResource().GetAttributes()["subject_exchanged"].GetBoolValue() {
		t.Error("subject_exchanged is false for an exchanged subject token")
	}
	events := h.audit.all()
	if len(events) != 2 || !slices.Equal(events[1].ActorChain, []string{"support-export", "support-export"}) || events[1].Decision != "ALLOW" {
		t.Errorf("audit events = %+v", events)
	}
}

// TestImpersonationThenDelegation: the export job acting for alice with
// the token sam obtained by impersonating her: act nests the job over sam.
func TestImpersonationThenDelegation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	imp := h.exchange(t, "support-console", true, impersonate(h.mint(t, sam()).raw))
	if imp.status != http.StatusOK {
		t.Fatalf("impersonation: %d %s", imp.status, imp.raw)
	}
	resp := h.exchange(t, "support-export", true, delegate(imp.body["access_token"].(string), h.mint(t, exporter()).raw))
	if resp.status != http.StatusOK {
		t.Fatalf("delegation: %d %s", resp.status, resp.raw)
	}
	_, claims := h.claims(t, resp.body["access_token"].(string))
	assertClaims(t, claims, map[string]any{
		"iss": issuer, "sub": "alice", "tenant": "acme", "client_id": "support-export", "scope": "invoice:read",
		"aud": []any{audience}, "roles": []any{"billing_approver"},
		"act": map[string]any{"sub": "support-export", "client_id": "support-export",
			"act": map[string]any{"sub": "sam", "client_id": "support-console"}},
	}, 300)
	if events := h.audit.all(); len(events) != 2 || !slices.Equal(events[1].ActorChain, []string{"support-export", "sam"}) {
		t.Errorf("audit events = %+v", events)
	}
	// Introspection (RFC 7662) reports the token with its actor chain.
	got := h.introspect(t, resp.body["access_token"].(string))
	if got["active"] != true || got["sub"] != "alice" || got["client_id"] != "support-export" || got["tenant"] != "acme" ||
		!equalJSON(got["act"], claims["act"]) || got["jti"] != claims["jti"] {
		t.Errorf("introspection = %v", got)
	}
}

// TestGrantServed: a provider with the grant serves it.
func TestGrantServed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// An unauthenticated exchange is refused for authentication, not as
	// an unsupported grant.
	resp := h.exchange(t, "nobody", false, impersonate("x.y.z"))
	if resp.status != http.StatusUnauthorized || resp.body["error"] != "invalid_client" {
		t.Fatalf("got %d %s", resp.status, resp.raw)
	}
}

// TestRequestID: the caller's X-Request-Id, when valid, names the exchange
// in the PDP input and the audit event; otherwise the token request's own
// id does.
func TestRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header string
		wantHeader   bool
	}{
		{name: "valid", header: "req-0123456789abcdef", wantHeader: true},
		{name: "invalid", header: "req id; drop table"},
		{name: "absent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			header := http.Header{}
			if tc.header != "" {
				header.Set("X-Request-Id", tc.header)
			}
			resp := h.exchangeWith(t, "support-console", true, impersonate(h.mint(t, sam()).raw), header)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.raw)
			}
			got := h.pdp.calls()[0].GetContext().GetRequestId()
			if events := h.audit.all(); len(events) != 1 || events[0].RequestID != got {
				t.Fatalf("audit request id %+v, PDP request id %q", events, got)
			}
			if (got == tc.header) != tc.wantHeader || got == "" {
				t.Errorf("request id = %q with X-Request-Id %q", got, tc.header)
			}
		})
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	t.Parallel()
	if _, err := exchange.New(exchange.Config{Issuer: issuer}); err == nil {
		t.Fatal("New accepted a config without keys, stores, PDP and audit")
	}
}

// assertResponse checks an RFC 8693 §2.2.1 response.
func assertResponse(t *testing.T, resp response, scope string, lifetime int64) {
	t.Helper()
	if resp.body["issued_token_type"] != accessTokenType || resp.body["token_type"] != "Bearer" ||
		resp.body["scope"] != scope || resp.body["expires_in"] != float64(lifetime) {
		t.Errorf("response = %s", resp.raw)
	}
	for _, absent := range []string{"refresh_token", "id_token"} {
		if _, ok := resp.body[absent]; ok {
			t.Errorf("response has %s: %s", absent, resp.raw)
		}
	}
	if resp.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", resp.header.Get("Cache-Control"))
	}
}

// assertClaims checks claims against want exactly: the same claim names
// (besides exp, iat, nbf and jti, which it checks for a lifetime of
// lifetime seconds) and values.
func assertClaims(t *testing.T, claims, want map[string]any, lifetime int64) {
	t.Helper()
	for _, k := range []string{"acr", "amr", "auth_time", "may_act", "cnf"} {
		if _, ok := claims[k]; ok {
			t.Errorf("exchanged token carries %s: %v", k, claims)
		}
	}
	exp, _ := claims["exp"].(float64)
	iat, _ := claims["iat"].(float64)
	if int64(exp-iat) != lifetime || claims["nbf"] != claims["iat"] || claims["jti"] == "" {
		t.Errorf("exp %v iat %v nbf %v jti %v: want a lifetime of %d", exp, iat, claims["nbf"], claims["jti"], lifetime)
	}
	if now := float64(time.Now().Unix()); exp > now+float64(lifetime)+1 {
		t.Errorf("exp %v is beyond now + %d", exp, lifetime)
	}
	var names []string
	for k := range claims {
		switch k {
		case "exp", "iat", "nbf", "jti":
		default:
			names = append(names, k)
		}
	}
	var wantNames []string
	for k := range want {
		wantNames = append(wantNames, k)
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("claims %v, want exactly %v", names, wantNames)
	}
	for k, w := range want {
		if !equalJSON(claims[k], w) {
			t.Errorf("%s = %#v, want %#v", k, claims[k], w)
		}
	}
}

func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k := range x {
			if !equalJSON(x[k], y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, equalJSON)
	}
	return a == b
}

// attrs builds typed PDP attributes: string, int64 and bool values.
func attrs(m map[string]any) map[string]*authzv1.AttributeValue {
	out := map[string]*authzv1.AttributeValue{}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: x}}
		case int64:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: x}}
		case bool:
			out[k] = &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: x}}
		}
	}
	return out
}

// assertCheck compares a PDP request with want, its context aside, which
// must carry a request id, a recent time and the caller's address.
func assertCheck(t *testing.T, got, want *authzv1.CheckRequest) {
	t.Helper()
	c := got.GetContext()
	if c.GetRequestId() == "" || time.Since(c.GetTime().AsTime()) > time.Minute || c.GetSourceIp() != "127.0.0.1" {
		t.Errorf("context = %v", c)
	}
	got = proto.CloneOf(got)
	got.Context = nil
	if !proto.Equal(got, want) {
		t.Errorf("PDP input =\n%s\nwant\n%s", protojson.Format(got), protojson.Format(want))
	}
}
