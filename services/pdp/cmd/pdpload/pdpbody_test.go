package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// TestAppendPDPBodyIsTheCheckRequest: the pre-encoded body decodes to
// exactly the CheckRequest the generated client would send.
func TestAppendPDPBodyIsTheCheckRequest(t *testing.T) {
	t.Parallel()
	wl, err := newWorkload(t.Context(), testSource(), 1, 50, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 9, 30, 15, 123456789, time.UTC)
	var body []byte
	for i := range wl.items {
		it := &wl.items[i]
		if body, err = it.appendPDPBody(body[:0], "load-1-7", at); err != nil {
			t.Fatal(err)
		}
		var got authzv1.CheckRequest
		if err := proto.Unmarshal(body, &got); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		if want := it.checkRequest("load-1-7", at); !proto.Equal(&got, want) {
			t.Fatalf("item %d: the body decodes to\n%v\nwant\n%v", i, &got, want)
		}
	}
}
