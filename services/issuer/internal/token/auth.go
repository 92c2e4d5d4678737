package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// clientAssertionType is the only client_assertion_type accepted (RFC 7523 §2.2).
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxAssertionLifetime bounds exp of a client assertion: a short-lived,
// single-use credential, not a long-lived bearer secret.
const maxAssertionLifetime = 5 * time.Minute

// authenticator is fosite's client authentication strategy. A confidential
// client presents its secret in the Authorization header
// (client_secret_basic) or in the form (client_secret_post), never both,
// or, when registered for private_key_jwt, an ES256 client assertion
// (RFC 7523) and no secret. A public client is identified by client_id
// alone; the grant handlers decide what it may do.
type authenticator struct {
	clients store.ClientStore
	hasher  fosite.Hasher
	// assertions verifies client assertions: fosite's default strategy
	// (signature against the client's registered keys, alg, iss = sub =
	// client_id, aud = token URL, exp, single-use jti).
	assertions fosite.ClientAuthenticationStrategy
	tokenURL   string
}

func (a *authenticator) authenticate(ctx context.Context, r *http.Request, form url.Values) (fosite.Client, error) {
	if form.Has("client_assertion") || form.Has("client_assertion_type") {
		return a.authenticateAssertion(ctx, r, form)
	}
	id, secret, err := credentials(r, form)
	if err != nil {
		return nil, err
	}
	c, err := a.clients.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrInvalidClient.WithDebug("client id is not registered")
	}
	if err != nil {
		// The store failed, not the client: 503 tells it to retry (RFC
		// 7009 §2.2.1 at the revocation endpoint).
		return nil, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	if c.IsPublic() {
		if secret != "" {
			return nil, fosite.ErrInvalidClient.WithHint("A public client has no client secret.")
		}
		return c, nil
	}
	if c.EffectiveAuthMethod() == AuthMethodPrivateKeyJWT {
		return nil, fosite.ErrInvalidClient.WithHint("This client authenticates with private_key_jwt, not with a client secret.")
	}
	if secret == "" {
		return nil, fosite.ErrInvalidClient.WithDebug("confidential client presented no secret")
	}
	if err := a.hasher.Compare(ctx, c.GetHashedSecret(), []byte(secret)); err != nil {
		return nil, fosite.ErrInvalidClient.WithWrap(err).WithDebug("client secret does not match")
	}
	return c, nil
}

// credentials extracts client_id and client_secret from the Basic
// Authorization header or, without one, from the form (RFC 6749 §2.3.1).
func credentials(r *http.Request, form url.Values) (id, secret string, err error) {
	switch len(r.Header.Values("Authorization")) {
	case 0:
		id = form.Get("client_id")
		if id == "" {
			return "", "", fosite.ErrInvalidClient.WithHint("Client authentication is required: use client_secret_basic or client_secret_post.")
		}
		return id, form.Get("client_secret"), nil
	case 1:
	default:
		return "", "", fosite.ErrInvalidRequest.WithHint("The Authorization header must not be repeated.")
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", "", fosite.ErrInvalidClient.WithHint("The Authorization header must use the Basic scheme.")
	}
	if form.Has("client_secret") {
		return "", "", fosite.ErrInvalidRequest.WithHint("Use one client authentication method per request, not both client_secret_basic and client_secret_post.")
	}
	// RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", fosite.ErrInvalidClient.WithHint("The client id in the Authorization header is not form-urlencoded.")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", fosite.ErrInvalidClient.WithHint("The client secret in the Authorization header is not form-urlencoded.")
	}
	if id == "" {
		return "", "", fosite.ErrInvalidClient.WithHint("The Authorization header carries no client id.")
	}
	if formID := form.Get("client_id"); formID != "" && formID != id {
		return "", "", fosite.ErrInvalidRequest.WithHint("The client_id parameter does not match the Authorization header.")
	}
	return id, secret, nil
}

// authenticateAssertion checks a private_key_jwt request: exactly one
// client_assertion of the jwt-bearer type, no other credential, a
// lifetime of at most maxAssertionLifetime, then fosite's verification.
func (a *authenticator) authenticateAssertion(ctx context.Context, r *http.Request, form url.Values) (fosite.Client, error) {
	if form.Get("client_assertion_type") != clientAssertionType {
		return nil, fosite.ErrInvalidClient.WithHintf("client_assertion_type must be %s.", clientAssertionType)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" {
		return nil, fosite.ErrInvalidClient.WithHint("client_assertion is missing.")
	}
	if r.Header.Get("Authorization") != "" || form.Has("client_secret") {
		return nil, fosite.ErrInvalidRequest.WithHint("Use one client authentication method per request.")
	}
	if err := checkAssertionClaims(assertion, a.tokenURL, time.Now()); err != nil {
		return nil, err
	}
	if a.assertions == nil {
		return nil, fosite.ErrServerError.WithDebug("client assertion verification is not configured")
	}
	c, err := a.assertions(ctx, r, form)
	if errors.Is(err, fosite.ErrTemporarilyUnavailable) {
		// fosite reports any failed client lookup as invalid_client; one
		// that failed because the store did (Storage.GetClient) is not.
		return nil, fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
	}
	if err != nil {
		return nil, err
	}
	if c.IsPublic() {
		return nil, fosite.ErrInvalidClient.WithHint("A public client cannot authenticate.")
	}
	return c, nil
}

// checkAssertionClaims refuses an assertion whose exp is missing, past or
// further than maxAssertionLifetime away, or whose aud does not name the
// token endpoint. It reads the payload without verifying it: fosite
// verifies the signature next, so this check only rejects earlier, never
// accepts; and it runs before fosite spends the assertion's jti, so an
// assertion refused here can be corrected and sent again.
func checkAssertionClaims(assertion, tokenURL string, now time.Time) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 || len(assertion) > maxAssertionBytes {
		return fosite.ErrInvalidClient.WithHint("client_assertion is not a compact JWS.")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fosite.ErrInvalidClient.WithHint("client_assertion is not a compact JWS.")
	}
	var claims struct {
		Exp *float64        `json:"exp"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return fosite.ErrInvalidClient.WithHint("client_assertion must carry a numeric exp.")
	}
	var one string
	var many []string
	if json.Unmarshal(claims.Aud, &one) == nil {
		many = []string{one}
	} else if json.Unmarshal(claims.Aud, &many) != nil {
		many = nil
	}
	if !slices.Contains(many, tokenURL) {
		return fosite.ErrInvalidClient.WithHintf("client_assertion's aud must name the token endpoint %s.", tokenURL)
	}
	exp := time.Unix(int64(*claims.Exp), 0)
	if !exp.After(now) {
		return fosite.ErrInvalidClient.WithHint("client_assertion has expired.")
	}
	if exp.After(now.Add(maxAssertionLifetime)) {
		return fosite.ErrInvalidClient.WithHintf("client_assertion must expire within %s.", maxAssertionLifetime)
	}
	return nil
}

// maxAssertionBytes bounds the client_assertion parameter.
const maxAssertionBytes = 8 << 10
