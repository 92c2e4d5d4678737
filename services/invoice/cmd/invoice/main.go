// Command invoice is Gatehouse's sample invoice service: tenant-scoped
// invoices behind the gateway, every call authorized by the PDP.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gatehouse/gatehouse/libs/serve/command"
	"github.com/gatehouse/gatehouse/services/invoice/app"
)

func main() {
	var cfg app.Config
	os.Exit(command.Run("invoice", os.Args[1:], os.LookupEnv, os.Stderr, cfg.RegisterFlags,
		func(ctx context.Context, logger *slog.Logger) error { return app.Run(ctx, cfg, logger) }))
}
