// Command gatehouse is the operator's CLI for the PDP: build, sign and push
// policy bundles, drive a staged rollout (shadow, canary, promote,
// rollback), read the shadow report, run a one-off decision, and verify the
// audit log's hash chain. See docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
