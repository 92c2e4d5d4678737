// Command support is Gatehouse's support service.
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
	"github.com/gatehouse/gatehouse/services/support/app"
)

func main() {
	var cfg app.Config
	fs := flag.NewFlagSet("support", flag.ExitOnError)
	cfg.RegisterFlags(fs)
	logger := telemetry.NewLogger(os.Stderr, "support", slog.LevelInfo)
	if err := envflag.Parse(fs, "support", os.Args[1:], envflag.LookupEnv); err != nil {
		logger.Error("bad configuration", slog.Any("error", err))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, logger); err != nil {
		logger.Error("support stopped", slog.Any("error", err))
		os.Exit(1)
	}
}
