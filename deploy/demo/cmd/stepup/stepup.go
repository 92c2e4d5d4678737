package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// Errors of the dance after a challenge.
var (
	// errOtherUser: someone else signed in for the step-up than the user
	// who was challenged. The client refuses to act for them.
	errOtherUser = errors.New("another user signed in for the step-up")
	// errStepUpNotMet: the new sign-in does not give what the challenge
	// asked for (acr or age), so retrying would only be challenged again.
	errStepUpNotMet = errors.New("the new sign-in does not meet the challenge")
	// errStillChallenged: the retry with the stepped-up token was
	// challenged again. The client does not loop.
	errStillChallenged = errors.New("the retry was challenged again")
)

// callTimeout bounds each call to the gateway.
const callTimeout = 30 * time.Second

// authorizer sends the user through the authorization endpoint
// (*signin.Authorizer; a fake in tests).
type authorizer interface {
	Authorize(ctx context.Context, req signin.Request) (signin.Result, error)
}

// config is the command line.
type config struct {
	issuer    string
	gateway   string
	invoiceID string
	scopes    []string
	clientID  string
	port      int
	open      bool
	timeout   time.Duration
}

// parseFlags reads the command line.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	var scope string
	fs := flag.NewFlagSet("stepup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.issuer, "issuer", "http://localhost:8080", "the issuer identifier (OIDC discovery)")
	fs.StringVar(&cfg.gateway, "gateway", "http://localhost:8000", "the gateway's base URL")
	fs.StringVar(&cfg.invoiceID, "invoice", "", "id of the invoice to approve (required)")
	fs.StringVar(&scope, "scope", "openid invoice:read invoice:approve", "space-separated scopes to request")
	fs.StringVar(&cfg.clientID, "client-id", "invoice-web", "the public client to sign in to (PKCE, loopback redirect)")
	fs.IntVar(&cfg.port, "port", 0, "port of the loopback redirect URI http://127.0.0.1:PORT/callback (0: any free port)")
	fs.BoolVar(&cfg.open, "open", false, "open the authorization URL with xdg-open, if installed")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "give up after this long (sign-ins included)")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(fs.Output(), "usage: stepup -invoice ID [flags]\n\nApproves an invoice through the gateway, stepping up the sign-in when challenged (RFC 9470).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg.scopes = strings.Fields(scope)
	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if cfg.invoiceID == "" {
		problems = append(problems, "-invoice is required")
	}
	for name, v := range map[string]string{"-issuer": cfg.issuer, "-gateway": cfg.gateway} {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s %q is not an http(s) URL", name, v))
		}
	}
	if !slices.Contains(cfg.scopes, oidc.ScopeOpenID) {
		problems = append(problems, "-scope must include openid: the client reads acr and auth_time from the ID token")
	}
	if cfg.port < 0 || cfg.port > 65535 {
		problems = append(problems, fmt.Sprintf("-port %d is not a port", cfg.port))
	}
	if cfg.timeout <= 0 {
		problems = append(problems, "-timeout must be positive")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return config{}, errors.New(strings.Join(problems, "; "))
	}
	return cfg, nil
}

// run is the command: it returns the exit code (0 approved, 1 failed, 2
// usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "stepup:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := approve(ctx, cfg, stdout); err != nil {
		_, _ = fmt.Fprintln(stderr, "stepup:", err)
		return 1
	}
	return 0
}

// approve wires the real authorizer and gateway client and runs the dance.
func approve(ctx context.Context, cfg config, out io.Writer) error {
	httpClient := &http.Client{Timeout: callTimeout}
	var open func(string) error
	if cfg.open {
		open = signin.XDGOpen
	}
	client := signin.Client{ID: cfg.clientID, Scopes: cfg.scopes}
	invoices := invoicev1connect.NewInvoiceServiceClient(httpClient, strings.TrimSuffix(cfg.gateway, "/"))
	var inv *invoicev1.Invoice
	err := signin.WithLoopback(ctx, cfg.port, func(callback *signin.Loopback) error {
		auth, err := signin.NewAuthorizer(oidc.ClientContext(ctx, httpClient), cfg.issuer, client, callback, out, open)
		if err != nil {
			return err
		}
		inv, err = approveWithStepUp(ctx, out, auth, invoices, cfg.invoiceID, time.Now)
		return err
	})
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "approved %s: customer %q, amount_cents %d %s, status %s, approved by %s at %s\n",
		inv.GetId(), inv.GetCustomer(), inv.GetAmountCents(), inv.GetCurrency(), inv.GetStatus(),
		inv.GetApprovedBy(), inv.GetApproveTime().AsTime().UTC().Format(time.RFC3339))
	return nil
}

