package catalogue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The gateway's key-set cache: at most one JWKS fetch per refetch interval,
// however many unknown kids arrive (-jwks-min-refetch-interval, its
// default in the stack).
const jwksMinRefetchInterval = 10 * time.Second

// The JWKS storm: stormTokens forged tokens, sent at stormRate a second,
// under the gateway's per-source rate limit (50 a second, burst 100), so
// that every one reaches token verification.
const (
	stormTokens  = 200
	stormRate    = 50
	stormWorkers = 8
)

// The PDP's BatchCheck and its limits (docs/pdp.md).
const (
	batchCheck     = "/gatehouse.authz.v1.DecisionService/BatchCheck"
	maxBatchItems  = 100
	pdpMaxBodySize = 1 << 20
)

// Slow clients: the gateway's server reads a request's header block for
// at most 5 s (libs/serve's ReadHeaderTimeout) and its body for at most
// 10 s after that (libs/serve's BodyTimeout); the bounds leave room for a
// loaded machine, and each slow client hangs up by itself slowStop after
// its bound.
const (
	slowHeaderBound = 8 * time.Second
	slowBodyBound   = 13 * time.Second
	slowStop        = 2 * time.Second
	slowEvery       = time.Second
)

const (
	jwksStorm = "JWKS refetch storm with random kids"
	slowHead  = "slow client: header block one byte a second"
	slowBody  = "slow client: declared body one byte a second"
)

func exhaustion() []Scenario {
	return []Scenario{
		{Name: jwksStorm, Category: Availability, Reference: "API4:2023",
			Request: fmt.Sprintf("%d ListInvoices at %d a second, each with reporting-job's claims signed by an attacker key under a fresh random `kid`",
				stormTokens, stormRate),
			Expect: invalidToken,
			Verify: &Verify{Name: fmt.Sprintf("every answer alike; the gateway fetched the issuer's JWKS at most once per %v during the burst (its `gatehouse_gateway_jwks_fetches_total`)",
				jwksMinRefetchInterval),
				Check: func(_ context.Context, t *Target, _ *Response) error {
					seen, err := observation[stormFetches](t, jwksStorm)
					if err != nil {
						return err
					}
					if bound := 1 + int(seen.took/jwksMinRefetchInterval); seen.fetches > float64(bound) {
						return fmt.Errorf("%v JWKS fetches in %v, want at most %d", seen.fetches, seen.took.Round(time.Millisecond), bound)
					}
					return nil
				}},
			Send: func(ctx context.Context, t *Target) (*Response, error) { return t.jwksStorm(ctx) }},
		{Name: "BatchCheck over the item limit", Category: Availability, Reference: "API4:2023",
			Request: fmt.Sprintf("BatchCheck of %d well-formed items straight to the PDP (over its %d)", maxBatchItems+1, maxBatchItems),
			Expect:  Outcome{Status: http.StatusBadRequest, Code: "invalid_argument", Reason: "batch_too_large"},
			State:   pdpDecisions,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.pdpPost(ctx, batchCheck, batchBody(maxBatchItems+1))
			}},
		{Name: "BatchCheck body over the size limit", Category: Availability, Reference: "API4:2023",
			Request: fmt.Sprintf("BatchCheck of %d well-formed items straight to the PDP, a body over 4 MiB (its limit is %d MiB)",
				hugeBatchItems(), pdpMaxBodySize>>20),
			Expect: Outcome{Status: http.StatusTooManyRequests, Code: "resource_exhausted", Reason: NoErrorInfo},
			State:  pdpDecisions,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.pdpPost(ctx, batchCheck, batchBody(hugeBatchItems()))
			}},
		{Name: slowHead, Category: Availability, Reference: "API4:2023",
			Request: "a connection to the gateway sending a ListInvoices request line, then its header block one byte a second; a genuine ListInvoices meanwhile",
			Expect:  Outcome{Status: http.StatusBadRequest, Dropped: slowHeaderBound},
			Verify:  meanwhileServed(slowHead),
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				head := "POST " + listInvoices + " HTTP/1.1\r\nHost: gateway\r\n"
				return t.slowClient(ctx, slowHead, []byte(head), []byte("X-Slow: "+strings.Repeat("s", 64)), slowHeaderBound+slowStop, "")
			}},
		{Name: slowBody, Category: Availability, Reference: "API4:2023",
			Request: "ListInvoices with reporting-job's token and `Content-Length: 64`, the body sent one byte a second; a genuine ListInvoices meanwhile",
			Expect:  Outcome{Status: http.StatusBadRequest, Dropped: slowBodyBound},
			Verify:  meanwhileServed(slowBody),
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				body := fmt.Sprintf("%-64s", `{"pageSize":1}`) // JSON, padded with spaces
				head := "POST " + listInvoices + " HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n" +
					"Authorization: Bearer " + tok + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
				return t.slowClient(ctx, slowBody, []byte(head), []byte(body), slowBodyBound+slowStop, tok)
			}},
	}
}

