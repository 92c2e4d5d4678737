package token

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// MaxBodyBytes bounds a token request body.
const MaxBodyBytes = 64 << 10

// repeatable lists the parameters that may appear more than once: audience
// (RFC 8693 §2.1). Every other parameter must appear at most once (RFC 6749 §3.2).
const repeatable = "audience"

// Endpoint serves POST /oauth2/token.
type Endpoint struct {
	provider *Provider
	logger   *slog.Logger
}

// NewEndpoint returns the token endpoint of p.
func NewEndpoint(p *Provider) *Endpoint {
	return &Endpoint{provider: p, logger: p.cfg.Logger}
}

// ServeHTTP answers a token request with a token response or an RFC 6749
// §5.2 error. A rejected request changes nothing.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.writeError(ctx, w, r, nil, withStatus(fosite.ErrInvalidRequest.WithHint("The token endpoint accepts POST only."), http.StatusMethodNotAllowed))
		return
	}
	if err := parseForm(w, r, e.provider.grantTypes); err != nil {
		e.writeError(ctx, w, r, nil, err)
		return
	}

	ctx = withRequestScope(ctx, r.PostForm.Get("grant_type"))
	ar, err := e.provider.NewAccessRequest(ctx, r, NewSession())
	if err != nil {
		e.writeError(ctx, w, r, ar, err)
		return
	}
	resp, err := e.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		e.writeError(ctx, w, r, ar, err)
		return
	}
	// The code and refresh grants replace the session with the stored one.
	session, ok := ar.GetSession().(*Session)
	if !ok || session.JWTClaims == nil {
		e.writeError(ctx, w, r, ar, fosite.ErrServerError.WithDebugf("session is %T", ar.GetSession()))
		return
	}
	// fosite counts expires_in from "now" after signing and rounds down;
	// report the lifetime the token really has.
	exp := session.GetExpiresAt(fosite.AccessToken)
	resp.SetExpiresIn(exp.Sub(session.JWTClaims.IssuedAt))

	e.logIssued(ctx, ar, session, resp)
	e.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// parseForm reads the bounded form body and rejects what fosite would let
// through: other media types, repeated parameters and grant types the
// endpoint does not serve (those not in served).
func parseForm(w http.ResponseWriter, r *http.Request, served []string) error {
	if err := readForm(w, r, repeatable); err != nil {
		return err
	}
	if grant := r.PostForm.Get("grant_type"); grant != "" && !slices.Contains(served, grant) {
		return fosite.ErrUnsupportedGrantType.WithDebugf("grant_type %q", truncate(grant))
	}
	return nil
}

// withStatus returns a copy of err answered with HTTP status code.
func withStatus(err *fosite.RFC6749Error, code int) *fosite.RFC6749Error {
	out := *err
	out.CodeField = code
	return &out
}