// approveWithStepUp is the RFC 9470 dance: sign in, call ApproveInvoice; on
// a step-up challenge, sign in again with the challenge's acr_values and
// max_age, check the new sign-in meets them and is the same user, and retry
// once.
func approveWithStepUp(ctx context.Context, out io.Writer, auth authorizer, invoices invoicev1connect.InvoiceServiceClient, id string, now func() time.Time) (*invoicev1.Invoice, error) {
	first, err := auth.Authorize(ctx, signin.Request{})
	if err != nil {
		return nil, fmt.Errorf("sign in: %w", err)
	}
	printSignIn(out, first, now())
	_, _ = fmt.Fprintf(out, "approving %s ...\n", id)
	inv, err := approveInvoice(ctx, invoices, id, first.AccessToken)
	if err == nil {
		return inv, nil
	}
	c, isStepUp, cerr := stepUpChallenge(err)
	if cerr != nil {
		return nil, fmt.Errorf("approve %s: %w", id, cerr)
	}
	if !isStepUp {
		return nil, callError(id, err)
	}

	_, _ = fmt.Fprintf(out, "step-up challenge: %s\n", connect.CodeOf(err))
	if c.header != "" {
		_, _ = fmt.Fprintf(out, "  WWW-Authenticate: %s\n", c.header)
	}
	_, _ = fmt.Fprintf(out, "  it asks for %s; this sign-in has acr %q and is %s old\n", c, first.ACR, age(first, now()))
	req := signin.Request{ACRValues: c.acrValues, MaxAge: c.maxAge, HasMaxAge: c.hasMaxAge}
	if !c.hasMaxAge && acrMeets(first.ACR, c.acrValues) {
		// Nothing in the request would make the issuer ask the user
		// again: the session already has the acr. Force a new login.
		req.Prompt = "login"
	}
	_, _ = fmt.Fprintf(out, "re-authorizing with %s\n", describe(req))
	second, err := auth.Authorize(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("step-up sign-in: %w", err)
	}
	printSignIn(out, second, now())
	if second.Subject != first.Subject {
		return nil, fmt.Errorf("%w: %s signed in, but the challenge was for %s; not retrying", errOtherUser, second.Subject, first.Subject)
	}
	if !acrMeets(second.ACR, c.acrValues) {
		return nil, fmt.Errorf("%w: acr %q, asked for %q", errStepUpNotMet, second.ACR, c.acrValues)
	}
	if c.hasMaxAge && now().Sub(second.AuthTime) > time.Duration(c.maxAge)*time.Second {
		return nil, fmt.Errorf("%w: the sign-in is %s old, asked for at most %ds", errStepUpNotMet, age(second, now()), c.maxAge)
	}

	_, _ = fmt.Fprintln(out, "retrying the approval with the new token ...")
	inv, err = approveInvoice(ctx, invoices, id, second.AccessToken)
	if err != nil {
		if _, again, _ := stepUpChallenge(err); again {
			return nil, fmt.Errorf("%w: %w", errStillChallenged, err)
		}
		return nil, callError(id, err)
	}
	return inv, nil
}

// approveInvoice calls InvoiceService/ApproveInvoice with a bearer token.
func approveInvoice(ctx context.Context, invoices invoicev1connect.InvoiceServiceClient, id, accessToken string) (*invoicev1.Invoice, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := connect.NewRequest(&invoicev1.ApproveInvoiceRequest{Id: id})
	req.Header().Set("Authorization", "Bearer "+accessToken)
	resp, err := invoices.ApproveInvoice(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetInvoice(), nil
}

// callError describes a refused approval with its ErrorInfo reason.
func callError(id string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if info, ok := v.(*errdetails.ErrorInfo); ok {
					return fmt.Errorf("approve %s: %w (reason %s)", id, err, info.GetReason())
				}
			}
		}
	}
	return fmt.Errorf("approve %s: %w", id, err)
}

// acrMeets reports whether acr is one of the space-separated acrValues (any
// acr when none is asked).
func acrMeets(acr, acrValues string) bool {
	return acrValues == "" || slices.Contains(strings.Fields(acrValues), acr)
}

func printSignIn(out io.Writer, s signin.Result, now time.Time) {
	_, _ = fmt.Fprintf(out, "signed in as %s: acr %q, auth_time %s (%s ago)\n",
		s.Subject, s.ACR, s.AuthTime.UTC().Format(time.RFC3339), age(s, now))
}

// age is how long ago s signed in, to the second.
func age(s signin.Result, now time.Time) time.Duration {
	return now.Sub(s.AuthTime).Truncate(time.Second)
}

// describe names an authorization request's extra parameters.
func describe(req signin.Request) string {
	var parts []string
	if req.ACRValues != "" {
		parts = append(parts, "acr_values="+req.ACRValues)
	}
	if req.HasMaxAge {
		parts = append(parts, fmt.Sprintf("max_age=%d", req.MaxAge))
	}
	if req.Prompt != "" {
		parts = append(parts, "prompt="+req.Prompt)
	}
	return strings.Join(parts, " ")
}
