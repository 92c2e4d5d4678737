package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ptr(v float64) *float64 { return &v }

func result(label, mode string, workers int, dps, p99 float64) Result {
	return Result{
		Label: label, Mode: mode, Workers: workers, Seconds: 10,
		Decisions: int64(dps * 10), DecisionsPerSec: dps, OpsPerSec: dps,
		Latency:   Latency{P50: p99 / 4, P95: p99 / 2, P99: p99, P999: p99 * 2, Max: p99 * 3},
		ServerCPU: ptr(10), ClientCPU: 5, OtherCPU: 1, StealCPU: 0,
		Counters:   map[string]float64{"cache_hits": 90, "cache_misses": 10},
		Load1Start: 0.1,
	}
}

func TestSummarizeTakesMedians(t *testing.T) {
	t.Parallel()
	runs := []Result{
		result("opa", ModeOPA, 16, 1000, 900),
		result("pdp", ModePDPCheck, 16, 3000, 500),
		result("opa", ModeOPA, 16, 3000, 100),
		result("pdp", ModePDPCheck, 16, 1000, 100),
		result("opa", ModeOPA, 16, 2000, 700),
		result("pdp", ModePDPCheck, 8, 5000, 50),
	}
	rows := summarize(runs)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want opa, pdp at 16 and pdp at 8 workers", len(rows))
	}
	opa, pdp := rows[0], rows[1]
	if opa.Label != "opa" || opa.Runs != 3 || opa.DecisionsPerSec != 2000 || opa.Latency.P99 != 700 {
		t.Errorf("opa row %+v, want medians 2000/s p99 700 of 3 runs", opa)
	}
	if pdp.Runs != 2 || pdp.DecisionsPerSec != 2000 || pdp.Latency.P99 != 300 {
		t.Errorf("pdp row %+v, want the mean of the middle two: 2000/s p99 300", pdp)
	}
	if opa.HitRate != 0.9 || opa.CPUShare != 1 || opa.ClientShare != 0.5 || opa.OtherShare != 0.1 {
		t.Errorf("resource medians %+v", opa)
	}
	if rows[2].Workers != 8 {
		t.Errorf("third row %+v, want the 8-worker pdp runs", rows[2])
	}
}

func TestVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		dps, p99 float64
		met      bool
	}{
		{"twice as fast, lower p99", 2000, 400, true},
		{"more than twice, lower p99", 5000, 100, true},
		{"twice as fast, same p99", 2000, 500, false},
		{"lower p99, not twice as fast", 1900, 100, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			results := []Result{result("opa", ModeOPA, 16, 1000, 500), result("pdp", ModePDPCheck, 16, tc.dps, tc.p99)}
			vs := verdicts(results, summarize(results), "opa")
			if len(vs) != 1 {
				t.Fatalf("%d verdicts", len(vs))
			}
			if vs[0].Met != tc.met || vs[0].Factor != tc.dps/1000 {
				t.Errorf("verdict %+v, want met %v", vs[0], tc.met)
			}
		})
	}
	other := []Result{result("opa", ModeOPA, 4, 1000, 1), result("pdp", ModePDPCheck, 16, 1, 1)}
	if vs := verdicts(other, summarize(other), "opa"); len(vs) != 0 {
		t.Error("compared runs of different concurrency")
	}
}

func TestWriteReport(t *testing.T) {
	t.Parallel()
	pg := result("pdp-postgres", ModePDPCheck, 16, 2500, 400)
	pg.DBCPU = ptr(2)
	results := []Result{
		result("opa", ModeOPA, 16, 1000, 500),
		pg,
		result("pdp-memory", ModePDPBatch, 4, 40000, 8000),
		result("pdp-memory", ModePDPSingles, 4, 5000, 80000),
	}
	var b strings.Builder
	if err := writeReport(&b, results, "opa"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| opa | opa | 16 | 1 | 1000 | 1000 | 125 | 250 | 500 | 1000 | 1500 | 0 (0) |",
		"| pdp-postgres | pdp-check | 16 | 1.00 | 400.0 | 80.0 | 0.50 | 0.10 | 0.00 | 90.0% | 0 | 0.10–0.10 |",
		"| pdp-postgres | 16 | 2500 | 1000 | 2.50 | 2.50 | 400 | 500 | 1 of 1 | yes |",
		"| pdp-memory | 4 | 2000 | 8000 | 20000 | 80000 | 10.0× | 40000 | 5000 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks\n%s\n%s", want, out)
		}
	}
}

