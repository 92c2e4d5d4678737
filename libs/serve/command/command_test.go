package command_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/libs/serve/command"
)

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		runErr   error
		wantCode int
		wantAddr string
		wantLog  string
	}{
		{name: "ok", args: []string{"-addr=:1"}, wantCode: command.ExitOK, wantAddr: ":1"},
		{name: "env", env: map[string]string{"GATEHOUSE_SVC_ADDR": ":2"}, wantCode: command.ExitOK, wantAddr: ":2"},
		{name: "unknown flag", args: []string{"-nope"}, wantCode: command.ExitUsage},
		{name: "bad log level", args: []string{"-log-level=loud"}, wantCode: command.ExitUsage},
		{name: "help", args: []string{"-h"}, wantCode: command.ExitOK},
		{name: "run fails", runErr: errors.New("port taken"), wantCode: command.ExitFailed, wantAddr: ":0", wantLog: "port taken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			var addr string
			ran := false
			code := command.Run("svc", tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, &stderr,
				func(fs *flag.FlagSet) { fs.StringVar(&addr, "addr", ":0", "") },
				func(_ context.Context, logger *slog.Logger) error {
					ran = true
					return tc.runErr
				})
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d (%s)", code, tc.wantCode, stderr.String())
			}
			if tc.wantAddr != "" && (!ran || addr != tc.wantAddr) {
				t.Fatalf("ran=%v addr=%q, want %q", ran, addr, tc.wantAddr)
			}
			if !strings.Contains(stderr.String(), tc.wantLog) {
				t.Fatalf("stderr %q lacks %q", stderr.String(), tc.wantLog)
			}
		})
	}
}
