package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// Modes of a load run.
const (
	// ModePDPCheck: one Check per operation.
	ModePDPCheck = "pdp-check"
	// ModePDPBatch: one BatchCheck of BatchSize items per operation.
	ModePDPBatch = "pdp-batch"
	// ModePDPSingles: BatchSize sequential Checks of the same items a
	// BatchCheck would carry, per operation.
	ModePDPSingles = "pdp-singles"
	// ModeOPA: one POST /v1/data/gatehouse/main/decision per operation.
	ModeOPA = "opa"
)

// BatchSize is the number of items of a pdp-batch or pdp-singles operation:
// the largest BatchCheck the PDP accepts.
const BatchSize = 100

// OPAPath is the stock OPA server's Data API path of the decision rule.
const OPAPath = "/v1/data/gatehouse/main/decision"

// operation asks the target one thing (a Check, a BatchCheck, a hundred
// Checks, an OPA query) as worker w and returns the decisions it got. A
// decision other than the expected one is errWrongAnswer, or
// errIndeterminate when the server failed closed.
type operation func(ctx context.Context, w *worker) (int, error)

// worker is one closed-loop client: it walks the workload from its own
// offset and stamps each request with its own id.
type worker struct {
	id   int
	next int
	seq  uint64
	buf  []byte // request id scratch
	body []byte // OPA request body scratch
}

// take returns the index of the next of n consecutive items (wrapping
// around a workload of size items) and advances past them.
func (w *worker) take(size, n int) int {
	start := w.next
	w.next = (w.next + n) % size
	return start
}

// requestID returns a fresh request id, as the gateway stamps one per
// request.
func (w *worker) requestID() string {
	w.seq++
	w.buf = append(w.buf[:0], "load-"...)
	w.buf = strconv.AppendInt(w.buf, int64(w.id), 10)
	w.buf = append(w.buf, '-')
	w.buf = strconv.AppendUint(w.buf, w.seq, 10)
	return string(w.buf)
}

func contextAt(id string, t time.Time, sourceIP string) *authzv1.RequestContext {
	return &authzv1.RequestContext{RequestId: id, Time: timestamppb.New(t), SourceIp: sourceIP}
}

// newTransport returns a keep-alive HTTP/1.1 transport with an idle
// connection for each of workers or, with h2c, an HTTP/2 transport without
// TLS (one connection, a stream per request), as the gateway and the
// invoice service call the PDP.
func newTransport(workers int, h2c bool) *http.Transport {
	t := &http.Transport{
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     time.Minute,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	}
	return t
}

