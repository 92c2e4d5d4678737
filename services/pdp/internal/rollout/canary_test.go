package rollout_test

import (
	"fmt"
	"hash/fnv"
	"testing"

	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// bucketOf recovers a principal's bucket from InCanary: the smallest share
// that contains it, minus one.
func bucketOf(tenant, subject string) int {
	for p := 1; p <= 100; p++ {
		if rollout.InCanary(tenant, subject, p) {
			return p - 1
		}
	}
	return -1
}

func TestInCanaryKnownVectors(t *testing.T) {
	t.Parallel()
	// Buckets computed once with hash/fnv's New64a over tenant, 0, subject;
	// they must never change, or principals would move between bundles on
	// upgrade.
	for _, tc := range []struct {
		tenant, subject string
		bucket          int
	}{
		{"acme", "alice", 43},
		{"acme", "bob", 92},
		{"globex", "carol", 35},
		{"acme", "sam", 24},
		{"", "", 55},
	} {
		t.Run(tc.tenant+"/"+tc.subject, func(t *testing.T) {
			t.Parallel()
			if got := bucketOf(tc.tenant, tc.subject); got != tc.bucket {
				t.Fatalf("bucket = %d, want %d", got, tc.bucket)
			}
			if rollout.InCanary(tc.tenant, tc.subject, tc.bucket) {
				t.Errorf("in the %d%% share, want out", tc.bucket)
			}
			if !rollout.InCanary(tc.tenant, tc.subject, tc.bucket+1) {
				t.Errorf("not in the %d%% share, want in", tc.bucket+1)
			}
		})
	}
}

func TestInCanaryIsFNV1a(t *testing.T) {
	t.Parallel()
	for i := range 500 {
		tenant, subject := fmt.Sprintf("tenant-%d", i%7), fmt.Sprintf("user-%d", i)
		h := fnv.New64a()
		_, _ = h.Write([]byte(tenant))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(subject))
		if want, got := int(h.Sum64()%100), bucketOf(tenant, subject); got != want {
			t.Fatalf("%s/%s: bucket %d, want %d", tenant, subject, got, want)
		}
	}
	// The separator keeps the fields apart.
	if bucketOf("ab", "c") == bucketOf("a", "bc") && bucketOf("ab", "cd") == bucketOf("a", "bcd") {
		t.Error("tenant and subject are not separated")
	}
}

func TestInCanaryDistributionAndMonotony(t *testing.T) {
	t.Parallel()
	const n = 10000
	in10, in50 := 0, 0
	for i := range n {
		tenant, subject := fmt.Sprintf("tenant-%d", i%13), fmt.Sprintf("subject-%d", i)
		a := rollout.InCanary(tenant, subject, 10)
		b := rollout.InCanary(tenant, subject, 50)
		if a && !b {
			t.Fatalf("%s/%s is in the 10%% share but not in the 50%% share", tenant, subject)
		}
		if a {
			in10++
		}
		if b {
			in50++
		}
	}
	// 3 standard deviations: sqrt(n p (1-p)) is 30 for 10%, 50 for 50%.
	if in10 < 910 || in10 > 1090 {
		t.Errorf("%d of %d principals in the 10%% share, want about 1000", in10, n)
	}
	if in50 < 4850 || in50 > 5150 {
		t.Errorf("%d of %d principals in the 50%% share, want about 5000", in50, n)
	}
}

func TestInCanaryBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		percent int
		want    bool
	}{{-5, false}, {0, false}, {100, true}, {250, true}} {
		if got := rollout.InCanary("acme", "alice", tc.percent); got != tc.want {
			t.Errorf("InCanary(%d%%) = %v, want %v", tc.percent, got, tc.want)
		}
	}
}
