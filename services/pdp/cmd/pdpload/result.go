package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Result is one load run, as written to -out and read by report.
type Result struct {
	// Label names the server configuration (opa, pdp-memory, ...).
	Label   string    `json:"label"`
	Mode    string    `json:"mode"`
	Workers int       `json:"workers"`
	Inputs  int       `json:"inputs"`
	Started time.Time `json:"started"`
	// Seconds is the measured window, WarmupSeconds what preceded it.
	Seconds       float64 `json:"seconds"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	// Ops counts measured successful operations (a Check, a BatchCheck,
	// 100 Checks, an OPA query); Decisions the decisions they returned.
	Ops       int64 `json:"ops"`
	Decisions int64 `json:"decisions"`
	// Errors counts failed operations: transport errors, Wrong answers
	// (another decision than expected) and Indeterminate ones (the server
	// failed closed).
	Errors          int64   `json:"errors"`
	Wrong           int64   `json:"wrong"`
	Indeterminate   int64   `json:"indeterminate"`
	OpsPerSec       float64 `json:"ops_per_sec"`
	DecisionsPerSec float64 `json:"decisions_per_sec"`
	// Latency of one operation, in microseconds.
	Latency Latency `json:"latency_us"`
	// ServerCPU and DBCPU are CPU seconds the server process and the
	// database used in the window; nil when not measured.
	ServerCPU *float64 `json:"server_cpu_seconds,omitempty"`
	DBCPU     *float64 `json:"db_cpu_seconds,omitempty"`
	// ClientCPU is what the load generator itself used; OtherCPU is the
	// rest of the machine's busy CPU time (other processes, the kernel's
	// work for no one of ours), StealCPU what the hypervisor gave to other
	// guests. All in CPU seconds over the window.
	ClientCPU float64 `json:"client_cpu_seconds"`
	OtherCPU  float64 `json:"other_cpu_seconds"`
	StealCPU  float64 `json:"steal_cpu_seconds"`
	// Counters are increments of the PDP's metrics in the window (cache
	// hits and misses, decision log events written, back-pressure waits);
	// nil when not scraped.
	Counters map[string]float64 `json:"counters,omitempty"`
	// Load1 is the 1-minute load average when the window opened and
	// closed (the run itself raises it).
	Load1Start float64 `json:"load1_start"`
	Load1End   float64 `json:"load1_end"`
}

// Latency holds percentiles of operation latency in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// fill sets r's counts, rates and percentiles from m.
func (r *Result) fill(m measurement) {
	r.Seconds = m.Elapsed.Seconds()
	r.Ops = int64(len(m.Latencies))
	r.Decisions = m.Decisions
	r.Errors = m.Errors
	r.Wrong = m.Wrong
	r.Indeterminate = m.Indeterminate
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
		r.DecisionsPerSec = float64(r.Decisions) / r.Seconds
	}
	r.Latency = Latency{
		P50:  micros(percentile(m.Latencies, 0.50)),
		P95:  micros(percentile(m.Latencies, 0.95)),
		P99:  micros(percentile(m.Latencies, 0.99)),
		P999: micros(percentile(m.Latencies, 0.999)),
		Max:  micros(percentile(m.Latencies, 1)),
	}
}

// summary writes r for people.
func (r *Result) summary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d workers, %.1fs measured after %.1fs warm-up, %d inputs\n",
		r.Label, r.Mode, r.Workers, r.Seconds, r.WarmupSeconds, r.Inputs)
	fmt.Fprintf(&b, "  decisions/s %.0f   ops/s %.0f   ops %d   decisions %d   errors %d (wrong answers %d, indeterminate %d)\n",
		r.DecisionsPerSec, r.OpsPerSec, r.Ops, r.Decisions, r.Errors, r.Wrong, r.Indeterminate)
	fmt.Fprintf(&b, "  latency per op (us): p50 %.0f  p95 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n",
		r.Latency.P50, r.Latency.P95, r.Latency.P99, r.Latency.P999, r.Latency.Max)
	if r.ServerCPU != nil {
		fmt.Fprintf(&b, "  server CPU %.2fs (%.2f cores, %.1f us/decision)\n",
			*r.ServerCPU, max(share(*r.ServerCPU, r.Seconds), 0), perDecision(*r.ServerCPU, r.Decisions))
	}
	if r.DBCPU != nil {
		fmt.Fprintf(&b, "  database CPU %.2fs (%.1f us/decision)\n", *r.DBCPU, perDecision(*r.DBCPU, r.Decisions))
	}
	for _, k := range counterNames {
		if v, ok := r.Counters[k.key]; ok {
			fmt.Fprintf(&b, "  %s %.0f\n", k.key, v)
		}
	}
	fmt.Fprintf(&b, "  load generator CPU %.2fs, other CPU %.2fs, steal %.2fs, load average %.2f -> %.2f\n",
		r.ClientCPU, r.OtherCPU, r.StealCPU, r.Load1Start, r.Load1End)
	_, err := io.WriteString(w, b.String())
	return err
}

func perDecision(cpuSeconds float64, decisions int64) float64 {
	if decisions == 0 {
		return 0
	}
	return cpuSeconds / float64(decisions) * 1e6
}

// counterNames are the PDP metrics a run reports, as increments over the
// window: key, Prometheus series name and a label filter.
var counterNames = []struct{ key, series, label string }{
	{"cache_hits", "gatehouse_pdp_cache_lookups_total", `result="hit"`},
	{"cache_misses", "gatehouse_pdp_cache_lookups_total", `result="miss"`},
	{"decision_log_written", "gatehouse_audit_events_written_total", ""},
	{"decision_log_waits", "gatehouse_audit_record_blocked_duration_seconds_count", ""},
}

// probes take the snapshots a run compares at the window's start and end.
type probes struct {
	// ServerPID is the server process (0: not measured).
	ServerPID int
	// DBCPUFile is a cgroup CPU accounting file of the database container
	// (cgroup v1 cpuacct.usage, or v2 cpu.stat); empty: not measured.
	DBCPUFile string
	// MetricsURL is the PDP's /metrics; empty: not scraped.
	MetricsURL string
	// ProcDir is /proc (a test may point it elsewhere).
	ProcDir string
	Client  *http.Client
}

type snapshot struct {
	serverCPU, dbCPU, selfCPU float64
	machine                   machineCPU
	counters                  map[string]float64
	load1                     float64
}

func (p probes) take(ctx context.Context) (snapshot, error) {
	var s snapshot
	var errs []error
	var err error
	if p.ServerPID > 0 {
		s.serverCPU, err = processCPU(fmt.Sprintf("%s/%d/stat", p.ProcDir, p.ServerPID))
		errs = append(errs, err)
	}
	if p.DBCPUFile != "" {
		s.dbCPU, err = cgroupCPU(p.DBCPUFile)
		errs = append(errs, err)
	}
	if p.MetricsURL != "" {
		s.counters, err = scrape(ctx, p.Client, p.MetricsURL)
		errs = append(errs, err)
	}
	s.selfCPU, err = processCPU(p.ProcDir + "/self/stat")
	errs = append(errs, err)
	s.machine, err = readMachineCPU(p.ProcDir + "/stat")
	errs = append(errs, err)
	s.load1, err = loadAverage(p.ProcDir + "/loadavg")
	errs = append(errs, err)
	return s, errors.Join(errs...)
}

// apply records the differences between before and after in r.
func (p probes) apply(r *Result, before, after snapshot) {
	if p.ServerPID > 0 {
		v := after.serverCPU - before.serverCPU
		r.ServerCPU = &v
	}
	if p.DBCPUFile != "" {
		v := after.dbCPU - before.dbCPU
		r.DBCPU = &v
	}
	if p.MetricsURL != "" {
		r.Counters = map[string]float64{}
		for k, v := range after.counters {
			r.Counters[k] = v - before.counters[k]
		}
	}
	r.ClientCPU = after.selfCPU - before.selfCPU
	r.StealCPU = after.machine.steal - before.machine.steal
	other := after.machine.busy - before.machine.busy - r.ClientCPU
	if r.ServerCPU != nil {
		other -= *r.ServerCPU
	}
	if r.DBCPU != nil {
		other -= *r.DBCPU
	}
	// Accounting granularity (10 ms ticks) can make a quiet machine's
	// remainder slightly negative.
	r.OtherCPU = max(other, 0)
	r.Load1Start, r.Load1End = before.load1, after.load1
}

// machineCPU is the machine's CPU time from /proc/stat, in seconds: busy
// (user, nice, system, irq, softirq, steal) and, separately, steal.
type machineCPU struct{ busy, steal float64 }

func readMachineCPU(file string) (machineCPU, error) {
	raw, err := os.ReadFile(file) //nolint:gosec // G304: /proc/stat, or a file a test names
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("%s: no cpu line", file)
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("%s: %w", file, err)
		}
		v[i] = n
	}
	busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return machineCPU{busy: float64(busy) / clockTicks, steal: float64(v[7]) / clockTicks}, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// processCPU returns the user plus system CPU seconds of a process from
// its /proc/<pid>/stat.
func processCPU(statFile string) (float64, error) {
	raw, err := os.ReadFile(statFile) //nolint:gosec // G304: /proc/<pid>/stat of the pid the operator names
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: not a stat file", statFile)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: not a stat file", statFile)
	}
	var ticks float64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", statFile, err)
		}
		ticks += float64(v)
	}
	return ticks / clockTicks, nil
}

// cgroupCPU returns the CPU seconds a cgroup used: from cgroup v2 cpu.stat
// (usage_usec) or cgroup v1 cpuacct.usage (nanoseconds).
func cgroupCPU(file string) (float64, error) {
	raw, err := os.ReadFile(file) //nolint:gosec // G304: the cgroup file the operator names
	if err != nil {
		return 0, err
	}
	text := strings.TrimSpace(string(raw))
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", file, err)
			}
			return float64(n) / 1e6, nil
		}
	}
	n, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: neither cpu.stat nor cpuacct.usage: %w", file, err)
	}
	return float64(n) / 1e9, nil
}

// loadAverage returns the 1-minute load average from /proc/loadavg.
func loadAverage(file string) (float64, error) {
	raw, err := os.ReadFile(file) //nolint:gosec // G304: /proc/loadavg, or a file a test names
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", file)
	}
	return strconv.ParseFloat(f[0], 64)
}

// scrape reads the counters of counterNames from a Prometheus text
// exposition, each summed over its series that carry the label.
func scrape(ctx context.Context, hc *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	return parseCounters(resp.Body)
}

func parseCounters(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			continue
		}
		series, value := line[:cut], line[cut+1:]
		name, labels, _ := strings.Cut(series, "{")
		for _, c := range counterNames {
			if name != c.series || !strings.Contains(labels, c.label) {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", series, err)
			}
			out[c.key] += v
		}
	}
	return out, sc.Err()
}

// writeJSON writes r to file.
func (r *Result) writeJSON(file string) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	// Benchmark results: a report, readable like the rest of the output.
	return os.WriteFile(file, append(raw, '\n'), 0o644) //nolint:gosec // G306: not secret
}
