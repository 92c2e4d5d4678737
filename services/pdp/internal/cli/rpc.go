package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// tokenPath is the issuer's token endpoint, relative to -issuer-url.
const tokenPath = "/oauth2/token" //nolint:gosec // G101: a URL path, not a credential

// adminClient returns a PolicyAdminService client that sends a policy:admin
// access token, fetched now from the issuer with the client credentials
// grant.
func (c *cli) adminClient(ctx context.Context) (authzv1connect.PolicyAdminServiceClient, error) {
	pdp, err := baseURL("pdp-url", c.pdpURL)
	if err != nil {
		return nil, err
	}
	token, err := c.adminToken(ctx)
	if err != nil {
		return nil, err
	}
	return authzv1connect.NewPolicyAdminServiceClient(c.http, pdp, connect.WithInterceptors(bearer(token))), nil
}

// decisionClient returns a DecisionService client; Check needs no token.
func (c *cli) decisionClient() (authzv1connect.DecisionServiceClient, error) {
	pdp, err := baseURL("pdp-url", c.pdpURL)
	if err != nil {
		return nil, err
	}
	return authzv1connect.NewDecisionServiceClient(c.http, pdp), nil
}

// adminToken gets a policy:admin access token for -client-id.
func (c *cli) adminToken(ctx context.Context) (string, error) {
	issuer, err := baseURL("issuer-url", c.issuerURL)
	if err != nil {
		return "", err
	}
	secret, err := c.clientSecret()
	if err != nil {
		return "", err
	}
	cfg := clientcredentials.Config{
		ClientID:     c.clientID,
		ClientSecret: secret,
		TokenURL:     issuer + tokenPath,
		Scopes:       []string{AdminScope},
		AuthStyle:    oauth2.AuthStyleInHeader, // client_secret_basic
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, c.http))
	if err != nil {
		return "", tokenError(cfg.TokenURL, c.clientID, c.timeout, err)
	}
	if tok.AccessToken == "" {
		return "", fmt.Errorf("get an admin token from %s failed: the response has no access_token", cfg.TokenURL)
	}
	return tok.AccessToken, nil
}

// clientSecret reads the admin client's secret from -client-secret-file,
// else from the environment. There is no flag for the secret itself: it
// would show in the process list.
func (c *cli) clientSecret() (string, error) {
	if c.secretFile != "" {
		b, err := os.ReadFile(filepath.Clean(c.secretFile))
		if err != nil {
			return "", fmt.Errorf("read -client-secret-file: %w", err)
		}
		secret := strings.TrimSpace(string(b))
		if secret == "" {
			return "", fmt.Errorf("-client-secret-file %s is empty", c.secretFile)
		}
		return secret, nil
	}
	if secret := c.env(EnvClientSecret); secret != "" {
		return secret, nil
	}
	return "", &usageError{msg: fmt.Sprintf("this command needs the secret of client %q: set $%s or -client-secret-file", c.clientID, EnvClientSecret)}
}

// tokenError describes a failed token request by what the issuer said,
// never by the response body or the request.
func tokenError(tokenURL, clientID string, timeout time.Duration, err error) error {
	op := fmt.Sprintf("get a %s token for %s from %s", AdminScope, clientID, tokenURL)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := op + " refused"
		switch {
		case re.ErrorCode != "":
			msg += ": " + re.ErrorCode
		case re.Response != nil:
			msg += ": HTTP " + re.Response.Status
		}
		if re.ErrorDescription != "" {
			msg += ": " + re.ErrorDescription
		}
		return errors.New(msg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s failed: no answer within %s (see -timeout)", op, timeout)
	}
	return fmt.Errorf("%s failed: %w", op, err)
}

// bearer sends token as the Authorization header of every call.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

// call makes one RPC with the -timeout deadline and describes its error
// for the operator.
func call[Req, Res any](ctx context.Context, c *cli, op string,
	method func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) (*Res, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := method(ctx, connect.NewRequest(msg))
	if err != nil {
		return nil, &rpcError{op: op, err: err, timeout: c.timeout}
	}
	return res.Msg, nil
}

// rpcError is a failed RPC, described as "<op> refused: <code>: <reason>:
// <message>" when the server answered with an error, or "<op> failed: ..."
// when it did not answer.
type rpcError struct {
	op      string
	err     error
	timeout time.Duration
}

func (e *rpcError) Error() string {
	var ce *connect.Error
	if !errors.As(e.err, &ce) {
		return fmt.Sprintf("%s failed: %v", e.op, e.err)
	}
	verb := "refused"
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown, connect.CodeInternal:
		verb = "failed"
	}
	parts := []string{e.op + " " + verb, ce.Code().String()}
	if r := enforce.ReasonOf(ce); r != "" {
		parts = append(parts, r)
	}
	msg := ce.Message()
	if ce.Code() == connect.CodeDeadlineExceeded {
		msg = fmt.Sprintf("no answer within %s (see -timeout)", e.timeout)
	}
	if msg != "" {
		parts = append(parts, msg)
	}
	return strings.Join(parts, ": ")
}

func (e *rpcError) Unwrap() error { return e.err }
