// Package cli is the gatehouse command: the operator's tool for the PDP's
// policy bundles and rollouts (PolicyAdminService), one-off decisions
// (DecisionService) and the audit log's hash chain. Run is the whole
// command; cmd/gatehouse only hands it the process's arguments, environment
// and standard streams, so every command is tested in-process.
//
// Results go to stdout as plain text tables; progress and errors go to
// stderr. Neither ever holds the client secret, an access token or a
// database password.
package cli

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

	"github.com/gatehouse/gatehouse/libs/audit"
)

// Exit codes of Run.
const (
	// ExitOK: the command did what was asked (decide: the decision is ALLOW).
	ExitOK = 0
	// ExitFailure: the command failed: an RPC was refused or failed, a file
	// could not be read, a bundle could not be built.
	ExitFailure = 1
	// ExitUsage: the command line or environment is wrong.
	ExitUsage = 2
	// ExitNotAllowed: decide got a decision other than ALLOW.
	ExitNotAllowed = 3
	// ExitTampered: audit verify found the hash chain not intact.
	ExitTampered = 4
)

// Environment variables Run reads. Flags given on the command line win.
const (
	EnvPDPURL       = "GATEHOUSE_PDP_URL"
	EnvIssuerURL    = "GATEHOUSE_ISSUER_URL"
	EnvClientID     = "GATEHOUSE_CLIENT_ID"
	EnvClientSecret = "GATEHOUSE_CLIENT_SECRET" //nolint:gosec // G101: the variable's name, not a secret
	EnvDatabaseURL  = "GATEHOUSE_DATABASE_URL"
)

// Defaults of the global flags: the demo's addresses and admin client.
const (
	DefaultPDPURL    = "http://localhost:8081"
	DefaultIssuerURL = "http://localhost:8080"
	DefaultClientID  = "policy-admin"
	DefaultTimeout   = 10 * time.Second
)

// AdminScope is the scope every PolicyAdminService call needs.
const AdminScope = "policy:admin"

// errNotAllowed ends decide with ExitNotAllowed; the decision is already
// printed.
var errNotAllowed = errors.New("decision is not ALLOW")

// errUsageShown ends a command with ExitUsage after the flag package has
// already printed the problem and the usage.
var errUsageShown = errors.New("usage error already reported")

// usageError is a wrong command line or environment: Run prints it, with
// the command's synopsis when cmd is set, and exits with ExitUsage.
type usageError struct {
	cmd *command
	msg string
}

func (e *usageError) Error() string { return e.msg }

// command is one gatehouse subcommand.
type command struct {
	name     string // "policy push"
	synopsis string // its arguments, for usage
	summary  string
	run      func(ctx context.Context, c *cli, cmd *command, args []string) error
}

// line is the command with its synopsis, as usage shows it.
func (cmd *command) line() string {
	return strings.TrimSpace("gatehouse " + cmd.name + " " + cmd.synopsis)
}

func (cmd *command) usageErr(format string, args ...any) error {
	return &usageError{cmd: cmd, msg: cmd.name + ": " + fmt.Sprintf(format, args...)}
}

// commands lists every subcommand, in the order usage shows them.
func commands() []*command {
	return []*command{
		{"policy build", "-dir DIR -signing-key FILE [-key-id ID] -o FILE", "build a signed bundle tarball", policyBuild},
		{"policy sign", "-dir DIR -signing-key FILE [-key-id ID]", "write DIR/.signatures.json", policySign},
		{"policy push", "(-dir DIR -signing-key FILE [-key-id ID] | -bundle FILE)", "store a signed bundle in the PDP (does not activate it)", policyPush},
		{"policy list", "", "the stored bundles, newest first", policyList},
		{"policy status", "", "the rollout state", policyStatus},
		{"policy history", "[-limit N]", "rollout changes, newest first", policyHistory},
		{"policy shadow", "REVISION", "evaluate REVISION beside the active bundle", policyShadow},
		{"policy canary", "[REVISION] -percent N", "let the candidate decide for N% of principals", policyCanary},
		{"policy promote", "[-force] [-expect REVISION]", "make the candidate the active bundle", policyPromote},
		{"policy rollback", "", "withdraw the candidate, or undo the last promotion", policyRollback},
		{"policy report", "[CANDIDATE] [-samples N]", "the shadow comparison of the candidate", policyReport},
		{"decide", "-subject S -tenant T -action A -resource TYPE[/ID] [flags]", "one Check against the PDP", decide},
		{"audit verify", "[-database-url URL]", "check the audit log's hash chain in Postgres", auditVerify},
		{"audit list", "[-database-url URL]... [-actor A] [-subject S] [-tenant T] [-client C] [-type T] [-since D] [-limit N]", "audit events from one or more logs, oldest first", auditList},
	}
}

// cli holds the global settings and streams every command uses.
type cli struct {
	pdpURL     string
	issuerURL  string
	clientID   string
	secretFile string
	timeout    time.Duration
	env        func(string) string
	stdout     io.Writer
	stderr     io.Writer
	http       *http.Client
}

