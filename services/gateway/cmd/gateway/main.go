// Command gateway is Gatehouse's edge gateway.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gatehouse/gatehouse/libs/serve/command"
	"github.com/gatehouse/gatehouse/services/gateway/app"
)

func main() {
	var cfg app.Config
	os.Exit(command.Run("gateway", os.Args[1:], os.LookupEnv, os.Stderr, cfg.RegisterFlags,
		func(ctx context.Context, logger *slog.Logger) error { return app.Run(ctx, cfg, logger) }))
}
