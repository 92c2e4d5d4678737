// Command issuer runs Gatehouse's OAuth 2.0 authorization server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	"github.com/gatehouse/gatehouse/services/issuer/app"
)

func main() {
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var cfg app.Config
	cfg.RegisterFlags(fs)
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if err := envflag.Parse(fs, "issuer", os.Args[1:], envflag.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logger := telemetry.NewLogger(os.Stderr, "issuer", level)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, cfg, logger)
	stop()
	if err != nil {
		logger.Error("issuer stopped", slog.Any("error", err))
		os.Exit(1)
	}
}
