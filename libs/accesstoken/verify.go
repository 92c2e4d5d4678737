package accesstoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Verification errors. Every one of them means "not a valid token for us";
// callers answer all of them with 401 invalid_token and keep the detail in
// their logs. ErrKeysUnavailable is the exception: the verifier could not get
// the issuer's keys at all, which is our outage, not the caller's fault.
var (
	ErrMalformed       = errors.New("accesstoken: malformed token")
	ErrTooLarge        = errors.New("accesstoken: token too large")
	ErrHeader          = errors.New("accesstoken: header not allowed")
	ErrType            = errors.New("accesstoken: not an access token (typ)")
	ErrUnknownKey      = errors.New("accesstoken: unknown signing key")
	ErrSignature       = errors.New("accesstoken: bad signature")
	ErrIssuer          = errors.New("accesstoken: wrong issuer")
	ErrAudience        = errors.New("accesstoken: wrong audience")
	ErrExpired         = errors.New("accesstoken: expired")
	ErrNotYetValid     = errors.New("accesstoken: not yet valid")
	ErrMissingClaim    = errors.New("accesstoken: required claim missing")
	ErrKeysUnavailable = errors.New("accesstoken: issuer keys unavailable")
	ErrLifetime        = errors.New("accesstoken: lifetime longer than allowed")
	ErrSenderBound     = errors.New("accesstoken: sender-constrained token (cnf) not supported here")
)

// MaxTokenBytes bounds the size of a token we are willing to parse. Gatehouse
// tokens are well under 2 KiB; anything larger is refused before decoding.
const MaxTokenBytes = 8 << 10

// allowedAlgorithms returns the signature allow-list: never none, never HMAC.
func allowedAlgorithms() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{jose.ES256} }

// headerAllowed reports whether a JOSE header parameter may appear in an
// access token. Anything but alg, kid and typ (jku, x5u, x5c, jwk, crit,
// b64...) could point the verifier at an attacker's key or change how the
// signature is computed.
func headerAllowed(name string) bool {
	switch name {
	case "alg", "kid", "typ":
		return true
	}
	return false
}

// Config configures a Verifier.
type Config struct {
	// Issuer is the required iss value.
	Issuer string
	// Audience is the value that must appear in aud.
	Audience string
	// Keys supplies the issuer's public keys (usually a *JWKS).
	Keys KeySource
	// Leeway tolerates clock skew on exp, nbf and iat. Default 30s.
	Leeway time.Duration
	// MaxLifetime is the longest exp - iat accepted. Default one hour: access
	// tokens are short-lived (five minutes by default), so a token valid for
	// longer was not issued under Gatehouse's profile.
	MaxLifetime time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// KeySource finds the issuer's public key for a kid.
type KeySource interface {
	// Key returns the key with id kid, or ErrUnknownKey, or
	// ErrKeysUnavailable when no key set could be obtained.
	Key(ctx context.Context, kid string) (*jose.JSONWebKey, error)
}

// Verifier checks access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg Config
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg Config) (*Verifier, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("accesstoken: issuer is required")
	case cfg.Audience == "":
		return nil, errors.New("accesstoken: audience is required")
	case cfg.Keys == nil:
		return nil, errors.New("accesstoken: key source is required")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

// wireClaims is the JSON form of the claims Gatehouse issues.
type wireClaims struct {
	jwt.Claims
	ClientID string     `json:"client_id"`
	Scope    string     `json:"scope"`
	Tenant   string     `json:"tenant"`
	Roles    []string   `json:"roles"`
	ACR      string     `json:"acr"`
	AMR      []string   `json:"amr"`
	AuthTime int64      `json:"auth_time"`
	Act      *wireActor `json:"act"`
	// Cnf binds the token to a key (RFC 7800, RFC 9449 DPoP). This verifier
	// cannot check a proof of possession, so a bound token is refused rather
	// than accepted as a plain bearer token.
	Cnf json.RawMessage `json:"cnf"`
}

type wireActor struct {
	Subject  string     `json:"sub"`
	ClientID string     `json:"client_id"`
	Act      *wireActor `json:"act"`
}

// maxActorDepth bounds the act chain we accept.
const maxActorDepth = 8

// Verify parses raw, checks its header, signature and claims, and returns the
// claims. The error wraps one of the Err* values.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > MaxTokenBytes {
		return nil, ErrTooLarge
	}
	if err := checkHeader(raw); err != nil {
		return nil, err
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgorithms())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return nil, fmt.Errorf("%w: kid is required", ErrHeader)
	}
	key, err := v.cfg.Keys.Key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return nil, err
	}
	var wc wireClaims
	if err := tok.Claims(key, &wc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return v.checkClaims(&wc)
}

