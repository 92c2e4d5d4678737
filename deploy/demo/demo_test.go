package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects the logs every service writes concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDemoServesTheFlowWithOneTrace runs the whole demo in-process, performs
// the README's flow, and checks that the trace the gateway starts reaches
// the invoice service and the PDP (asked twice: by the gateway and by the
// invoice service) through W3C trace context, and that the client's own
// traceparent did not become ours (the gateway is a public endpoint).
func TestDemoServesTheFlowWithOneTrace(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var logs lockedBuffer
	var banner bytes.Buffer
	done := make(chan error, 1)
	// Ports offset by 10000, so the test runs beside a demo or compose stack.
	opts := options{policyDir: "../../policies", bundleKey: "../policy-signing/demo.pub.pem", bundleKeyID: "gatehouse-demo", verbose: true, ports: defaultPorts(), portOffset: 10000}
	go func() { done <- run(ctx, &banner, &logs, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo stopped with %v", err)
		}
	})
	for _, port := range []string{"18000", "18080", "18081", "18091", "18092"} {
		waitReady(t, "http://localhost:"+port+"/readyz")
	}
	if !strings.Contains(banner.String(), "http://localhost:18000") || !strings.Contains(banner.String(), "DEV ONLY") || !strings.Contains(banner.String(), "reporting-job-secret") {
		t.Fatalf("banner lacks the dev-only label or the demo credentials:\n%s", banner.String())
	}

	token := clientCredentials(t, "reporting-job", "reporting-job-secret", "invoice:read")
	const clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		"http://localhost:18000/gatehouse.invoice.v1.InvoiceService/ListInvoices", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("traceparent", "00-"+clientTraceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tenant":"acme"`) {
		t.Fatalf("list invoices: %d %s", resp.StatusCode, body)
	}

	requestID := resp.Header.Get("X-Request-Id")

	// The gateway logs the request (with its trace id) after the response is
	// sent, so wait, bounded, for the records.
	var traceID string
	var seen map[string]int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		traceID = traceOfRequest(logs.String(), requestID)
		if seen = recordsWithTrace(logs.String(), traceID); traceID != "" && seen["gateway"] > 0 && seen["invoice"] > 0 && seen["pdp"] >= 2 {
			break
		}
	}
	if traceID == "" || traceID == clientTraceID {
		t.Fatalf("gateway trace id %q for request %q: must exist and not be the client's", traceID, requestID)
	}
	if seen["gateway"] == 0 || seen["invoice"] == 0 || seen["pdp"] < 2 {
		t.Fatalf("trace %s did not cross gateway -> pdp and gateway -> invoice -> pdp; records per service: %v", traceID, seen)
	}
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), "reporting-job-secret") {
		t.Fatal("logs contain the token or the client secret")
	}
}

// traceOfRequest finds the trace id the gateway logged for requestID.
func traceOfRequest(logs, requestID string) string {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Service   string `json:"service"`
			RequestID string `json:"request_id"`
			TraceID   string `json:"trace_id"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Service == "gateway" && rec.RequestID == requestID && requestID != "" {
			return rec.TraceID
		}
	}
	return ""
}

// recordsWithTrace counts, per service, the JSON log records of traceID.
func recordsWithTrace(logs, traceID string) map[string]int {
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Service string `json:"service"`
			TraceID string `json:"trace_id"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.TraceID == traceID {
			seen[rec.Service]++
		}
	}
	return seen
}

func waitReady(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clientCredentials(t *testing.T, id, secret, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://localhost:18080/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}
