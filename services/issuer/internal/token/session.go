package token

import (
	"maps"
	"slices"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"
)

// Session is the fosite session behind every grant: the access token's
// claims and header (as fosite's oauth2.JWTSession, whose field names it
// keeps so stored sessions decode either way), the ID token's claims and
// header for OpenID Connect, and what Gatehouse needs to revoke the grant
// later (the consent and browser session it rests on). It is stored as JSON
// with each grant record and never shown to clients.
type Session struct {
	JWTClaims *jwt.JWTClaims
	JWTHeader *jwt.Headers
	ExpiresAt map[fosite.TokenType]time.Time
	Username  string
	Subject   string

	// IDClaims and IDHeader make the ID token (OpenID Connect only).
	IDClaims *jwt.IDTokenClaims `json:",omitempty"`
	IDHeader *jwt.Headers       `json:",omitempty"`

	// ConsentID is the consent record the grant rests on; withdrawing it
	// revokes the grant. Empty for client_credentials.
	ConsentID string `json:",omitempty"`
	// BrowserSessionID is the login session that authorized the grant.
	BrowserSessionID string `json:",omitempty"`
	// FamilyExpiresAt ends the grant's refresh-token family: set at the
	// first refresh token, it caps every rotated one, so rotation cannot
	// keep a grant alive forever.
	FamilyExpiresAt time.Time `json:",omitzero"`
	// LifetimeLimit, when positive, caps the access token's lifetime below
	// what the client's lifespan allows (token exchange's requested_lifetime
	// and its bound on impersonation).
	LifetimeLimit time.Duration `json:",omitempty"`
	// Exchange records how a token-exchange token came to be; nil for
	// every other grant. It is stored with the token's session, never put
	// in the token, so the origin of a live exchanged token can be traced.
	Exchange *ExchangeRecord `json:",omitempty"`
}

// ExchangeRecord is the provenance of a token issued by token exchange
// (RFC 8693): the mode, the tokens exchanged (by jti), the ticket the
// client stated and the policy decision that allowed it. It holds no
// token and no secret.
type ExchangeRecord struct {
	// Mode is "impersonation" or "delegation".
	Mode string
	// RequestID is the token request's id (the PDP input's request_id).
	RequestID string
	// SubjectJTI and ActorJTI name the subject and actor tokens.
	SubjectJTI, ActorJTI string `json:",omitempty"`
	// TicketID and TicketAccess are the support ticket the client stated
	// (impersonation only).
	TicketID, TicketAccess string `json:",omitempty"`
	// DecisionID, PolicyVersion and ReasonCode identify the PDP's decision.
	DecisionID, PolicyVersion, ReasonCode string `json:",omitempty"`
}

var (
	_ oauth2.JWTSessionContainer = (*Session)(nil)
	_ openid.Session             = (*Session)(nil)
)

// NewSession returns an empty session with the RFC 9068 access-token header
// (the signer adds the kid).
func NewSession() *Session {
	return &Session{
		JWTClaims: &jwt.JWTClaims{},
		JWTHeader: &jwt.Headers{Extra: map[string]any{"typ": AccessTokenType}},
	}
}

// GetJWTClaims implements oauth2.JWTSessionContainer.
func (s *Session) GetJWTClaims() jwt.JWTClaimsContainer {
	if s.JWTClaims == nil {
		s.JWTClaims = &jwt.JWTClaims{}
	}
	return s.JWTClaims
}

// GetJWTHeader implements oauth2.JWTSessionContainer.
func (s *Session) GetJWTHeader() *jwt.Headers {
	if s.JWTHeader == nil {
		s.JWTHeader = &jwt.Headers{Extra: map[string]any{"typ": AccessTokenType}}
	}
	return s.JWTHeader
}

// IDTokenClaims implements openid.Session.
func (s *Session) IDTokenClaims() *jwt.IDTokenClaims {
	if s.IDClaims == nil {
		s.IDClaims = &jwt.IDTokenClaims{}
	}
	return s.IDClaims
}

// IDTokenHeaders implements openid.Session.
func (s *Session) IDTokenHeaders() *jwt.Headers {
	if s.IDHeader == nil {
		s.IDHeader = &jwt.Headers{}
	}
	return s.IDHeader
}

// SetExpiresAt implements fosite.Session.
func (s *Session) SetExpiresAt(key fosite.TokenType, exp time.Time) {
	if s.ExpiresAt == nil {
		s.ExpiresAt = map[fosite.TokenType]time.Time{}
	}
	s.ExpiresAt[key] = exp
}

// GetExpiresAt implements fosite.Session.
func (s *Session) GetExpiresAt(key fosite.TokenType) time.Time { return s.ExpiresAt[key] }

// GetUsername implements fosite.Session.
func (s *Session) GetUsername() string { return s.Username }

// GetSubject implements fosite.Session.
func (s *Session) GetSubject() string { return s.Subject }

// Clone implements fosite.Session with a deep copy.
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	out := *s
	out.ExpiresAt = maps.Clone(s.ExpiresAt)
	if s.JWTClaims != nil {
		c := *s.JWTClaims
		c.Audience = slices.Clone(c.Audience)
		c.Scope = slices.Clone(c.Scope)
		c.Extra = cloneMap(c.Extra)
		out.JWTClaims = &c
	}
	out.JWTHeader = cloneHeaders(s.JWTHeader)
	if s.IDClaims != nil {
		c := *s.IDClaims
		c.Audience = slices.Clone(c.Audience)
		c.AuthenticationMethodsReferences = slices.Clone(c.AuthenticationMethodsReferences)
		c.Extra = cloneMap(c.Extra)
		out.IDClaims = &c
	}
	out.IDHeader = cloneHeaders(s.IDHeader)
	if s.Exchange != nil {
		x := *s.Exchange
		out.Exchange = &x
	}
	return &out
}

func cloneHeaders(h *jwt.Headers) *jwt.Headers {
	if h == nil {
		return nil
	}
	return &jwt.Headers{Extra: cloneMap(h.Extra)}
}

// cloneMap copies claim maps; their values are strings, numbers, string
// slices and nested claim maps (act), which it copies too.
func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case []string:
			v = slices.Clone(x)
		case map[string]any:
			v = cloneMap(x)
		}
		out[k] = v
	}
	return out
}
