package serve_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/serve"
)

const bodyDeadline = 300 * time.Millisecond

// slowServer serves h behind WithBodyDeadline(bodyDeadline) over HTTP/1.1.
func slowServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(serve.WithBodyDeadline(h, bodyDeadline))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// sendSlowly sends a request declaring a 10-byte body and one byte of it,
// then waits for the answer; it returns the status line ("" if the
// connection closed without one) and how long that took.
func sendSlowly(t *testing.T, addr string) (string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The test's own bound: far above the deadline, so a hang fails.
	if err := conn.SetDeadline(time.Now().Add(10 * bodyDeadline)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Fatalf("no answer and the connection still open after %s", time.Since(start))
		}
	}
	return strings.TrimSpace(line), time.Since(start)
}

func TestBodyDeadlineEndsSlowBodies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"a handler reading the body gets an error", func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "slow body", http.StatusRequestTimeout)
				return
			}
			w.WriteHeader(http.StatusOK)
		}, "HTTP/1.1 408 Request Timeout"},
		// The server reads an unread body before it answers: the deadline
		// bounds that too.
		{"a handler refusing before the body", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
		}, "HTTP/1.1 401 Unauthorized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			line, took := sendSlowly(t, slowServer(t, tc.handler))
			if line != tc.want && line != "" {
				t.Errorf("answer %q, want %q or a closed connection", line, tc.want)
			}
			if took < bodyDeadline || took > 5*bodyDeadline {
				t.Errorf("answered or closed after %s, want soon after the %s deadline", took, bodyDeadline)
			}
		})
	}
}

// TestBodyDeadlineLiftsOnceRead: a response that takes longer than the
// deadline, after the body was read, is not cut off.
func TestBodyDeadlineLiftsOnceRead(t *testing.T) {
	t.Parallel()
	addr := slowServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
			return
		}
		select {
		case <-r.Context().Done():
			return // cut off: the client sees no answer
		case <-time.After(3 * bodyDeadline):
		}
		_, _ = io.WriteString(w, "done")
	})
	resp, err := http.Post("http://"+addr, "text/plain", strings.NewReader("a whole body"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "done" {
		t.Errorf("%d %q (%v), want 200 done", resp.StatusCode, body, err)
	}
}
