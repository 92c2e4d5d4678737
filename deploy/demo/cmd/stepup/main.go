// Command stepup is a demo client of RFC 9470 step-up authentication: it
// signs a user in to invoice-web (authorization code, PKCE S256, a loopback
// redirect), approves an invoice through the gateway, and when the answer is
// a step-up challenge it sends the user back to the issuer with the
// challenge's acr_values and max_age and retries with the new token. See
// docs/tutorials/step-up.md.
//
//	go run ./deploy/demo/cmd/stepup -invoice inv_demo_acme_2
//
// Tokens are never printed.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
