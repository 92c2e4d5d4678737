// Package discovery publishes what a client needs to find and trust the
// issuer: its metadata (RFC 8414, also served at the OpenID Connect
// discovery path) and its signing keys (JWKS).
package discovery

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Paths the documents are served at.
const (
	JWKSPath                = "/.well-known/jwks.json"
	OpenIDConfigurationPath = "/.well-known/openid-configuration"
	AuthorizationServerPath = "/.well-known/oauth-authorization-server"
)

// Metadata is the authorization server metadata. It lists exactly what the
// issuer implements today; a field appears only once the feature behind it
// is built.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint,omitempty"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint,omitempty"`
	JWKSURI                           string   `json:"jwks_uri"`
	ScopesSupported                   []string `json:"scopes_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// Introspection (RFC 7662) and revocation (RFC 7009) endpoints and the
	// client authentication each accepts; omitted while unset.
	IntrospectionEndpoint                     string   `json:"introspection_endpoint,omitempty"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported,omitempty"`
	RevocationEndpoint                        string   `json:"revocation_endpoint,omitempty"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported,omitempty"`
	// Authorization endpoint and OpenID Connect details; omitted while unset.
	ResponseModesSupported                     []string `json:"response_modes_supported,omitempty"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported,omitempty"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported,omitempty"`
	SubjectTypesSupported                      []string `json:"subject_types_supported,omitempty"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported,omitempty"`
	ClaimsSupported                            []string `json:"claims_supported,omitempty"`
	ACRValuesSupported                         []string `json:"acr_values_supported,omitempty"`
	PromptValuesSupported                      []string `json:"prompt_values_supported,omitempty"`
	// RevocationFeedEndpoint is the base URL of the Connect revocation feed
	// (gatehouse.revocation.v1.RevocationFeedService); a Gatehouse extension.
	RevocationFeedEndpoint string `json:"gatehouse_revocation_feed_endpoint,omitempty"`
}

// Document returns a handler serving body as a cacheable JSON document.
// Clients and gateways may cache it for maxAge; keep maxAge shorter than the
// time a new signing key is published before it signs.
func Document(body []byte, maxAge time.Duration) http.Handler {
	cacheControl := "public, max-age=" + strconv.Itoa(int(maxAge/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", cacheControl)
		_, _ = w.Write(body)
	})
}

// MetadataHandler serves m as JSON; an empty list is published as [], not
// null.
func MetadataHandler(m Metadata, maxAge time.Duration) (http.Handler, error) {
	for _, list := range []*[]string{&m.ScopesSupported, &m.ResponseTypesSupported, &m.GrantTypesSupported, &m.TokenEndpointAuthMethodsSupported} {
		if *list == nil {
			*list = []string{}
		}
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("discovery: marshal metadata: %w", err)
	}
	return Document(body, maxAge), nil
}
