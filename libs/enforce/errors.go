package enforce

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// ErrorDomain is the ErrorInfo domain of every Gatehouse edge error.
const ErrorDomain = "gatehouse.dev"

// Unauthenticated is the error for a missing or invalid token: Connect code
// unauthenticated (HTTP 401) with WWW-Authenticate: Bearer error="invalid_token".
// code is reason.MissingToken or reason.InvalidToken; the cause stays in the
// caller's logs.
func Unauthenticated(ctx context.Context, code string) *connect.Error {
	err := newError(ctx, connect.CodeUnauthenticated, code, "a valid bearer access token is required", nil)
	err.Meta().Set("WWW-Authenticate", `Bearer realm="gatehouse", error="invalid_token"`)
	return err
}

// Denied is the error for a decision that does not permit. A missing scope
// adds WWW-Authenticate: Bearer error="insufficient_scope", scope="..."; a
// step_up obligation becomes RFC 9470's 401 insufficient_user_authentication
// challenge; an ALLOW with an obligation this SDK cannot fulfil is denied as
// unsupported_obligation.
func Denied(ctx context.Context, d Decision) *connect.Error {
	code := d.ReasonCode
	if code == "" {
		code = reason.EvaluationError
	}
	meta := map[string]string{}
	if d.DecisionID != "" {
		meta["decision_id"] = d.DecisionID
	}
	if o, ok := d.stepUp(); ok {
		return stepUpChallenge(ctx, o, meta)
	}
	if d.State == authzv1.Decision_DECISION_ALLOW {
		return newError(ctx, connect.CodePermissionDenied, reason.UnsupportedObligation, "the decision carries an obligation this service cannot fulfil", meta)
	}
	msg := "not permitted"
	if d.Message != "" {
		msg = d.Message
	}
	scope := ""
	if code == reason.InsufficientScope && len(d.RequiredScopes) > 0 {
		// Also in the detail: gRPC carries metadata in trailers, where
		// net/http drops WWW-Authenticate.
		scope = quoteSafe(strings.Join(d.RequiredScopes, " "))
		meta["scope"] = scope
	}
	err := newError(ctx, connect.CodePermissionDenied, code, msg, meta)
	if scope != "" {
		err.Meta().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="gatehouse", error="insufficient_scope", scope="%s"`, scope))
	}
	return err
}

// stepUpChallenge is RFC 9470's challenge: re-authenticate with acr_values
// (and within max_age seconds), then retry.
func stepUpChallenge(ctx context.Context, o *authzv1.Obligation, meta map[string]string) *connect.Error {
	acr := quoteSafe(o.GetParams()["acr"])
	challenge := `Bearer realm="gatehouse", error="insufficient_user_authentication"`
	if acr != "" {
		meta["acr_values"] = acr
		challenge += fmt.Sprintf(`, acr_values="%s"`, acr)
	}
	if maxAge, err := strconv.Atoi(o.GetParams()["max_age"]); err == nil && maxAge >= 0 {
		meta["max_age"] = strconv.Itoa(maxAge)
		challenge += fmt.Sprintf(", max_age=%d", maxAge)
	}
	err := newError(ctx, connect.CodeUnauthenticated, reason.StepUpRequired, "a stronger or more recent authentication is required", meta)
	err.Meta().Set("WWW-Authenticate", challenge)
	return err
}

// Unavailable is the error for a dependency (the PDP, an upstream) that did
// not answer: Connect code unavailable (HTTP 503). The request is denied.
func Unavailable(ctx context.Context, code string) *connect.Error {
	return newError(ctx, connect.CodeUnavailable, code, "a dependency is unavailable; the request was denied", nil)
}

// Error returns a Connect error with code and an ErrorInfo whose reason is
// reasonCode and whose metadata carries the trace id.
func Error(ctx context.Context, code connect.Code, reasonCode, msg string) *connect.Error {
	return newError(ctx, code, reasonCode, msg, nil)
}

func newError(ctx context.Context, code connect.Code, reasonCode, msg string, meta map[string]string) *connect.Error {
	err := connect.NewError(code, errors.New(msg))
	if meta == nil {
		meta = map[string]string{}
	}
	if id := telemetry.TraceID(ctx); id != "" {
		meta["trace_id"] = id
	}
	info := &errdetails.ErrorInfo{Reason: reasonCode, Domain: ErrorDomain, Metadata: meta}
	if detail, derr := connect.NewErrorDetail(info); derr == nil {
		err.AddDetail(detail)
	}
	return err
}

// ReasonOf returns the ErrorInfo reason of a Connect error, or "".
func ReasonOf(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, verr := d.Value()
		if verr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// quoteSafe drops characters that would break an RFC 6750 quoted string.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