// TestVerdictsPairRepetitions: a machine that slows down over the
// benchmark moves both servers; each PDP run is compared with the OPA run
// just before it.
func TestVerdictsPairRepetitions(t *testing.T) {
	t.Parallel()
	at := func(r Result, minute int) Result {
		r.Started = time.Date(2026, 11, 26, 3, minute, 0, 0, time.UTC)
		return r
	}
	results := []Result{
		at(result("opa", ModeOPA, 16, 3000, 500), 0), at(result("pdp", ModePDPCheck, 16, 6300, 400), 1),
		at(result("opa", ModeOPA, 16, 2000, 500), 10), at(result("pdp", ModePDPCheck, 16, 4200, 600), 11),
		at(result("opa", ModeOPA, 16, 1500, 500), 20), at(result("pdp", ModePDPCheck, 16, 3150, 450), 21),
	}
	vs := verdicts(results, summarize(results), "opa")
	if len(vs) != 1 {
		t.Fatalf("%d verdicts", len(vs))
	}
	v := vs[0]
	if len(v.Paired) != 3 || v.Paired[0] != 2.1 || v.Paired[1] != 2.1 || v.Paired[2] != 2.1 || v.LowerP99 != 2 {
		t.Errorf("paired %v, lower p99 %d; want 2.1 three times and 2 lower", v.Paired, v.LowerP99)
	}
	if v.Factor != 2.1 || !v.Met {
		t.Errorf("factor %v met %v; want the medians 4200/2000", v.Factor, v.Met)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, -1},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestResultRoundTrip(t *testing.T) {
	t.Parallel()
	r := result("opa", ModeOPA, 16, 1000, 500)
	r.Started = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	file := filepath.Join(t.TempDir(), "r.json")
	if err := r.writeJSON(file); err != nil {
		t.Fatal(err)
	}
	got, err := readResults([]string{file})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].DecisionsPerSec != 1000 || *got[0].ServerCPU != 10 || !got[0].Started.Equal(r.Started) || got[0].Counters["cache_hits"] != 90 {
		t.Errorf("read back %+v", got[0])
	}
	if err := os.WriteFile(file, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readResults([]string{file}); err == nil {
		t.Error("a broken result file was read")
	}
}

func TestQuietRuns(t *testing.T) {
	t.Parallel()
	quiet, busy := result("opa", ModeOPA, 16, 1, 1), result("opa", ModeOPA, 16, 1, 1)
	busy.OtherCPU = 5 // 0.5 cores over 10 s
	kept, dropped := quietRuns([]Result{quiet, busy}, 0.2)
	if len(kept) != 1 || len(dropped) != 1 || dropped[0].OtherCPU != 5 {
		t.Errorf("kept %d, dropped %v", len(kept), dropped)
	}
	if kept, _ := quietRuns([]Result{quiet, busy}, 0); len(kept) != 2 {
		t.Error("a limit of 0 left runs out")
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                    string
		ops, errs, wrong, indet int64
		wantErr                 bool
		wantWarning             bool
	}{
		{"clean", 1000, 0, 0, 0, false, false},
		{"one indeterminate in many", 10000, 1, 0, 1, false, true},
		{"too many errors", 1000, 10, 0, 10, true, false},
		{"one wrong answer", 10000, 1, 1, 0, true, false},
		{"nothing measured", 0, 0, 0, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			err := judge(Result{Ops: tc.ops, Errors: tc.errs, Wrong: tc.wrong, Indeterminate: tc.indet}, errIndeterminate, &out)
			if (err != nil) != tc.wantErr || strings.Contains(out.String(), "WARNING") != tc.wantWarning {
				t.Errorf("judge = %v, output %q", err, out.String())
			}
		})
	}
}
