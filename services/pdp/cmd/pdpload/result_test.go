package main

import (
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProcessCPU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// utime 250 and stime 50 ticks; the command name holds a space and a parenthesis.
	stat := write(t, dir, "stat", "42 (pdp (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 1 1\n")
	got, err := processCPU(stat)
	if err != nil || got != 3 {
		t.Errorf("processCPU = %v, %v; want 3s", got, err)
	}
	if _, err := processCPU(write(t, dir, "bad", "garbage")); err == nil {
		t.Error("a malformed stat file was read")
	}
	if _, err := processCPU(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing stat file was read")
	}
	if self, err := processCPU("/proc/self/stat"); err != nil || self < 0 {
		t.Errorf("own CPU = %v, %v", self, err)
	}
}

func TestCgroupCPU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          float64
		wantErr       bool
	}{
		{"v1 cpuacct.usage", "2500000000\n", 2.5, false},
		{"v2 cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n", 1.5, false},
		{"neither", "nr_periods 0\n", 0, true},
	}
	for _, tc := range tests {
		got, err := cgroupCPU(write(t, dir, strings.ReplaceAll(tc.name, " ", "_"), tc.content))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: cgroupCPU = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestMachineCPUAndLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := readMachineCPU(write(t, dir, "stat", "cpu  100 10 50 9000 40 5 5 20 0 0\ncpu0 50 5 25 4500 20 2 2 10 0 0\n"))
	if err != nil || m.busy != 1.9 || m.steal != 0.2 {
		t.Errorf("machine = %+v, %v; want busy 1.9s, steal 0.2s", m, err)
	}
	if _, err := readMachineCPU(write(t, dir, "nostat", "intr 1\n")); err == nil {
		t.Error("a stat file without a cpu line was read")
	}
	l, err := loadAverage(write(t, dir, "loadavg", "0.42 0.30 0.20 1/100 12345\n"))
	if err != nil || l != 0.42 {
		t.Errorf("load = %v, %v", l, err)
	}
}

func TestParseCounters(t *testing.T) {
	t.Parallel()
	text := `# HELP gatehouse_pdp_cache_lookups_total Decision cache lookups
# TYPE gatehouse_pdp_cache_lookups_total counter
gatehouse_pdp_cache_lookups_total{otel_scope_name="pdp",result="hit"} 1.5e+06
gatehouse_pdp_cache_lookups_total{otel_scope_name="pdp",result="miss"} 250
gatehouse_audit_events_written_total{otel_scope_name="pdp"} 100
gatehouse_audit_events_written_total{otel_scope_name="other"} 20
gatehouse_audit_record_blocked_duration_seconds_count{otel_scope_name="pdp"} 3
gatehouse_pdp_decisions_total{decision="allow"} 999
`
	got, err := parseCounters(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"cache_hits": 1.5e6, "cache_misses": 250, "decision_log_written": 120, "decision_log_waits": 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("counters %v, want only %v", got, want)
	}
	if _, err := parseCounters(strings.NewReader(`gatehouse_audit_events_written_total{} many`)); err == nil {
		t.Error("a non-numeric value was read")
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, "7/stat", "7 (pdp) S 1 7 7 0 -1 0 0 0 0 0 100 100 0 0\n")
	write(t, dir, "self/stat", "8 (pdpload) S 1 8 8 0 -1 0 0 0 0 0 50 0 0 0\n")
	write(t, dir, "stat", "cpu  300 0 100 1000 0 0 0 10 0 0\n")
	write(t, dir, "loadavg", "0.50 0.40 0.30 1/1 1\n")
	db := write(t, dir, "cpuacct.usage", "1000000000\n")
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("gatehouse_pdp_cache_lookups_total{result=\"hit\"} 10\n"))
	}))
	defer metrics.Close()
	p := probes{ServerPID: 7, DBCPUFile: db, MetricsURL: metrics.URL, ProcDir: dir, Client: metrics.Client()}
	before, err := p.take(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A second later: the server used 1s more, the load generator 0.5s,
	// the database 0.5s, the machine 2.5s busy (0.2s of it stolen).
	write(t, dir, "7/stat", "7 (pdp) S 1 7 7 0 -1 0 0 0 0 0 150 150 0 0\n")
	write(t, dir, "self/stat", "8 (pdpload) S 1 8 8 0 -1 0 0 0 0 0 100 0 0 0\n")
	write(t, dir, "stat", "cpu  500 0 130 1000 0 0 0 30 0 0\n")
	write(t, dir, "cpuacct.usage", "1500000000\n")
	after, err := p.take(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r := Result{Seconds: time.Second.Seconds()}
	p.apply(&r, before, after)
	if *r.ServerCPU != 1 || *r.DBCPU != 0.5 || r.ClientCPU != 0.5 || math.Abs(r.StealCPU-0.2) > 1e-9 || r.Load1Start != 0.5 {
		t.Errorf("result %+v", r)
	}
	if math.Abs(r.OtherCPU-0.5) > 1e-9 {
		t.Errorf("other CPU = %v, want 2.5 - 1 - 0.5 - 0.5 = 0.5", r.OtherCPU)
	}
	if r.Counters["cache_hits"] != 0 {
		t.Errorf("counters %v, want no increase", r.Counters)
	}
	bad := probes{ServerPID: 99, ProcDir: dir}
	if _, err := bad.take(t.Context()); err == nil {
		t.Error("a missing server process was not reported")
	}
}
