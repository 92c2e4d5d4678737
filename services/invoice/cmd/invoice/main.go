// Command invoice is Gatehouse's sample invoice service: tenant-scoped
// invoices behind the gateway, every call authorized by the PDP.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/invoice/app"
)

func main() {
	var cfg app.Config
	fs := flag.NewFlagSet("invoice", flag.ExitOnError)
	cfg.RegisterFlags(fs)
	logger := telemetry.NewLogger(os.Stderr, "invoice", slog.LevelInfo)
	if err := envflag.Parse(fs, "invoice", os.Args[1:], envflag.LookupEnv); err != nil {
		logger.Error("bad configuration", slog.Any("error", err))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, logger); err != nil {
		logger.Error("invoice stopped", slog.Any("error", err))
		os.Exit(1)
	}
}
