package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// maxReported is how many mismatches verify spells out.
const maxReported = 10

// verifyReport is what verify found.
type verifyReport struct {
	// Mix counts the expected answers by decision and reason.
	Mix map[string]int
	// Mismatches describes up to maxReported disagreements; Count is
	// their number.
	Mismatches []string
	Count      int
}

// verify asks the PDP and the OPA server at opaBase every question of wl
// once, at the same second, and compares every field of both answers with
// the expected one; it also checks that both serve the workload's bundle
// revision. A benchmark of wrong answers is worthless, so any difference
// is an error.
func verify(ctx context.Context, wl *workload, pdp authzv1connect.DecisionServiceClient, hc *http.Client, opaBase string) (verifyReport, error) {
	rep := verifyReport{Mix: map[string]int{}}
	revs, err := opaRevisions(ctx, hc, opaBase)
	if err != nil {
		return rep, err
	}
	if !slices.Contains(revs, wl.revision) {
		return rep, fmt.Errorf("opa serves bundle revisions %q, want %q", revs, wl.revision)
	}
	mismatch := func(format string, args ...any) {
		rep.Count++
		if len(rep.Mismatches) < maxReported {
			rep.Mismatches = append(rep.Mismatches, fmt.Sprintf(format, args...))
		}
	}
	w := &worker{}
	for i := range wl.items {
		it := &wl.items[i]
		rep.Mix[it.want.String()]++
		now := time.Now()
		resp, err := pdp.Check(ctx, connect.NewRequest(it.checkRequest(w.requestID(), now)))
		if err != nil {
			return rep, fmt.Errorf("pdp: input %d: %w", i, err)
		}
		if got := answerOfPDP(resp.Msg); !got.equal(it.want) {
			mismatch("input %d: pdp answered %+v, want %+v", i, got, it.want)
		}
		if v := resp.Msg.GetPolicyVersion(); v != wl.revision {
			mismatch("input %d: pdp decided with policy %q, want %q", i, v, wl.revision)
		}
		got, err := askOPA(ctx, hc, opaBase+OPAPath, it.appendOPABody(nil, now))
		if err != nil {
			return rep, fmt.Errorf("opa: input %d: %w", i, err)
		}
		if !got.equal(it.want) {
			mismatch("input %d: opa answered %+v, want %+v", i, got, it.want)
		}
	}
	if rep.Count > 0 {
		return rep, fmt.Errorf("%d answers differ from the expected ones", rep.Count)
	}
	return rep, nil
}

// opaRevisions returns the manifest revisions of the bundles an OPA
// server at base serves (its system bundles document).
func opaRevisions(ctx context.Context, hc *http.Client, base string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/data/system/bundles", nil) //nolint:gosec // G704: the server under test, named by the operator
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req) //nolint:gosec // G704: see above
	if err != nil {
		return nil, fmt.Errorf("opa bundles: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var doc struct {
		Result map[string]struct {
			Manifest struct {
				Revision string `json:"revision"`
			} `json:"manifest"`
		} `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("opa bundles: %w", err)
	}
	var revs []string
	for _, b := range doc.Result {
		revs = append(revs, b.Manifest.Revision)
	}
	return revs, nil
}

// askOPA posts one query body to OPA.
func askOPA(ctx context.Context, hc *http.Client, url string, body []byte) (answer, error) {
	status, raw, err := post(ctx, hc, url, body, "application/json", nil)
	if err != nil {
		return answer{}, err
	}
	if status != http.StatusOK {
		return answer{}, fmt.Errorf("opa answered %d %s", status, http.StatusText(status))
	}
	return answerOfOPA(raw)
}

// post sends body to url with the given content type and headers, and
// returns the status and the whole answer: the load generator's one way of
// asking either server.
func post(ctx context.Context, hc *http.Client, url string, body []byte, contentType string, header http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body)) //nolint:gosec // G704: the server under test, named by the operator
	if err != nil {
		return 0, nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req) //nolint:gosec // G704: see above
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}