// writeError answers with err in RFC 6749 §5.2 form and logs the detail the
// client does not see (hint and debug), never a secret.
func (e *Endpoint) writeError(ctx context.Context, w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, err error) {
	rfcErr, ok := errors.AsType[*fosite.RFC6749Error](err)
	if !ok {
		rfcErr = fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	denial, denied := errors.AsType[*PolicyDenial](err)
	if errors.Is(err, store.ErrInactive) || errors.Is(err, store.ErrRevoked) {
		// A code or refresh token used twice at the same moment: the loser
		// is told what happened (the grant is already revoked), not 500.
		rfcErr = fosite.ErrInvalidGrant.WithHint("The grant was already used; every token issued from it is revoked.").WithDebug(err.Error())
	}
	level := slog.LevelInfo
	if rfcErr.CodeField >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	e.logger.Log(ctx, level, "token request rejected",
		slog.String("error", rfcErr.ErrorField),
		slog.Int("status", rfcErr.CodeField),
		slog.String("hint", rfcErr.HintField),
		slog.String("debug", rfcErr.DebugField),
		slog.String("client_id", presentedClientID(r, ar)),
		slog.String("grant_type", truncate(r.PostForm.Get("grant_type"))),
	)
	if rfcErr.CodeField == http.StatusUnauthorized {
		// RFC 6749 §5.2 and RFC 9110 §11.6.1: a 401 names the scheme to use.
		w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
	}
	if denied && validReasonCode(denial.ReasonCode) {
		writeDenial(w, rfcErr, denial.ReasonCode)
		return
	}
	e.provider.WriteAccessError(ctx, w, ar, rfcErr)
}

// PolicyDenial is the cause (wrapped by a fosite.RFC6749Error) of a token
// request a policy refused. The token endpoint adds ReasonCode to the RFC
// 6749 §5.2 error response as the member "reason_code", a Gatehouse
// extension: a stable snake_case code that names the rule that refused,
// never the policy's text or private attribute values.
type PolicyDenial struct {
	// ReasonCode is the decision's reason code.
	ReasonCode string
}

// Error implements error.
func (d *PolicyDenial) Error() string { return "token: denied by policy: " + d.ReasonCode }

// validReasonCode accepts what may be shown as a reason code: 1 to 64
// bytes of [a-z0-9_]. Anything else from a PDP is withheld.
func validReasonCode(code string) bool {
	if code == "" || len(code) > 64 {
		return false
	}
	for _, c := range []byte(code) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// writeDenial answers with err in RFC 6749 §5.2 form plus "reason_code";
// error_description is err's description and hint, never its debug.
func writeDenial(w http.ResponseWriter, err *fosite.RFC6749Error, code string) {
	body, mErr := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		ReasonCode  string `json:"reason_code"`
	}{err.ErrorField, err.WithExposeDebug(false).GetDescription(), code})
	if mErr != nil {
		body = []byte(`{"error":"server_error"}`)
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(err.CodeField)
	_, _ = w.Write(body)
}

// logIssued reports an issued token to the observer (audit log) and writes
// its log line: who, for which tenant, scopes and audience, its jti and
// expiry. Never the token itself.
func (e *Endpoint) logIssued(ctx context.Context, ar fosite.AccessRequester, session *Session, resp fosite.AccessResponder) {
	tenant, _ := session.JWTClaims.Extra["tenant"].(string)
	ev := Issued{
		GrantType:    strings.Join(ar.GetGrantTypes(), " "),
		ClientID:     ar.GetClient().GetID(),
		Subject:      session.JWTClaims.Subject,
		Tenant:       tenant,
		RequestID:    ar.GetID(),
		JTI:          session.JWTClaims.JTI,
		ExpiresAt:    session.GetExpiresAt(fosite.AccessToken),
		Scopes:       slices.Clone(ar.GetGrantedScopes()),
		Audience:     slices.Clone(ar.GetGrantedAudience()),
		RefreshToken: resp.GetExtra("refresh_token") != nil,
		IDToken:      resp.GetExtra("id_token") != nil,
	}
	e.provider.cfg.observer().Issued(ctx, ev)
	e.logger.InfoContext(ctx, "access token issued",
		slog.String("client_id", ev.ClientID),
		slog.String("sub", ev.Subject),
		slog.String("tenant", ev.Tenant),
		slog.String("grant_type", ev.GrantType),
		slog.Any("scopes", ev.Scopes),
		slog.Any("audience", ev.Audience),
		slog.String("jti", ev.JTI),
		slog.Time("exp", ev.ExpiresAt),
		slog.Bool("refresh_token", ev.RefreshToken),
		slog.Bool("id_token", ev.IDToken),
	)
}

// presentedClientID is the authenticated client's id, else the id the
// request claimed (truncated: it is caller input).
func presentedClientID(r *http.Request, ar fosite.AccessRequester) string {
	if ar != nil && ar.GetClient() != nil && ar.GetClient().GetID() != "" {
		return ar.GetClient().GetID()
	}
	if user, _, ok := r.BasicAuth(); ok {
		return truncate(user)
	}
	return truncate(r.PostForm.Get("client_id"))
}

func truncate(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
