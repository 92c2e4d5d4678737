package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
)

// The demo clients the commands sign in to: the customers' public client,
// and the support agents' console, a confidential client.
const (
	customerClientID = "invoice-web"
	agentClientID    = "support-console"
)

// secretEnv holds support-console's client secret when -client-secret-file
// is not given.
const secretEnv = "GATEHOUSE_DEMO_SUPPORT_CONSOLE_SECRET"

// callTimeout bounds each call to the issuer and the gateway.
const callTimeout = 30 * time.Second

// maxTTL is the longest impersonation session the support service grants.
const maxTTL = 15 * time.Minute

// errNoSecret: help needs support-console's secret and was given none.
var errNoSecret = errors.New("support-console's client secret is needed: give -client-secret-file FILE or set " + secretEnv)

// process is what run takes from the process, so tests can stand in for it.
type process struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// browse opens a URL in the user's browser; -open uses it.
	browse func(url string) error
}

// config is the command line.
type config struct {
	command string
	issuer  string
	gateway string
	port    int
	open    bool
	timeout time.Duration
	// open
	summary string
	access  supportv1.TicketAccess
	// help
	ticket     string
	ttl        time.Duration
	secretFile string
}

const usage = `usage: support <command> [flags]

A demo of the support service through the gateway: a customer opens a ticket,
a support agent helps them by impersonating them (RFC 8693 token exchange),
a user runs the support export job (delegation).

commands:
  open -summary TEXT [-access read|write]
        as a customer (invoice-web): open a support ticket
  help -ticket ID [-ttl 5m]
        as a support agent (support-console): impersonate the ticket's
        customer, read their invoices, try to approve one, end the session
  export
        as a user (invoice-web): run the support export job

Every command signs in in the browser first. "support <command> -h" lists
its flags. See docs/tutorials/support-impersonation.md.
`

// parseArgs reads the command line: a command, then its flags.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return config{}, errors.New("a command is required: open, help or export")
	}
	cfg := config{command: args[0]}
	var access string
	fs := flag.NewFlagSet("support "+cfg.command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cfg.command {
	case "-h", "-help", "--help":
		_, _ = fmt.Fprint(stderr, usage)
		return config{}, flag.ErrHelp
	case "open":
		fs.StringVar(&cfg.summary, "summary", "", "what the customer needs help with (required)")
		fs.StringVar(&access, "access", "read", "what the agent may do while impersonating: read or write")
	case "help":
		fs.StringVar(&cfg.ticket, "ticket", "", "id of the ticket to help with (required)")
		fs.DurationVar(&cfg.ttl, "ttl", 5*time.Minute, "length of the impersonation session, whole seconds, at most 15m")
		fs.StringVar(&cfg.secretFile, "client-secret-file", "", "file holding support-console's client secret (else $"+secretEnv+")")
	case "export":
	default:
		_, _ = fmt.Fprint(stderr, usage)
		return config{}, fmt.Errorf("unknown command %q: open, help or export", cfg.command)
	}
	fs.StringVar(&cfg.issuer, "issuer", "http://localhost:8080", "the issuer identifier (OIDC discovery)")
	fs.StringVar(&cfg.gateway, "gateway", "http://localhost:8000", "the gateway's base URL")
	fs.IntVar(&cfg.port, "port", 0, "port of the loopback redirect URI http://127.0.0.1:PORT/callback (0: any free port)")
	fs.BoolVar(&cfg.open, "open", false, "open the authorization URL with xdg-open, if installed")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "give up after this long (the sign-in included)")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "usage: support %s [flags]\n", cfg.command)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return config{}, err
	}

	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	for name, v := range map[string]string{"-issuer": cfg.issuer, "-gateway": cfg.gateway} {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s %q is not an http(s) URL", name, v))
		}
	}
	if cfg.port < 0 || cfg.port > 65535 {
		problems = append(problems, fmt.Sprintf("-port %d is not a port", cfg.port))
	}
	if cfg.timeout <= 0 {
		problems = append(problems, "-timeout must be positive")
	}
	switch cfg.command {
	case "open":
		cfg.summary = strings.TrimSpace(cfg.summary)
		if cfg.summary == "" {
			problems = append(problems, "-summary is required")
		}
		switch access {
		case "read":
			cfg.access = supportv1.TicketAccess_TICKET_ACCESS_READ
		case "write":
			cfg.access = supportv1.TicketAccess_TICKET_ACCESS_WRITE
		default:
			problems = append(problems, fmt.Sprintf("-access %q is neither read nor write", access))
		}
	case "help":
		if cfg.ticket == "" {
			problems = append(problems, "-ticket is required")
		}
		if cfg.ttl < time.Second || cfg.ttl > maxTTL || cfg.ttl%time.Second != 0 {
			problems = append(problems, fmt.Sprintf("-ttl %s is not whole seconds from 1s to %s", cfg.ttl, maxTTL))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return config{}, errors.New(strings.Join(problems, "; "))
	}
	return cfg, nil
}

