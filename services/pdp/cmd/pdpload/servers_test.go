package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/app"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// startPDP serves an in-process PDP on the memory store over HTTP/1.1.
func startPDP(t *testing.T) *httptest.Server {
	t.Helper()
	var cfg app.Config
	cfg.RegisterFlags(flag.NewFlagSet("pdp", flag.ContinueOnError))
	src := testSource()
	cfg.PolicyDir, cfg.BundleKeyFile, cfg.BundleKeyID = src.Dir, src.KeyFile, src.KeyID
	cfg.Store = app.StoreMemory
	// The race detector on a busy machine can make one evaluation slower
	// than the default 100 ms; these tests are about the load generator.
	cfg.EvalTimeout = 10 * time.Second
	a, err := app.New(t.Context(), cfg, nopLogger())
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	// HTTP/1.1 and h2c, as the PDP serves (libs/serve).
	srv := httptest.NewUnstartedServer(a.Handler())
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestTransportSpeaksTheProtocolAsked(t *testing.T) {
	t.Parallel()
	pdp := startPDP(t)
	for _, h2c := range []bool{false, true} {
		resp, err := (&http.Client{Transport: newTransport(1, h2c)}).Get(pdp.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if want := map[bool]int{false: 1, true: 2}[h2c]; resp.ProtoMajor != want {
			t.Errorf("h2c %v: HTTP/%d, want HTTP/%d", h2c, resp.ProtoMajor, want)
		}
	}
}

// startOPA serves OPA's Data API for the decision rule and the system
// bundles document, evaluating the repository's bundle with OPA's rego
// package; lie replaces every answer with an allow.
func startOPA(t *testing.T, lie bool) *httptest.Server {
	t.Helper()
	b, err := testSource().loadBundle()
	if err != nil {
		t.Fatal(err)
	}
	query, err := rego.New(rego.Query(policy.Query), rego.ParsedBundle("gatehouse", b.Parsed())).PrepareForEval(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+OPAPath, func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Input any }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rs, err := query.Eval(r.Context(), rego.EvalInput(body.Input))
		if err != nil || len(rs) != 1 {
			http.Error(w, "evaluation failed", http.StatusInternalServerError)
			return
		}
		result := rs[0].Expressions[0].Value
		if lie {
			result = map[string]any{"decision": "allow", "reason_code": "allowed", "message": ""}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"result": result})
	})
	mux.HandleFunc("GET /v1/data/system/bundles", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"result":{"bundle.tar.gz":{"manifest":{"revision":"` + b.Revision + `","roots":["gatehouse"]}}}}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestVerify(t *testing.T) {
	t.Parallel()
	pdp := startPDP(t)
	wl, err := newWorkload(t.Context(), testSource(), 5, 200, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := authzv1connect.NewDecisionServiceClient(pdp.Client(), pdp.URL)

	t.Run("both right", func(t *testing.T) {
		t.Parallel()
		opa := startOPA(t, false)
		rep, err := verify(t.Context(), wl, client, opa.Client(), opa.URL)
		if err != nil {
			t.Fatalf("verify: %v %v", err, rep.Mismatches)
		}
		total := 0
		for _, n := range rep.Mix {
			total += n
		}
		if total != 200 || len(rep.Mix) < 3 {
			t.Errorf("mix %v, want 200 inputs of several kinds", rep.Mix)
		}
	})
	t.Run("OPA wrong", func(t *testing.T) {
		t.Parallel()
		opa := startOPA(t, true)
		rep, err := verify(t.Context(), wl, client, opa.Client(), opa.URL)
		if err == nil {
			t.Fatal("verify accepted wrong answers")
		}
		if rep.Count == 0 || len(rep.Mismatches) == 0 || len(rep.Mismatches) > maxReported || !strings.Contains(rep.Mismatches[0], "opa answered") {
			t.Errorf("mismatches %d %q", rep.Count, rep.Mismatches)
		}
	})
}

func TestOperations(t *testing.T) {
	t.Parallel()
	pdp := startPDP(t)
	opa := startOPA(t, false)
	wl, err := newWorkload(t.Context(), testSource(), 1, 250, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode, url       string
		acceptGzip, h2c bool
		perOp           int64
	}{
		{ModePDPCheck, pdp.URL, true, false, 1},
		{ModePDPCheck, pdp.URL, false, false, 1},
		{ModePDPCheck, pdp.URL, true, true, 1},
		{ModePDPBatch, pdp.URL, true, false, BatchSize},
		{ModePDPSingles, pdp.URL, true, false, BatchSize},
		{ModeOPA, opa.URL, true, false, 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/gzip=%v/h2c=%v", tc.mode, tc.acceptGzip, tc.h2c), func(t *testing.T) {
			t.Parallel()
			hc := &http.Client{Transport: newTransport(2, tc.h2c)}
			op, err := newOperation(tc.mode, tc.url, hc, wl.items, tc.acceptGzip)
			if err != nil {
				t.Fatal(err)
			}
			// No warm-up: the first operation (100 Checks, in pdp-singles)
			// starts in the window however slow the race detector makes it.
			cfg := loadConfig{Workers: 2, Duration: 200 * time.Millisecond, Timeout: 5 * time.Second}
			m, err := runLoad(t.Context(), cfg, len(wl.items), op, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Errors != 0 || m.FirstError != nil {
				t.Fatalf("%d errors, first %v", m.Errors, m.FirstError)
			}
			if len(m.Latencies) == 0 || m.Decisions != int64(len(m.Latencies))*tc.perOp {
				t.Errorf("%d operations, %d decisions; want %d decisions each", len(m.Latencies), m.Decisions, tc.perOp)
			}
		})
	}
	if _, err := newOperation("pdp-telepathy", pdp.URL, http.DefaultClient, wl.items, true); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

// TestWrongAnswersAreErrors: a server that answers wrongly fails the run.
func TestWrongAnswersAreErrors(t *testing.T) {
	t.Parallel()
	opa := startOPA(t, true)
	wl, err := newWorkload(t.Context(), testSource(), 1, 100, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	op, err := newOperation(ModeOPA, opa.URL, opa.Client(), wl.items, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := runLoad(t.Context(), loadConfig{Workers: 1, Duration: 100 * time.Millisecond, Timeout: time.Second}, len(wl.items), op, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Wrong == 0 || m.Errors < m.Wrong {
		t.Errorf("wrong %d, errors %d; want the lies counted", m.Wrong, m.Errors)
	}
}

// TestCommands runs the command as the script does: bundle, verify, run
// (each mode once, briefly), report.
func TestCommands(t *testing.T) {
	t.Parallel()
	pdp := startPDP(t)
	opa := startOPA(t, false)
	dir := t.TempDir()
	src := testSource()
	bundleFlags := []string{"-policy-dir", src.Dir, "-bundle-verification-key", src.KeyFile, "-bundle-verification-key-id", src.KeyID}
	do := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}

	tarball := filepath.Join(dir, "bundle.tar.gz")
	if out, err := do(append([]string{"bundle", "-o", tarball}, bundleFlags...)...); err != nil {
		t.Fatalf("bundle: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(src.KeyFile)
	v, err := bundle.NewVerifier(src.KeyID, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Open(raw, v); err != nil {
		t.Errorf("the written bundle does not verify: %v", err)
	}

	out, err := do(append([]string{"verify", "-pdp-url", pdp.URL, "-opa-url", opa.URL, "-inputs", "100"}, bundleFlags...)...)
	if err != nil || !strings.Contains(out, "expected answer to every input") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	var files []string
	for _, r := range []struct{ label, mode, url string }{
		{"opa", ModeOPA, opa.URL},
		{"pdp-memory", ModePDPCheck, pdp.URL},
		{"pdp-memory", ModePDPBatch, pdp.URL},
		{"pdp-memory", ModePDPSingles, pdp.URL},
	} {
		file := filepath.Join(dir, r.label+"."+r.mode+".json")
		args := append([]string{"run", "-label", r.label, "-mode", r.mode, "-url", r.url, "-workers", "2",
			"-warmup", "0s", "-duration", "150ms", "-inputs", "200", "-out", file,
			"-server-pid", "1", "-metrics-url", pdp.URL + "/metrics"}, bundleFlags...)
		if out, err := do(args...); err != nil || !strings.Contains(out, "decisions/s") {
			t.Fatalf("run %s: %v\n%s", r.mode, err, out)
		}
		files = append(files, file)
	}
	res, err := readResults(files[1:2])
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Ops == 0 || r.ServerCPU == nil || r.Counters["cache_hits"]+r.Counters["cache_misses"] == 0 || r.Counters["decision_log_written"] == 0 {
		t.Errorf("result lacks measurements: %+v", r)
	}

	// The server runs in this process and other tests beside it: keep
	// every run whatever the machine did.
	out, err = do(append([]string{"report", "-max-other-cores", "0"}, files...)...)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	for _, want := range []string{"| opa | opa | 2 |", "| pdp-memory | pdp-check | 2 |", "Check against stock OPA", "One BatchCheck of 100"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "usage"},
		{"unknown command", []string{"stress"}, "unknown command"},
		{"run without url", []string{"run"}, "-url is required"},
		{"run longer than the answers hold", []string{"run", "-url", "http://127.0.0.1:1", "-duration", "10m"}, "may last"},
		{"verify without urls", []string{"verify"}, "-pdp-url and -opa-url are required"},
		{"bundle without output", []string{"bundle"}, "-o is required"},
		{"report without files", []string{"report"}, "needs result files"},
		{"stray argument", []string{"bundle", "-o", "x", "extra"}, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tc.args, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