// stormFetches is what the JWKS storm saw: the gateway's JWKS fetches
// during the burst, and how long the burst took.
type stormFetches struct {
	fetches float64
	took    time.Duration
}

// jwksStorm sends the storm and returns its one answer: every answer must
// be alike (status, Connect code, reason, challenge), or it fails.
func (t *Target) jwksStorm(ctx context.Context) (*Response, error) {
	genuine, err := t.freshToken(ctx)
	if err != nil {
		return nil, err
	}
	key, err := attackerKey()
	if err != nil {
		return nil, err
	}
	tokens := make(chan string)
	answers := make([]*Response, 0, stormTokens)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range stormWorkers {
		wg.Go(func() {
			for tok := range tokens {
				resp, err := t.do(ctx, call{procedure: listInvoices, bearer: tok})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					answers = append(answers, resp)
				}
				mu.Unlock()
			}
		})
	}
	before, err := t.gatewayJWKSFetches(ctx)
	if err != nil {
		close(tokens)
		wg.Wait()
		return nil, err
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / stormRate)
	var signErr error
send:
	for range stormTokens {
		var tok string
		if tok, signErr = es256(signingInput(genuine.withHeader(map[string]any{"kid": "storm-" + rand.Text()}), genuine.claims), key); signErr != nil {
			break
		}
		select {
		case <-ctx.Done():
			break send
		case <-tick.C:
		}
		tokens <- tok
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(append(errs, signErr, ctx.Err())...); err != nil {
		return nil, err
	}
	after, err := t.gatewayJWKSFetches(ctx)
	if err != nil {
		return nil, err
	}
	t.observe(jwksStorm, stormFetches{fetches: after - before, took: took})
	kinds := map[string]int{}
	for _, a := range answers {
		kinds[answerKind(a)]++
	}
	if len(kinds) != 1 {
		return nil, fmt.Errorf("the %d answers differ: %v", len(answers), kinds)
	}
	return answers[0], nil
}

// answerKind is what must be alike in the storm's answers.
func answerKind(r *Response) string {
	var ce ConnectError
	_ = json.Unmarshal(r.Body, &ce) // a non-Connect answer has an empty code
	return fmt.Sprintf("%d %s %s %q", r.Status, ce.Code, ce.Reason(), r.Header.Get("WWW-Authenticate"))
}

// gatewayJWKSFetches is how many times the gateway has fetched the issuer's
// JWKS, successfully or not (its gatehouse.gateway.jwks.fetches counter).
// It fetched the keys before it was ready, so the metric is there.
func (t *Target) gatewayJWKSFetches(ctx context.Context) (float64, error) {
	return t.metricSum(ctx, t.GatewayURL+"/metrics", "gatehouse_gateway_jwks_fetches_total")
}

// pdpDecisions is the PDP's count of decisions made: a refused batch
// decides nothing. The suite's controls have made decisions by then, so the
// metric is there.
var pdpDecisions = &State{Name: "the PDP's decision count (`gatehouse_pdp_decisions_total`)",
	Read: func(ctx context.Context, t *Target) (string, error) {
		n, err := t.metricSum(ctx, t.PDPURL+"/metrics", "gatehouse_pdp_decisions_total")
		return strconv.FormatFloat(n, 'f', -1, 64), err
	}}

// metricSum is the sum of the samples of metric name (Prometheus text
// format at metricsURL) whose labels include every one of labels (each
// `name="value"`). No such sample is an error: a renamed metric must not
// make a comparison of two zeros pass.
func (t *Target) metricSum(ctx context.Context, metricsURL, name string, labels ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := t.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	var sum float64
	found := false
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, maxResponse)
	for lines.Scan() {
		line := lines.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue
		}
		set, value := "", rest
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("metrics: unparsable sample %q", line)
			}
			set, value = rest[:end+1], rest[end+1:]
		}
		if !slices.ContainsFunc(labels, func(l string) bool {
			return !strings.Contains(set, "{"+l) && !strings.Contains(set, ","+l)
		}) {
			fields := strings.Fields(value)
			if len(fields) == 0 {
				return 0, fmt.Errorf("metrics: unparsable sample %q", line)
			}
			v, err := strconv.ParseFloat(fields[0], 64)
			if err != nil {
				return 0, fmt.Errorf("metrics: %q: %w", line, err)
			}
			sum, found = sum+v, true
		}
	}
	if err := lines.Err(); err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("metrics: no sample of %s{%s} at %s", name, strings.Join(labels, ","), metricsURL)
	}
	return sum, nil
}

