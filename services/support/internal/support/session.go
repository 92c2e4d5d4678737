package support

import (
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"
)

// Session is an agent acting as a ticket's customer. Its row holds the
// token's jti, never the token: the token lives only in the memory of the
// process that started the session (see vault).
type Session struct {
	ID       string
	TicketID string
	Tenant   string
	Customer string
	// Agent is the subject of the agent acting as the customer.
	Agent string
	// JTI is the impersonation token's jti, for audit and revocation
	// lookups.
	JTI string
	// Scopes are the impersonation token's scopes.
	Scopes []string
	// StartTime, ExpireTime and EndTime have microsecond precision and are
	// in UTC. ExpireTime is the token's exp; EndTime is zero unless the
	// session was ended before it expired.
	StartTime  time.Time
	ExpireTime time.Time
	EndTime    time.Time
}

// Active reports whether s can still act as the customer at now.
func (s Session) Active(now time.Time) bool {
	return s.EndTime.IsZero() && now.Before(s.ExpireTime)
}

// Bounds of StartImpersonation's input.
const (
	// MaxSessionTTL is the longest impersonation session, and the
	// lifetime asked for when the agent asks for none (RFC 8693 exchanges
	// for impersonation are capped at 15 minutes by policy).
	MaxSessionTTL = 15 * time.Minute
	// MaxScopes bounds the scopes an agent may list.
	MaxScopes = 16
)

// scopePattern is one scope token of the Gatehouse scope catalog, such as
// "invoice:read".
var scopePattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}(:[a-z0-9_.-]{1,62})?$`)

// SessionTTL returns the session length for a requested number of
// seconds: 0 means MaxSessionTTL; negative or above it is an error
// wrapping ErrInvalid.
func SessionTTL(seconds int) (time.Duration, error) {
	switch {
	case seconds < 0:
		return 0, invalid("ttl_seconds must not be negative")
	case seconds == 0:
		return MaxSessionTTL, nil
	case time.Duration(seconds)*time.Second > MaxSessionTTL:
		return 0, invalid(fmt.Sprintf("ttl_seconds must be at most %d (15 minutes)", int(MaxSessionTTL/time.Second)))
	}
	return time.Duration(seconds) * time.Second, nil
}

// NormalizeScopes returns the requested scopes sorted, or an error wrapping
// ErrInvalid when one is malformed or repeated, or there are too many.
// Empty means "what the ticket grants" (Access.Scopes).
func NormalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) > MaxScopes {
		return nil, invalid(fmt.Sprintf("scopes must list at most %d scopes", MaxScopes))
	}
	out := slices.Clone(scopes)
	slices.Sort(out)
	for i, s := range out {
		if !scopePattern.MatchString(s) {
			return nil, invalid("scopes must be scope names such as invoice:read")
		}
		if i > 0 && out[i-1] == s {
			return nil, invalid("scopes must not repeat a scope")
		}
	}
	return out, nil
}

// IssuedToken is an access token the issuer issued to the support service
// by token exchange, with the claims the issuer signed (verified by the
// Issuer port before it is returned).
type IssuedToken struct {
	// Token is the raw JWT. Never log it.
	Token    string
	Subject  string
	Tenant   string
	ClientID string
	JTI      string
	Scopes   []string
	Expiry   time.Time
	// ActorSubject and ActorClientID are the outermost act claim: the
	// party acting for Subject.
	ActorSubject  string
	ActorClientID string
}

// Credential is what a call to another service is made with: the token
// and the identity it verifies to (which the gateway's identity headers
// would carry).
func (t IssuedToken) Credential() Credential {
	return Credential{Token: t.Token, Subject: t.Subject, Tenant: t.Tenant, ClientID: t.ClientID}
}

// Credential is a bearer token and the verified identity it stands for.
type Credential struct {
	// Token is the raw access token. Never log it.
	Token    string
	Subject  string
	Tenant   string
	ClientID string
}

// vault keeps the impersonation tokens of this process's sessions in
// memory only, until they expire: the tokens are never written to a store
// or a log. Safe for concurrent use.
type vault struct {
	mu      sync.Mutex
	entries map[string]heldToken // by session id
}

type heldToken struct {
	cred   Credential
	expiry time.Time
}

func newVault() *vault { return &vault{entries: map[string]heldToken{}} }

// put holds cred for session id until expiry, and forgets every token that
// has expired by now (the sweep: the map never outgrows the live sessions).
func (v *vault) put(id string, cred Credential, expiry, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, e := range v.entries {
		if !now.Before(e.expiry) {
			delete(v.entries, k)
		}
	}
	v.entries[id] = heldToken{cred: cred, expiry: expiry}
}

// get returns the token of session id if it is held and not expired at now.
func (v *vault) get(id string, now time.Time) (Credential, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.entries[id]
	if !ok {
		return Credential{}, false
	}
	if !now.Before(e.expiry) {
		delete(v.entries, id)
		return Credential{}, false
	}
	return e.cred, true
}

// forget drops the token of session id.
func (v *vault) forget(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.entries, id)
}
