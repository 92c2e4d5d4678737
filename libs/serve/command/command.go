// Package command is the body of every Gatehouse service's main: parse the
// flags (also settable as GATEHOUSE_<SERVICE>_<FLAG>), build the JSON logger,
// run until SIGINT or SIGTERM, and turn the outcome into an exit code. Mains
// stay a few lines and behave the same way.
package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/libs/telemetry"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Run parses args for service (register adds the service's flags), then
// calls run with a logger writing JSON to stderr, and a context cancelled on
// SIGINT or SIGTERM. lookup reads the environment (os.LookupEnv).
func Run(service string, args []string, lookup func(string) (string, bool), stderr io.Writer,
	register func(*flag.FlagSet), run func(ctx context.Context, logger *slog.Logger) error) int {
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.SetOutput(stderr)
	register(fs)
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if err := envflag.Parse(fs, service, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		_, _ = fmt.Fprintf(stderr, "%s: %v\n", service, err)
		return ExitUsage
	}
	logger := telemetry.NewLogger(stderr, service, level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger); err != nil {
		logger.Error(service+" stopped", slog.Any("error", err))
		return ExitFailed
	}
	return ExitOK
}
