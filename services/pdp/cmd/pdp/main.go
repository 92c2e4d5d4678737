// Command pdp runs Gatehouse's policy decision point: it answers
// gatehouse.authz.v1.DecisionService/Check from the Rego policies in
// -policy-dir. Every flag can also be set as GATEHOUSE_PDP_<FLAG>.
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
	"github.com/gatehouse/gatehouse/services/pdp/app"
)

func main() {
	var cfg app.Config
	fs := flag.NewFlagSet(app.ServiceName, flag.ExitOnError)
	cfg.RegisterFlags(fs)
	logger := telemetry.NewLogger(os.Stderr, app.ServiceName, slog.LevelInfo)
	if err := envflag.Parse(fs, app.ServiceName, os.Args[1:], envflag.LookupEnv); err != nil {
		logger.Error("invalid configuration", slog.Any("error", err))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, logger); err != nil {
		stop()
		logger.Error("pdp stopped", slog.Any("error", err))
		os.Exit(1)
	}
}