// checkHeader decodes the protected header and enforces the header
// allow-list and the RFC 9068 typ before any cryptography runs.
func checkHeader(raw string) error {
	dot := strings.IndexByte(raw, '.')
	if dot <= 0 || strings.Count(raw, ".") != 2 {
		return fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw[:dot])
	if err != nil {
		return fmt.Errorf("%w: header encoding", ErrMalformed)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b, &hdr); err != nil {
		return fmt.Errorf("%w: header json", ErrMalformed)
	}
	for k := range hdr {
		if !headerAllowed(k) {
			return fmt.Errorf("%w: %q", ErrHeader, k)
		}
	}
	var typ string
	if err := json.Unmarshal(hdr["typ"], &typ); err != nil {
		return fmt.Errorf("%w: missing", ErrType)
	}
	// RFC 9068 section 4: "at+jwt", optionally with the "application/" prefix.
	typ = strings.ToLower(typ)
	if typ != "at+jwt" && typ != "application/at+jwt" {
		return fmt.Errorf("%w: %q", ErrType, typ)
	}
	return nil
}

func (v *Verifier) checkClaims(wc *wireClaims) (*Claims, error) {
	now := v.cfg.Now()
	switch {
	case wc.Issuer != v.cfg.Issuer:
		return nil, ErrIssuer
	case !wc.Audience.Contains(v.cfg.Audience):
		return nil, ErrAudience
	case wc.Expiry == nil || wc.IssuedAt == nil:
		return nil, fmt.Errorf("%w: exp and iat", ErrMissingClaim)
	case wc.Subject == "" || wc.ClientID == "" || wc.Tenant == "" || wc.ID == "":
		return nil, fmt.Errorf("%w: sub, client_id, tenant and jti", ErrMissingClaim)
	case now.Add(-v.cfg.Leeway).After(wc.Expiry.Time()):
		return nil, ErrExpired
	case wc.NotBefore != nil && now.Add(v.cfg.Leeway).Before(wc.NotBefore.Time()):
		return nil, ErrNotYetValid
	case now.Add(v.cfg.Leeway).Before(wc.IssuedAt.Time()):
		return nil, fmt.Errorf("%w: issued in the future", ErrNotYetValid)
	case wc.Expiry.Time().Sub(wc.IssuedAt.Time()) > v.cfg.MaxLifetime:
		return nil, ErrLifetime
	case len(wc.Cnf) > 0 && string(wc.Cnf) != "null":
		return nil, ErrSenderBound
	}
	c := &Claims{
		Issuer:   wc.Issuer,
		Subject:  wc.Subject,
		Audience: []string(wc.Audience),
		Expiry:   wc.Expiry.Time(),
		IssuedAt: wc.IssuedAt.Time(),
		ID:       wc.ID,
		ClientID: wc.ClientID,
		Scopes:   strings.Fields(wc.Scope),
		Tenant:   wc.Tenant,
		Roles:    wc.Roles,
		ACR:      wc.ACR,
		AMR:      wc.AMR,
	}
	if wc.NotBefore != nil {
		c.NotBefore = wc.NotBefore.Time()
	}
	if wc.AuthTime > 0 {
		c.AuthTime = time.Unix(wc.AuthTime, 0)
	}
	actor, err := convertActor(wc.Act, 0)
	if err != nil {
		return nil, err
	}
	c.Actor = actor
	return c, nil
}

func convertActor(a *wireActor, depth int) (*Actor, error) {
	if a == nil {
		return nil, nil
	}
	if depth >= maxActorDepth {
		return nil, fmt.Errorf("%w: actor chain deeper than %d", ErrMalformed, maxActorDepth)
	}
	if a.Subject == "" {
		return nil, fmt.Errorf("%w: act.sub", ErrMissingClaim)
	}
	next, err := convertActor(a.Act, depth+1)
	if err != nil {
		return nil, err
	}
	return &Actor{Subject: a.Subject, ClientID: a.ClientID, Actor: next}, nil
}