// consoleSecret returns support-console's client secret: the content of
// file (a trailing newline ignored), else $GATEHOUSE_DEMO_SUPPORT_CONSOLE_SECRET.
// There is no flag for the secret itself: a flag shows in ps and in the
// shell's history.
func consoleSecret(file string, getenv func(string) string) (string, error) {
	if file == "" {
		if s := getenv(secretEnv); s != "" {
			return s, nil
		}
		return "", errNoSecret
	}
	// The path is the user's own -client-secret-file.
	b, err := os.ReadFile(file) //nolint:gosec // G304: see above
	if err != nil {
		return "", fmt.Errorf("read -client-secret-file: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("-client-secret-file %s is empty", file)
	}
	return s, nil
}

// run is the command: it returns the exit code (0 done, 1 failed, 2 usage).
func run(ctx context.Context, args []string, p process) int {
	cfg, err := parseArgs(args, p.stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(p.stderr, "support:", err)
		return 2
	}
	var secret string
	if cfg.command == "help" {
		secret, err = consoleSecret(cfg.secretFile, p.getenv)
		if err != nil {
			_, _ = fmt.Fprintln(p.stderr, "support:", err)
			if errors.Is(err, errNoSecret) {
				return 2
			}
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := execute(ctx, cfg, p, secret); err != nil {
		_, _ = fmt.Fprintln(p.stderr, "support:", err)
		return 1
	}
	return 0
}

// gateway holds the generated Connect clients of the services behind the
// gateway.
type gateway struct {
	support  supportv1connect.SupportServiceClient
	invoices invoicev1connect.InvoiceServiceClient
}

// execute signs the user in to the command's client and runs the command.
func execute(ctx context.Context, cfg config, p process, secret string) error {
	httpClient := &http.Client{Timeout: callTimeout}
	base := strings.TrimSuffix(cfg.gateway, "/")
	gw := gateway{
		support:  supportv1connect.NewSupportServiceClient(httpClient, base),
		invoices: invoicev1connect.NewInvoiceServiceClient(httpClient, base),
	}
	switch cfg.command {
	case "open":
		// The customer opens a ticket for themselves (support:write).
		user, err := signIn(ctx, cfg, p, httpClient, signin.Client{ID: customerClientID, Scopes: []string{"openid", "invoice:read", "support:write"}})
		if err != nil {
			return err
		}
		return openTicket(ctx, p.stdout, p.stderr, gw.support, user.AccessToken, cfg.summary, cfg.access)
	case "help":
		// The agent's own token: the support service exchanges it for the
		// impersonation token, which never holds more than this one.
		agent, err := signIn(ctx, cfg, p, httpClient, signin.Client{
			ID: agentClientID, Secret: secret, Scopes: []string{"openid", "support:read", "support:impersonate", "invoice:read"},
		})
		if err != nil {
			return err
		}
		return helpCustomer(ctx, p.stdout, p.stderr, gw, agent.AccessToken, cfg.ticket, cfg.ttl)
	default: // export
		// Whoever may read invoices may run the export (support:export).
		user, err := signIn(ctx, cfg, p, httpClient, signin.Client{ID: customerClientID, Scopes: []string{"openid", "invoice:read"}})
		if err != nil {
			return err
		}
		return exportInvoices(ctx, p.stdout, p.stderr, gw.support, user.AccessToken)
	}
}

// signIn runs one browser sign-in to client on a loopback redirect URI.
func signIn(ctx context.Context, cfg config, p process, httpClient *http.Client, client signin.Client) (signin.Result, error) {
	progress(p.stderr, "signing in to %s (scopes %s)", client.ID, strings.Join(client.Scopes, " "))
	var open func(string) error
	if cfg.open {
		open = p.browse
	}
	var res signin.Result
	err := signin.WithLoopback(ctx, cfg.port, func(callback *signin.Loopback) error {
		auth, err := signin.NewAuthorizer(oidc.ClientContext(ctx, httpClient), cfg.issuer, client, callback, p.stderr, open)
		if err != nil {
			return err
		}
		if res, err = auth.Authorize(ctx, signin.Request{}); err != nil {
			return fmt.Errorf("sign in to %s: %w", client.ID, err)
		}
		return nil
	})
	if err != nil {
		return signin.Result{}, err
	}
	progress(p.stderr, "signed in as %s (acr %q)", res.Subject, res.ACR)
	return res, nil
}

// progress writes one progress line.
func progress(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, format+"\n", args...)
}