// newOperation returns the operation of mode against the server at
// baseURL. acceptGzip keeps the generated client's default of asking for
// gzipped responses (the gateway's and the services' clients do);
// without it the PDP answers uncompressed.
func newOperation(mode, baseURL string, hc *http.Client, items []item, acceptGzip bool) (operation, error) {
	var opts []connect.ClientOption
	if !acceptGzip {
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	client := authzv1connect.NewDecisionServiceClient(hc, baseURL, opts...)
	switch mode {
	case ModePDPCheck:
		return pdpCheck(hc, baseURL+authzv1connect.DecisionServiceCheckProcedure, items, acceptGzip), nil
	case ModePDPBatch:
		return pdpBatch(client, items), nil
	case ModePDPSingles:
		return pdpSingles(client, items), nil
	case ModeOPA:
		return opaQuery(hc, baseURL+OPAPath, items), nil
	default:
		return nil, fmt.Errorf("unknown mode %q (want %s, %s, %s or %s)", mode, ModePDPCheck, ModePDPBatch, ModePDPSingles, ModeOPA)
	}
}

// pdpCheck sends Checks as the Connect protocol's unary POST with a
// protobuf body, through net/http like opaQuery: each request's body is
// the item's pre-encoded fields plus its context, and the answer is read
// whole and decoded. The generated Connect client would cost the load
// generator about twice as much per request as opaQuery costs it; on a
// two-core machine the load generator's core is the bottleneck at the
// PDP's rate, and its queueing would count as the PDP's latency.
func pdpCheck(hc *http.Client, url string, items []item, acceptGzip bool) operation {
	return func(ctx context.Context, w *worker) (int, error) {
		it := &items[w.take(len(items), 1)]
		var err error
		if w.body, err = it.appendPDPBody(w.body[:0], w.requestID(), time.Now()); err != nil {
			return 0, err
		}
		got, err := askPDP(ctx, hc, url, w.body, acceptGzip)
		if err != nil {
			return 0, err
		}
		return 1, expect(it.want, got)
	}
}

// askPDP sends one Connect unary Check with a protobuf body and returns
// the answer; an answer other than 200 is an error carrying the Connect
// error code.
func askPDP(ctx context.Context, hc *http.Client, url string, body []byte, acceptGzip bool) (answer, error) {
	header := http.Header{"Connect-Protocol-Version": {"1"}}
	if !acceptGzip {
		// Set by hand, the transport neither asks for gzip nor inflates.
		header.Set("Accept-Encoding", "identity")
	}
	status, raw, err := post(ctx, hc, url, body, "application/proto", header)
	if err != nil {
		return answer{}, err
	}
	if status != http.StatusOK {
		var ce struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(raw, &ce)
		return answer{}, fmt.Errorf("pdp answered %d (%s)", status, ce.Code)
	}
	var msg authzv1.CheckResponse
	if err := proto.Unmarshal(raw, &msg); err != nil {
		return answer{}, fmt.Errorf("pdp answer: %w", err)
	}
	return answerOfPDP(&msg), nil
}

func pdpBatch(client authzv1connect.DecisionServiceClient, items []item) operation {
	return func(ctx context.Context, w *worker) (int, error) {
		start := w.take(len(items), BatchSize)
		// One caller request (a page of invoices) behind the batch: one
		// request id and time for every item.
		id, now := w.requestID(), time.Now()
		req := &authzv1.BatchCheckRequest{Items: make([]*authzv1.CheckRequest, BatchSize)}
		for i := range req.Items {
			req.Items[i] = items[(start+i)%len(items)].checkRequest(id, now)
		}
		resp, err := client.BatchCheck(ctx, connect.NewRequest(req))
		if err != nil {
			return 0, err
		}
		results := resp.Msg.GetResults()
		if len(results) != BatchSize {
			return 0, fmt.Errorf("%w: %d results for %d items", errWrongAnswer, len(results), BatchSize)
		}
		for i, r := range results {
			if err := expect(items[(start+i)%len(items)].want, answerOfPDP(r)); err != nil {
				return i, err
			}
		}
		return len(results), nil
	}
}

func pdpSingles(client authzv1connect.DecisionServiceClient, items []item) operation {
	return func(ctx context.Context, w *worker) (int, error) {
		start := w.take(len(items), BatchSize)
		// The same caller request as pdp-batch, asked item by item.
		id, now := w.requestID(), time.Now()
		for i := range BatchSize {
			it := &items[(start+i)%len(items)]
			resp, err := client.Check(ctx, connect.NewRequest(it.checkRequest(id, now)))
			if err != nil {
				return i, err
			}
			if err := expect(it.want, answerOfPDP(resp.Msg)); err != nil {
				return i, err
			}
		}
		return BatchSize, nil
	}
}

func opaQuery(hc *http.Client, url string, items []item) operation {
	return func(ctx context.Context, w *worker) (int, error) {
		it := &items[w.take(len(items), 1)]
		w.body = it.appendOPABody(w.body[:0], time.Now())
		got, err := askOPA(ctx, hc, url, w.body)
		if err != nil {
			return 0, err
		}
		return 1, expect(it.want, got)
	}
}

// expect compares an answer with the expected one.
func expect(want, got answer) error {
	switch {
	case want.equal(got):
		return nil
	case got.Decision == authzv1.Decision_DECISION_INDETERMINATE && want.Decision != authzv1.Decision_DECISION_INDETERMINATE:
		return fmt.Errorf("%w: got %s, want %s", errIndeterminate, got, want)
	default:
		return fmt.Errorf("%w: got %s, want %s", errWrongAnswer, got, want)
	}
}
