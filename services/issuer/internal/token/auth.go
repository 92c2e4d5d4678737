package token

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// authenticator is fosite's client authentication strategy. It accepts a
// client secret in the Authorization header (client_secret_basic) or in the
// form body (client_secret_post), never both, and nothing else: client
// assertions (private_key_jwt, client_secret_jwt) are refused. Public
// clients are identified by client_id alone; the grant handlers decide what
// they may do.
type authenticator struct {
	clients store.ClientStore
	hasher  fosite.Hasher
}

func (a *authenticator) authenticate(ctx context.Context, r *http.Request, form url.Values) (fosite.Client, error) {
	if form.Has("client_assertion") || form.Has("client_assertion_type") {
		return nil, fosite.ErrInvalidClient.WithHint("Client assertions are not supported; use client_secret_basic or client_secret_post.")
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
		return nil, fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	if c.IsPublic() {
		if secret != "" {
			return nil, fosite.ErrInvalidClient.WithHint("A public client has no client secret.")
		}
		return c, nil
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
