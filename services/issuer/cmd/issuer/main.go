// Command issuer runs Gatehouse's OAuth 2.0 authorization server.
//
//	issuer [flags]              serve
//	issuer keys list [flags]    print the signing keys in the database
//	issuer keys rotate [flags]  create a new signing key now
//	issuer audit verify [flags] check the audit log's hash chain
//
// Every form reads the same flags and GATEHOUSE_ISSUER_* variables.
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
	args, command := os.Args[1:], "serve"
	if len(args) > 0 && args[0] == "keys" {
		if len(args) < 2 || (args[1] != "list" && args[1] != "rotate") {
			fmt.Fprintln(os.Stderr, "usage: issuer keys list|rotate [flags]")
			os.Exit(2)
		}
		args, command = args[2:], "keys "+args[1]
	}
	if len(args) > 0 && args[0] == "audit" {
		if len(args) < 2 || args[1] != "verify" {
			fmt.Fprintln(os.Stderr, "usage: issuer audit verify [flags]")
			os.Exit(2)
		}
		args, command = args[2:], "audit verify"
	}
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var cfg app.Config
	cfg.RegisterFlags(fs)
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if err := envflag.Parse(fs, "issuer", args, envflag.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logger := telemetry.NewLogger(os.Stderr, "issuer", level)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch command {
	case "keys list":
		err = app.ListKeys(ctx, cfg, logger, os.Stdout)
	case "keys rotate":
		err = app.RotateKeys(ctx, cfg, logger, os.Stdout)
	case "audit verify":
		err = app.VerifyAudit(ctx, cfg, logger, os.Stdout)
	default:
		err = app.Run(ctx, cfg, logger)
	}
	stop()
	if err != nil {
		logger.Error("issuer "+command+" failed", slog.Any("error", err))
		os.Exit(1)
	}
}
