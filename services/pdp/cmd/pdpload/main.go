// Command pdpload is a loopback load generator that compares the Gatehouse
// PDP with a stock OPA server on the same signed bundle and the same
// questions (scripts/bench-pdp.sh drives it; docs/benchmarks.md has the
// method and the results):
//
//	pdpload bundle -o bundle.tar.gz                      the PDP's signed bundle as a tarball, for opa run --bundle
//	pdpload verify -pdp-url URL -opa-url URL             both servers give the expected answer to every question
//	pdpload run -mode pdp-check -url URL -out r.json     one closed-loop load run
//	pdpload report r1.json r2.json ...                   Markdown tables: medians, PDP against OPA, batch against singles
//
// The questions are a fixed, seeded set of demo-like requests (-inputs,
// -seed), each stamped with the current time and a fresh request id when
// sent, as the gateway does. Their expected answers come from the PDP's own
// policy engine compiled from the same signed bundle; every answer of a
// run is checked against them, and a wrong answer is an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "pdpload:", err)
		if errors.Is(err, errBusy) {
			os.Exit(exitBusy)
		}
		os.Exit(1)
	}
}

// exitBusy is the exit status of a run spoilt by other work on the
// machine (see -max-other-cores): worth repeating, not a failure.
const exitBusy = 3

// errBusy: other work used more CPU during the window than allowed.
var errBusy = errors.New("the machine was busy with other work")

const usage = `usage: pdpload bundle|verify|run|report [flags]; pdpload <command> -h lists a command's flags`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("pdpload "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cmd {
	case "bundle":
		return runBundle(fs, args)
	case "verify":
		return runVerify(ctx, fs, args, stdout)
	case "run":
		return runRun(ctx, fs, args, stdout)
	case "report":
		return runReport(fs, args, stdout)
	default:
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}
}

// workloadFlags are the flags that pick the questions and their answers.
type workloadFlags struct {
	src    bundleSource
	inputs int
	seed   uint64
}

func (f *workloadFlags) register(fs *flag.FlagSet) {
	f.registerBundle(fs)
	fs.IntVar(&f.inputs, "inputs", 1000, "distinct requests in the workload")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the workload's request generator")
}

func (f *workloadFlags) registerBundle(fs *flag.FlagSet) {
	fs.StringVar(&f.src.Dir, "policy-dir", "policies", "the signed policy bundle directory both servers load")
	fs.StringVar(&f.src.KeyFile, "bundle-verification-key", "deploy/policy-signing/demo.pub.pem", "PEM public key that verifies the bundle")
	fs.StringVar(&f.src.KeyID, "bundle-verification-key-id", "gatehouse-demo", "key id the bundle signature names")
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// runBundle writes the PDP's verified bundle tarball: the files the PDP
// loads from -policy-dir (tests and testdata left out) with their
// committed .signatures.json. OPA verifies a signed directory against
// paths prefixed with the directory as given on its command line, which
// the committed signature (paths relative to the bundle root) does not
// have; a tarball has root-relative paths, so OPA can verify this one.
func runBundle(fs *flag.FlagSet, args []string) error {
	var wf workloadFlags
	wf.registerBundle(fs)
	out := fs.String("o", "", "file to write the bundle tarball to (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o is required")
	}
	b, err := wf.src.loadBundle()
	if err != nil {
		return err
	}
	// A signed policy bundle, public like policies/ itself.
	return os.WriteFile(*out, b.Tarball, 0o644) //nolint:gosec // G306: not secret
}

func runVerify(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	var wf workloadFlags
	wf.register(fs)
	pdpURL := fs.String("pdp-url", "", "base URL of the PDP (required)")
	opaURL := fs.String("opa-url", "", "base URL of the OPA server (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *pdpURL == "" || *opaURL == "" {
		return errors.New("-pdp-url and -opa-url are required")
	}
	wl, err := newWorkload(ctx, wf.src, wf.seed, wf.inputs, time.Now())
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: newTransport(1, false), Timeout: 10 * time.Second}
	rep, err := verify(ctx, wl, authzv1connect.NewDecisionServiceClient(hc, *pdpURL), hc, strings.TrimSuffix(*opaURL, "/"))
	var b strings.Builder
	fmt.Fprintf(&b, "verify: %d inputs (seed %d), policy %s; expected answers:\n", len(wl.items), wf.seed, wl.revision)
	for _, k := range slices.Sorted(maps.Keys(rep.Mix)) {
		fmt.Fprintf(&b, "  %-40s %d\n", k, rep.Mix[k])
	}
	for _, m := range rep.Mismatches {
		fmt.Fprintf(&b, "  MISMATCH %s\n", m)
	}
	if err == nil {
		b.WriteString("verify: the PDP and OPA gave the expected answer to every input\n")
	}
	if _, werr := io.WriteString(stdout, b.String()); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

