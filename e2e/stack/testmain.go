package stack

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds bringing the whole stack up, logsTimeout reading
// every container's output.
const (
	startTimeout = 3 * time.Minute
	logsTimeout  = time.Minute
)

// Main is TestMain for a package whose tests run against one Stack: it starts
// the stack, stores it in *s, runs the tests, scans every container's output
// for tokens, secrets and passwords (logscan.go), prints that output,
// redacted, if a test failed or the scan found one, removes the stack and
// returns the exit code for os.Exit: a hit in the scan fails the run even
// when every test passed.
// If the stack cannot start, Main reports why and returns 1 without running
// the tests: an e2e suite that cannot start fails, never skips.
//
// There is no reaper (TESTCONTAINERS_RYUK_DISABLED=true), so Main also removes
// the stack when the test binary is interrupted (Ctrl-C, a cancelled CI job);
// only a SIGKILL or a -timeout panic can leave containers behind, which
// `docker ps -a --filter label=org.testcontainers=true` then finds.
//
// Options go to Start: a package whose tests need the services configured
// differently passes them here (WithEnv).
func Main(m *testing.M, s **Stack, opts ...Option) int {
	// Registered before Start: a signal during start-up waits for Start to
	// finish, then removes what it started.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	st, err := Start(ctx, opts...)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot start the stack: %v\n", err)
		return 1
	}
	*s = st

	var once sync.Once
	var terminateErr error
	terminate := func() error {
		once.Do(func() { terminateErr = st.Terminate(context.Background()) })
		return terminateErr
	}
	go func() {
		sig := <-signals
		fmt.Fprintf(os.Stderr, "e2e: %v: removing the stack\n", sig)
		if err := terminate(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: teardown: %v\n", err)
		}
		os.Exit(1)
	}()

	code := m.Run()
	// The containers' output, once, for the scan and the post-mortem.
	ctx, cancel = context.WithTimeout(context.Background(), logsTimeout)
	logs, logsErr := st.Logs(ctx)
	cancel()
	scanner := newLogScanner(append(st.secrets(), envSecrets(opts)...))
	report, clean := scanLogs(scanner, logs, logsErr)
	fmt.Fprint(os.Stderr, report)
	if !clean && code == 0 {
		code = 1
	}
	if code != 0 {
		dumpLogs(scanner, logs)
	}
	if err := terminate(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: teardown: %v\n", err)
		return 1
	}
	return code
}

// dumpLogs prints every container's output, in a stable order, for the
// post-mortem of a failed run, with any credential in it redacted.
func dumpLogs(scanner *logScanner, logs map[string][]byte) {
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		fmt.Fprintf(os.Stderr, "===== %s =====\n%s\n", name, scanner.redact(logs[name]))
	}
}
