// Command support is a demo client of the support service and of OAuth 2.0
// Token Exchange (RFC 8693): a customer opens a support ticket, a support
// agent helps them by impersonating them (and is refused what the
// impersonation does not allow, and locked out once it ends), and a user
// runs the support export job, which acts for them by delegation. Every
// call goes through the gateway with the generated Connect clients; users
// sign in in their browser (authorization code, PKCE S256, a loopback
// redirect). See docs/tutorials/support-impersonation.md.
//
//	go run ./deploy/demo/cmd/support open -summary "Where is my invoice?"
//	GATEHOUSE_DEMO_SUPPORT_CONSOLE_SECRET=... go run ./deploy/demo/cmd/support help -ticket tkt_demo_acme_1
//	go run ./deploy/demo/cmd/support export
//
// Progress goes to stderr, results to stdout. Tokens and the client secret
// are never printed.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], process{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, browse: signin.XDGOpen})
	stop()
	os.Exit(code)
}
