package envflag_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantTO   time.Duration
		wantErr  bool
	}{
		{name: "defaults", wantAddr: ":8080", wantTO: time.Second},
		{name: "env fills", env: map[string]string{"GATEHOUSE_ISSUER_HTTP_ADDR": ":9", "GATEHOUSE_ISSUER_PDP_TIMEOUT": "2s"}, wantAddr: ":9", wantTO: 2 * time.Second},
		{name: "flag wins over env", args: []string{"-http-addr=:7"}, env: map[string]string{"GATEHOUSE_ISSUER_HTTP_ADDR": ":9"}, wantAddr: ":7", wantTO: time.Second},
		{name: "bad env value", env: map[string]string{"GATEHOUSE_ISSUER_PDP_TIMEOUT": "soon"}, wantErr: true},
		{name: "other service ignored", env: map[string]string{"GATEHOUSE_PDP_HTTP_ADDR": ":9"}, wantAddr: ":8080", wantTO: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("http-addr", ":8080", "")
			to := fs.Duration("pdp-timeout", time.Second, "")
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			err := envflag.Parse(fs, "issuer", tc.args, lookup)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want error, got nil")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tc.wantAddr || *to != tc.wantTO {
				t.Fatalf("got addr=%q timeout=%v, want %q %v", *addr, *to, tc.wantAddr, tc.wantTO)
			}
		})
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	if got := envflag.Name("gateway", "pdp-url"); got != "GATEHOUSE_GATEWAY_PDP_URL" {
		t.Fatalf("got %q", got)
	}
}