func runRun(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	var wf workloadFlags
	wf.register(fs)
	var cfg loadConfig
	var p probes
	mode := fs.String("mode", ModePDPCheck, "pdp-check, pdp-batch (BatchCheck of 100), pdp-singles (the same 100 items as 100 Checks) or opa")
	url := fs.String("url", "", "base URL of the server under load (required)")
	label := fs.String("label", "", "name of the server configuration in the result (default: the mode)")
	out := fs.String("out", "", "file to write the result to as JSON")
	acceptGzip := fs.Bool("accept-gzip", true, "ask the PDP for gzipped responses, as the generated Connect client does by default")
	h2c := fs.Bool("h2c", false, "HTTP/2 without TLS (h2c) instead of HTTP/1.1, as the gateway and the invoice service call the PDP")
	fs.IntVar(&cfg.Workers, "workers", 16, "concurrent closed-loop workers (one keep-alive connection each)")
	fs.DurationVar(&cfg.Warmup, "warmup", 5*time.Second, "unmeasured warm-up")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "measured window")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of one operation")
	fs.IntVar(&p.ServerPID, "server-pid", 0, "pid of the server, to measure its CPU use in the window (Linux /proc)")
	fs.StringVar(&p.DBCPUFile, "db-cpu-file", "", "cgroup CPU accounting file of the database container (cpuacct.usage or cpu.stat)")
	fs.StringVar(&p.MetricsURL, "metrics-url", "", "the PDP's /metrics, to count cache hits and decision log writes in the window")
	maxOther := fs.Float64("max-other-cores", 0, "fail with exit status 3 when other work on the machine used more than this many cores in the window (0: do not check)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("-url is required")
	}
	if *label == "" {
		*label = *mode
	}
	if cfg.Warmup+cfg.Duration > maxRunTime {
		return fmt.Errorf("warm-up and duration may last %v at most: the workload's answers hold that long", maxRunTime)
	}
	wl, err := newWorkload(ctx, wf.src, wf.seed, wf.inputs, time.Now())
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: newTransport(cfg.Workers, *h2c)}
	op, err := newOperation(*mode, strings.TrimSuffix(*url, "/"), hc, wl.items, *acceptGzip)
	if err != nil {
		return err
	}
	p.ProcDir = "/proc"
	p.Client = &http.Client{Timeout: 5 * time.Second}

	res := Result{Label: *label, Mode: *mode, Workers: cfg.Workers, Inputs: len(wl.items), WarmupSeconds: cfg.Warmup.Seconds()}
	var before, after snapshot
	var probeErr error
	m, err := runLoad(ctx, cfg, len(wl.items), op,
		func() {
			res.Started = time.Now().UTC()
			var err error
			before, err = p.take(ctx)
			probeErr = errors.Join(probeErr, err)
		},
		func() {
			var err error
			after, err = p.take(ctx)
			probeErr = errors.Join(probeErr, err)
		})
	if err != nil {
		return err
	}
	if probeErr != nil {
		return fmt.Errorf("measure the server: %w", probeErr)
	}
	res.fill(m)
	p.apply(&res, before, after)
	if err := res.summary(stdout); err != nil {
		return err
	}
	if *out != "" {
		if err := res.writeJSON(*out); err != nil {
			return err
		}
	}
	if err := judge(res, m.FirstError, stdout); err != nil {
		return err
	}
	if other := share(res.OtherCPU, res.Seconds); *maxOther > 0 && other > *maxOther {
		return fmt.Errorf("%w: %.2f cores besides the server, the load generator and the database (limit %.2f)", errBusy, other, *maxOther)
	}
	return nil
}

// maxErrorRate is the share of failed operations (transport errors and
// INDETERMINATE answers) a run may have and still count; their number is
// in the result either way. A wrong answer fails the run: a benchmark of
// wrong answers is worthless.
const maxErrorRate = 0.001

// judge fails a run with wrong answers, too many errors or no operation.
func judge(res Result, first error, stdout io.Writer) error {
	failed := float64(res.Errors - res.Wrong)
	switch {
	case res.Wrong > 0:
		return fmt.Errorf("%d wrong answers (first error: %w)", res.Wrong, first)
	case res.Ops == 0:
		return errors.New("no operation completed in the measured window")
	case failed/float64(res.Ops+res.Errors) > maxErrorRate:
		return fmt.Errorf("%d of %d operations failed (first: %w)", res.Errors, res.Ops+res.Errors, first)
	case res.Errors > 0:
		_, err := fmt.Fprintf(stdout, "  WARNING: %d failed operations (first: %v)\n", res.Errors, first)
		return err
	}
	return nil
}

func runReport(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	baseline := fs.String("baseline", "opa", "label of the OPA runs the PDP's are compared with")
	maxOther := fs.Float64("max-other-cores", 0.2, "leave out runs in which other work on the machine used more than this many cores (0: keep all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("report needs result files")
	}
	results, err := readResults(fs.Args())
	if err != nil {
		return err
	}
	kept, dropped := quietRuns(results, *maxOther)
	if err := writeReport(stdout, kept, *baseline); err != nil {
		return err
	}
	for _, r := range dropped {
		if _, err := fmt.Fprintf(stdout, "\nLeft out: %s %s (%d workers) started %s: other work used %.2f cores.",
			r.Label, r.Mode, r.Workers, r.Started.Format(time.RFC3339), share(r.OtherCPU, r.Seconds)); err != nil {
			return err
		}
	}
	if len(dropped) > 0 {
		_, err = fmt.Fprintln(stdout)
	}
	return err
}