// Run runs the gatehouse command line args (without the program name),
// reading the environment through env (os.Getenv), and returns the exit
// code: ExitOK, ExitFailure, ExitUsage, ExitNotAllowed or ExitTampered.
func Run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c := &cli{env: env, stdout: stdout, stderr: stderr, http: &http.Client{}}
	fs := flag.NewFlagSet("gatehouse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.pdpURL, "pdp-url", envOr(env, EnvPDPURL, DefaultPDPURL), "PDP base URL ($"+EnvPDPURL+")")
	fs.StringVar(&c.issuerURL, "issuer-url", envOr(env, EnvIssuerURL, DefaultIssuerURL), "issuer base URL, for admin tokens ($"+EnvIssuerURL+")")
	fs.StringVar(&c.clientID, "client-id", envOr(env, EnvClientID, DefaultClientID), "OAuth client that gets admin tokens ($"+EnvClientID+")")
	fs.StringVar(&c.secretFile, "client-secret-file", "", "file holding the client secret (else $"+EnvClientSecret+")")
	fs.DurationVar(&c.timeout, "timeout", DefaultTimeout, "deadline of each call to the issuer, the PDP or the database")
	fs.Usage = func() { writeUsage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if c.timeout <= 0 {
		_, _ = fmt.Fprintf(stderr, "gatehouse: -timeout must be positive, not %s\n", c.timeout)
		return ExitUsage
	}
	cmd, rest := lookup(fs.Args())
	if cmd == nil {
		switch {
		case fs.NArg() == 0:
			writeUsage(stderr, fs)
			return ExitUsage
		case fs.NArg() == 1 && fs.Arg(0) == "help":
			writeUsage(stderr, fs)
			return ExitOK
		}
		name := fs.Arg(0)
		if (name == "policy" || name == "audit") && fs.NArg() > 1 {
			name += " " + fs.Arg(1)
		}
		_, _ = fmt.Fprintf(stderr, "gatehouse: unknown command %q\n", name)
		writeUsage(stderr, fs)
		return ExitUsage
	}
	return c.exit(cmd.run(ctx, c, cmd, rest))
}

// lookup finds the command args start with and returns it with the
// remaining arguments, or nil.
func lookup(args []string) (*command, []string) {
	for _, cmd := range commands() {
		words := strings.Fields(cmd.name)
		if len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return cmd, args[len(words):]
		}
	}
	return nil, nil
}

// exit reports err on stderr and turns it into an exit code.
func (c *cli) exit(err error) int {
	var uerr *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, errUsageShown):
		return ExitUsage
	case errors.As(err, &uerr):
		_, _ = fmt.Fprintf(c.stderr, "gatehouse: %s\n", uerr.msg)
		if uerr.cmd != nil {
			_, _ = fmt.Fprintf(c.stderr, "usage: %s\n", uerr.cmd.line())
		}
		return ExitUsage
	case errors.Is(err, errNotAllowed):
		return ExitNotAllowed
	}
	_, _ = fmt.Fprintf(c.stderr, "gatehouse: %v\n", err)
	if errors.Is(err, audit.ErrTampered) {
		return ExitTampered
	}
	return ExitFailure
}

func writeUsage(w io.Writer, fs *flag.FlagSet) {
	_, _ = fmt.Fprint(w, `usage: gatehouse [global flags] COMMAND [flags]

Commands:
`)
	for _, cmd := range commands() {
		_, _ = fmt.Fprintf(w, "  %s\n        %s\n", strings.TrimPrefix(cmd.line(), "gatehouse "), cmd.summary)
	}
	_, _ = fmt.Fprint(w, "\nGlobal flags:\n")
	fs.PrintDefaults()
	_, _ = fmt.Fprintf(w, `
The policy commands that talk to the PDP get a %s token from the issuer
with the client credentials grant; the secret comes from -client-secret-file
or $%s, never from a flag.

Exit codes: 0 ok, 1 failure, 2 usage, 3 decide: not ALLOW, 4 audit chain tampered.
See docs/cli.md.
`, AdminScope, EnvClientSecret)
}

// newFlagSet returns the flag set of cmd, reporting to stderr.
func (c *cli) newFlagSet(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet("gatehouse "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(c.stderr, "usage: %s\n\n%s%s.\n", cmd.line(), strings.ToUpper(cmd.summary[:1]), cmd.summary[1:])
		if hasFlags(fs) {
			_, _ = fmt.Fprintln(c.stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args into fs, allowing positional arguments between flags
// (policy canary r2 -percent 10), and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsageShown
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// parseN parses args and requires at most max positional arguments.
func (c *cli) parseN(cmd *command, fs *flag.FlagSet, args []string, maxArgs int) ([]string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > maxArgs {
		return nil, cmd.usageErr("unexpected argument %q", pos[maxArgs])
	}
	return pos, nil
}

func envOr(env func(string) string, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}

// baseURL checks that raw is an http(s) URL with a host and returns it
// without a trailing slash.
func baseURL(flagName, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", &usageError{msg: fmt.Sprintf("-%s must be an http(s) URL with a host and no user info", flagName)}
	}
	return strings.TrimRight(raw, "/"), nil
}
