// Command pdp runs Gatehouse's policy decision point: it answers
// gatehouse.authz.v1.DecisionService/Check from the Rego policies in
// -policy-dir. Every flag can also be set as GATEHOUSE_PDP_<FLAG>.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gatehouse/gatehouse/libs/serve/command"
	"github.com/gatehouse/gatehouse/services/pdp/app"
)

func main() {
	var cfg app.Config
	os.Exit(command.Run("pdp", os.Args[1:], os.LookupEnv, os.Stderr, cfg.RegisterFlags,
		func(ctx context.Context, logger *slog.Logger) error { return app.Run(ctx, cfg, logger) }))
}
