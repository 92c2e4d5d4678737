// Package catalogue is Gatehouse's attack-scenario catalogue: one table of
// attacks, each with its reference, the request it sends and the exact
// outcome the stack must give. The e2e/attacks suite runs every scenario
// against the containerised stack; docs/security/attack-scenarios.md is
// rendered from the same table (Render), so the page and the tests cannot
// drift. The package starts nothing: a scenario's Send and State get a
// Target, the stack's addresses and an HTTP client.
package catalogue

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Category groups scenarios in the catalogue and its page.
type Category string

// The categories, in the page's order.
const (
	TokenForgery Category = "token forgery"
	TokenMisuse  Category = "token misuse"
	OAuthFlow    Category = "OAuth flow"
	AuthzBypass  Category = "authorization bypass"
	Delegation   Category = "delegation and step-up abuse"
	Availability Category = "availability"
)

// Categories lists the categories in the page's order.
func Categories() []Category {
	return []Category{TokenForgery, TokenMisuse, OAuthFlow, AuthzBypass, Delegation, Availability}
}

// Outcome is what the stack must answer.
type Outcome struct {
	// Status is the HTTP status.
	Status int
	// Code is the Connect error code; empty for an answer that is not a
	// Connect error (the HTTP server's own 431).
	Code string
	// Reason is the google.rpc.ErrorInfo reason code; empty only with an
	// empty Code. With OAuthError, when set, it is the issuer's
	// "reason_code" of a refusal by policy.
	Reason string
	// Challenge, when set, must be contained in the WWW-Authenticate header.
	Challenge string
	// Location is the path the Location header must point to; empty, the
	// answer must have no Location header (no redirect). No Location may
	// carry an authorization code.
	Location string
	// OAuthError is the RFC 6749 error code of an answer of the issuer's
	// OAuth endpoints (which answer in that form, not Connect's): in the
	// JSON body, or, with Location, in the query of the error redirect to
	// the client (RFC 6749 section 4.1.2.1).
	OAuthError string
	// Dropped, when set, is for an attack on the connection rather than a
	// request (a slow client): the server must close the connection within
	// Dropped of the attack's start, either without an answer or after
	// one whose status is Status.
	Dropped time.Duration
}

// NoErrorInfo is Outcome.Reason for a Connect error that must carry no
// google.rpc.ErrorInfo: a refusal by the Connect library itself, before
// any Gatehouse code runs (a body over a server's read limit).
const NoErrorInfo = "(none)"

// Scenario is one attack.
type Scenario struct {
	// Name is unique in the catalogue: the subtest's name.
	Name string
	// Category groups it.
	Category Category
	// Reference is the RFC section or OWASP API Security 2023 id it tests.
	Reference string
	// Request says in one line what Send sends.
	Request string
	// Expect is the answer the stack must give.
	Expect Outcome
	// State, when set, is what the request tries to change (see
	// AcmeInvoices): it is read before and after Send and must be the same.
	State *State
	// Send sends the attack and returns the answer.
	Send func(ctx context.Context, t *Target) (*Response, error)
	// Verify, when set, checks an answer the stack accepts: that the attack
	// achieved nothing (see massAssignment).
	Verify *Verify
}

// Verify checks what an accepted attack did.
type Verify struct {
	// Name says what is checked, for the page.
	Name string
	// Check returns an error if the attack achieved something.
	Check func(ctx context.Context, t *Target, resp *Response) error
}

// State is a snapshot of something an attack tries to change.
type State struct {
	// Name says what it is, for the page.
	Name string
	// Read takes the snapshot.
	Read func(ctx context.Context, t *Target) (string, error)
}

// Target is the stack the scenarios run against.
type Target struct {
	// GatewayURL and IssuerURL are the base URLs reachable from the test.
	GatewayURL string
	IssuerURL  string
	// HTTP reaches both (and http://issuer:8080, the issuer identifier).
	HTTP *http.Client
	// PDPURL is the PDP's base URL, reachable from the test: the
	// DecisionService is not routed through the gateway.
	PDPURL string
	// TOTP returns a fresh code for a demo user's TOTP secret.
	TOTP func(ctx context.Context, secret string) (string, error)
	// IssuerKey returns the issuer's signing key that signs now and its
	// kid, for tokens whose signature is genuine and only their claims
	// are wrong.
	IssuerKey func(ctx context.Context) (kid string, key *ecdsa.PrivateKey, err error)

	// mu guards signedIn, the token responses of users signed in so far,
	// first, the honest tokens of the scenarios run so far, and observed,
	// what a scenario's Send saw besides its answer, for its Verify.
	mu       sync.Mutex
	signedIn map[string]*oauth2.Token
	first    map[string]firstTokens
	observed map[string]any
}

// observe keeps what the scenario name's Send saw besides the answer, for
// its Verify; keyed by scenario name, one run at a time.
func (t *Target) observe(name string, v any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.observed == nil {
		t.observed = map[string]any{}
	}
	t.observed[name] = v
}

// observation is what observe kept for name, as a T.
func observation[T any](t *Target, name string) (T, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.observed[name].(T)
	if !ok {
		return v, fmt.Errorf("scenario %q: Send recorded nothing for its Verify", name)
	}
	return v, nil
}

// Scenarios returns the catalogue, in the page's order within each category.
func Scenarios() []Scenario {
	var all []Scenario
	all = append(all, forgery()...)
	all = append(all, misuse()...)
	all = append(all, oauthFlow()...)
	all = append(all, authorization()...)
	all = append(all, bypass()...)
	all = append(all, delegation()...)
	all = append(all, availability()...)
	all = append(all, exhaustion()...)
	return all
}
