package tokensession

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/ory/fosite"
)

// keptParameters are the request parameters a stored request keeps: those
// fosite's handlers read back later (redirect_uri for the exact match at
// the token endpoint, the PKCE challenge, the OIDC nonce and
// authentication requirements). Credentials (code, code_verifier,
// refresh_token, client_secret, client_assertion) are never kept.
var keptParameters = []string{
	"redirect_uri", "response_type", "scope", "audience",
	"code_challenge", "code_challenge_method",
	"nonce", "max_age", "prompt", "acr_values",
}

// storedRequest is the JSON form of a fosite request.
type storedRequest struct {
	ID                string          `json:"id"`
	RequestedAt       time.Time       `json:"requested_at"`
	ClientID          string          `json:"client_id"`
	RequestedScopes   []string        `json:"requested_scopes"`
	GrantedScopes     []string        `json:"granted_scopes"`
	RequestedAudience []string        `json:"requested_audience"`
	GrantedAudience   []string        `json:"granted_audience"`
	Form              url.Values      `json:"form,omitempty"`
	Session           json.RawMessage `json:"session"`
}

// EncodeRequest returns the stored form of r: ids, scopes, audiences, the
// kept parameters and the session.
func EncodeRequest(r fosite.Requester) ([]byte, error) {
	session, err := json.Marshal(r.GetSession())
	if err != nil {
		return nil, fmt.Errorf("tokensession: marshal session: %w", err)
	}
	form := url.Values{}
	for _, name := range keptParameters {
		if v, ok := r.GetRequestForm()[name]; ok {
			form[name] = slices.Clone(v)
		}
	}
	data, err := json.Marshal(storedRequest{
		ID:                r.GetID(),
		RequestedAt:       r.GetRequestedAt().UTC(),
		ClientID:          r.GetClient().GetID(),
		RequestedScopes:   r.GetRequestedScopes(),
		GrantedScopes:     r.GetGrantedScopes(),
		RequestedAudience: r.GetRequestedAudience(),
		GrantedAudience:   r.GetGrantedAudience(),
		Form:              form,
		Session:           session,
	})
	if err != nil {
		return nil, fmt.Errorf("tokensession: marshal request: %w", err)
	}
	return data, nil
}

// DecodeRequest rebuilds the request stored as data for client, decoding
// its session into session.
func DecodeRequest(data []byte, client fosite.Client, session fosite.Session) (*fosite.Request, error) {
	var s storedRequest
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("tokensession: unmarshal request: %w", err)
	}
	if s.ClientID != client.GetID() {
		return nil, fmt.Errorf("tokensession: request belongs to client %q, not %q", s.ClientID, client.GetID())
	}
	if err := json.Unmarshal(s.Session, session); err != nil {
		return nil, fmt.Errorf("tokensession: unmarshal session: %w", err)
	}
	r := fosite.NewRequest()
	r.ID = s.ID
	r.RequestedAt = s.RequestedAt
	r.Client = client
	r.Session = session
	r.RequestedScope = s.RequestedScopes
	r.GrantedScope = s.GrantedScopes
	r.RequestedAudience = s.RequestedAudience
	r.GrantedAudience = s.GrantedAudience
	if s.Form != nil {
		r.Form = s.Form
	}
	return r, nil
}