// batchItem is one well-formed BatchCheck item (Connect JSON): a question
// the PDP answers ALLOW, so that only the batch's size can refuse it.
var batchItem = map[string]any{
	"principal": map[string]any{"subject": "reporting-job", "clientId": "reporting-job", "tenant": "acme", "scopes": []string{"invoice:read"}},
	"action":    "invoice:read",
	"resource":  map[string]any{"type": "invoice", "id": acmeInvoice, "tenant": "acme"},
}

// batchBody is a BatchCheck request of n items.
func batchBody(n int) []byte {
	body, err := json.Marshal(map[string]any{"items": slices.Repeat([]map[string]any{batchItem}, n)})
	if err != nil {
		panic(err) // maps of JSON values always marshal
	}
	return body
}

// hugeBatchItems is how many items make a body of 4 MiB or more.
func hugeBatchItems() int {
	one, err := json.Marshal(batchItem)
	if err != nil {
		panic(err)
	}
	return (4*pdpMaxBodySize)/(len(one)+1) + 1
}

// pdpPost posts a Connect JSON body to a procedure of the PDP.
func (t *Target) pdpPost(ctx context.Context, procedure string, body []byte) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.PDPURL+procedure, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", procedure, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", procedure, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// meanwhileServed checks that the genuine request a slow client's
// scenario sent while its connection was open was served.
func meanwhileServed(name string) *Verify {
	return &Verify{Name: "a genuine ListInvoices (reporting-job) sent while the slow connection was open got 200",
		Check: func(_ context.Context, t *Target, _ *Response) error {
			status, err := observation[int](t, name)
			switch {
			case err != nil:
				return err
			case status == 0:
				return errors.New("the genuine ListInvoices got no answer while the slow client was connected")
			case status != http.StatusOK:
				return fmt.Errorf("the genuine ListInvoices got %d", status)
			}
			return nil
		}}
}

// slowClient opens a connection of its own to the gateway, sends head at
// once and then trickle one byte every slowEvery, and meanwhile sends a
// genuine ListInvoices (its status kept for meanwhileServed). It waits for
// the server to close the connection, or hangs up itself after stop, and
// returns what the server answered before closing (Status 0: nothing).
// sent is the bearer token in head, if any: the answer must not echo it.
func (t *Target) slowClient(ctx context.Context, name string, head, trickle []byte, stop time.Duration, sent string) (*Response, error) {
	genuine, err := t.reportingJob(ctx)
	if err != nil {
		return nil, err
	}
	gw, err := url.Parse(t.GatewayURL)
	if err != nil {
		return nil, err
	}
	stopCtx, cancel := context.WithTimeout(ctx, stop)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(stopCtx, "tcp", gw.Host)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	// The server's answer, if any, and then its close: EOF or a reset,
	// either ends the read.
	closed := make(chan []byte, 1)
	go func() {
		raw, _ := io.ReadAll(io.LimitReader(conn, maxResponse))
		closed <- raw
	}()
	if _, err := conn.Write(head); err != nil {
		return nil, fmt.Errorf("slow client: %w", err)
	}

	var meanwhile sync.WaitGroup
	meanwhile.Go(func() {
		status := 0 // no answer before the slow client hung up
		if resp, err := t.do(stopCtx, call{procedure: listInvoices, bearer: genuine}); err == nil {
			status = resp.Status
		}
		t.observe(name, status)
	})
	defer meanwhile.Wait()

	tick := time.NewTicker(slowEvery)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case raw := <-closed:
			return answer(raw, sent)
		case <-stopCtx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Still open: hang up. The run took stop, over the bound.
			_ = conn.Close()
			<-closed
			return &Response{Sent: sent}, nil
		case <-tick.C:
			if i < len(trickle) {
				// A failed write means the server is gone: its close
				// arrives on closed.
				_, _ = conn.Write(trickle[i : i+1])
				i++
			}
		}
	}
}

// answer parses what a server wrote on a connection before closing it.
func answer(raw []byte, sent string) (*Response, error) {
	if len(raw) == 0 {
		return &Response{Sent: sent}, nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		return nil, fmt.Errorf("the server's last words are not an HTTP answer: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body) // what arrived before the close
	return &Response{Status: resp.StatusCode, Header: maps.Clone(resp.Header), Body: body, Sent: sent}, nil
}
