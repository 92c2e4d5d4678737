// Command demo runs all of Gatehouse in one process: issuer, PDP, gateway,
// invoice and support services on their usual ports, on in-memory stores,
// with the demo seed. It is for trying Gatehouse on a laptop without Docker;
// nothing it stores survives a restart. DEV ONLY: it runs with demo secrets
// and ephemeral signing keys.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/template"

	"golang.org/x/sync/errgroup"

	"github.com/gatehouse/gatehouse/libs/telemetry"
	gatewayapp "github.com/gatehouse/gatehouse/services/gateway/app"
	invoiceapp "github.com/gatehouse/gatehouse/services/invoice/app"
	issuerapp "github.com/gatehouse/gatehouse/services/issuer/app"
	pdpapp "github.com/gatehouse/gatehouse/services/pdp/app"
	supportapp "github.com/gatehouse/gatehouse/services/support/app"
)

func main() {
	opts := options{ports: defaultPorts()}
	flag.StringVar(&opts.policyDir, "policy-dir", "policies", "the signed policy bundle directory")
	flag.StringVar(&opts.bundleKey, "bundle-verification-key", "deploy/policy-signing/demo.pub.pem", "public key that verifies policy bundle signatures")
	flag.StringVar(&opts.bundleKeyID, "bundle-verification-key-id", "gatehouse-demo", "key id bundle signatures must name")
	flag.BoolVar(&opts.verbose, "v", false, "log every request and decision (JSON on stderr)")
	flag.IntVar(&opts.portOffset, "port-offset", 0, "add this to every port (to run beside another Gatehouse)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Stderr, opts); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// service is one service of the demo: its name, the flags it runs with, and
// how to run it once configured.
type service struct {
	name  string
	flags []string
	run   func(ctx context.Context, logger *slog.Logger) error
	bind  func(fs *flag.FlagSet)
}

// defaultPorts are DESIGN.md's ports.
func defaultPorts() ports {
	return ports{Gateway: 8000, Issuer: 8080, PDP: 8081, Invoice: 8091, Support: 8092}
}

type ports struct{ Gateway, Issuer, PDP, Invoice, Support int }

type options struct {
	policyDir   string
	bundleKey   string
	bundleKeyID string
	verbose     bool
	ports       ports
	portOffset  int
}

func run(ctx context.Context, stdout, stderr io.Writer, opts options) error {
	level := slog.LevelWarn
	if opts.verbose {
		// Debug: the PDP logs each decision at debug level (the decision
		// log proper is its audit chain).
		level = slog.LevelDebug
	}
	p := opts.ports
	p.Gateway, p.Issuer, p.PDP, p.Invoice, p.Support = p.Gateway+opts.portOffset, p.Issuer+opts.portOffset,
		p.PDP+opts.portOffset, p.Invoice+opts.portOffset, p.Support+opts.portOffset
	addr := func(port int) string { return fmt.Sprintf("-http-addr=127.0.0.1:%d", port) }
	local := func(port int) string { return fmt.Sprintf("http://localhost:%d", port) }
	issuerFlag := "-issuer=" + local(p.Issuer)
	pdpFlag := "-pdp-url=" + local(p.PDP)
	var (
		issuerCfg  issuerapp.Config
		pdpCfg     pdpapp.Config
		invoiceCfg invoiceapp.Config
		gatewayCfg gatewayapp.Config
		supportCfg supportapp.Config
	)
	services := []service{
		{"issuer", []string{"-store=memory", "-demo", addr(p.Issuer), issuerFlag, pdpFlag, "-scope-catalog=" + filepath.Join(opts.policyDir, "gatehouse", "data.json")}, func(ctx context.Context, l *slog.Logger) error { return issuerapp.Run(ctx, issuerCfg, l) }, issuerCfg.RegisterFlags},
		{"pdp", []string{"-store=memory", "-policy-dir=" + opts.policyDir, addr(p.PDP), issuerFlag,
			"-bundle-verification-key=" + opts.bundleKey, "-bundle-verification-key-id=" + opts.bundleKeyID}, func(ctx context.Context, l *slog.Logger) error { return pdpapp.Run(ctx, pdpCfg, l) }, pdpCfg.RegisterFlags},
		{"invoice", []string{"-store=memory", "-demo", addr(p.Invoice), issuerFlag, pdpFlag}, func(ctx context.Context, l *slog.Logger) error { return invoiceapp.Run(ctx, invoiceCfg, l) }, invoiceCfg.RegisterFlags},
		{"support", []string{"-store=memory", "-demo", addr(p.Support), issuerFlag, pdpFlag, "-invoice-url=" + local(p.Invoice)}, func(ctx context.Context, l *slog.Logger) error { return supportapp.Run(ctx, supportCfg, l) }, supportCfg.RegisterFlags},
		{"gateway", []string{addr(p.Gateway), issuerFlag, pdpFlag, "-invoice-url=" + local(p.Invoice), "-support-url=" + local(p.Support)}, func(ctx context.Context, l *slog.Logger) error { return gatewayapp.Run(ctx, gatewayCfg, l) }, gatewayCfg.RegisterFlags},
	}
	// Each service parses its demo flags over its own defaults, exactly as
	// its command would: the ports and URLs are the documented defaults.
	for _, s := range services {
		fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
		s.bind(fs)
		if err := fs.Parse(s.flags); err != nil {
			return fmt.Errorf("%s flags: %w", s.name, err)
		}
	}
	// The gateway follows the issuer's revocation feed as the demo client
	// "gateway" (a secret is never a flag).
	gatewayCfg.RevocationClientSecret = "gateway-secret"

	if err := bannerTemplate.Execute(stdout, p); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range services {
		logger := telemetry.NewLogger(stderr, s.name, level)
		g.Go(func() error {
			if err := s.run(ctx, logger); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

var bannerTemplate = template.Must(template.New("banner").Parse(`
Gatehouse demo: every service in one process, IN-MEMORY STORES, DEV ONLY.
Nothing is persisted; signing keys and secret-hash keys are ephemeral.

  gateway   http://localhost:{{.Gateway}}   (Connect / gRPC / gRPC-Web)
  issuer    http://localhost:{{.Issuer}}   /.well-known/openid-configuration
  pdp       http://localhost:{{.PDP}}   gatehouse.authz.v1.DecisionService, PolicyAdminService
  invoice   http://localhost:{{.Invoice}}   (reach it through the gateway)
  support   http://localhost:{{.Support}}   (reach it through the gateway; demo ticket tkt_demo_acme_1 of bob)

Demo clients (client_credentials):
  reporting-job / reporting-job-secret   tenant acme, scope invoice:read
  billing-bot   / billing-bot-secret     tenant acme, scopes invoice:read invoice:write
  policy-admin  / policy-admin-secret    scope policy:admin, for the gatehouse CLI:
    GATEHOUSE_CLIENT_SECRET=policy-admin-secret go run ./services/pdp/cmd/gatehouse policy status
    (rollouts: docs/policy-rollouts.md; policy state is per process in the demo)

Try it:
  TOKEN=$(curl -s -u reporting-job:reporting-job-secret \
      -d grant_type=client_credentials -d scope=invoice:read \
      http://localhost:{{.Issuer}}/oauth2/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d '{}' http://localhost:{{.Gateway}}/gatehouse.invoice.v1.InvoiceService/ListInvoices

Demo users, who sign in at the issuer (authorization code + PKCE with the public
client invoice-web, redirect http://127.0.0.1:<any port>/callback; TOTP secrets in
docs/tutorials/sign-in.md):
  alice/alice-demo-password (acme, billing_approver, TOTP)   bob/bob-demo-password (acme, billing_viewer)
  carol/carol-demo-password (globex, billing_approver, TOTP) sam/sam-demo-password (acme, support_agent, TOTP)
  Their consents: http://localhost:{{.Issuer}}/account/consents

Support (token exchange, RFC 8693): sam helps bob through the support console
(support-console / support-console-secret); the export job is support-export /
support-export-secret. Walk through it: docs/tutorials/support-impersonation.md
  GATEHOUSE_DEMO_SUPPORT_CONSOLE_SECRET=support-console-secret \
    go run ./deploy/demo/cmd/support help -ticket tkt_demo_acme_1

Ctrl-C stops everything.
`))
