package interaction

import (
	"net/netip"
	"testing"
	"time"
)

func TestSourceOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		remoteAddr, want, label string
	}{
		{remoteAddr: "192.0.2.1:1234", want: "192.0.2.1/32", label: "192.0.2.1"},
		{remoteAddr: "192.0.2.1", want: "192.0.2.1/32", label: "192.0.2.1"},
		{remoteAddr: "[::ffff:192.0.2.1]:1234", want: "192.0.2.1/32", label: "192.0.2.1"},
		{remoteAddr: "[2001:db8:1:2:3:4:5:6]:443", want: "2001:db8:1:2::/64", label: "2001:db8:1:2::/64"},
		{remoteAddr: "[fe80::1%eth0]:443", want: "fe80::/64", label: "fe80::/64"},
		{remoteAddr: "[::1]:443", want: "::/64", label: "::/64"},
		{remoteAddr: "@", want: "invalid Prefix", label: "unknown"},
		{remoteAddr: "", want: "invalid Prefix", label: "unknown"},
		{remoteAddr: "example.com:80", want: "invalid Prefix", label: "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.remoteAddr, func(t *testing.T) {
			t.Parallel()
			src := sourceOf(tc.remoteAddr)
			if src.String() != tc.want || sourceLabel(src) != tc.label {
				t.Fatalf("sourceOf(%q) = %s labelled %q, want %s labelled %q", tc.remoteAddr, src, sourceLabel(src), tc.want, tc.label)
			}
		})
	}
}

func TestLoginThrottleMemoryBound(t *testing.T) {
	t.Parallel()
	const maxSources = 100
	th, err := newLoginThrottle(1, time.Minute, maxSources)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	first := netip.MustParsePrefix("10.0.0.0/32")
	if wait, _ := th.take(first, now); wait != 0 {
		t.Fatalf("first attempt refused (wait %v)", wait)
	}
	// A flood of new sources: never more than maxSources kept.
	for i := range 10 * maxSources {
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)
		if wait, _ := th.take(src, now); wait != 0 {
			t.Fatalf("new source %s refused", src)
		}
		if n := th.tracked(); n > maxSources {
			t.Fatalf("%d sources tracked, bound is %d", n, maxSources)
		}
	}
	if n := th.tracked(); n != maxSources {
		t.Fatalf("%d sources tracked, want %d", n, maxSources)
	}
	// The first source was forgotten: it has its burst again.
	if wait, _ := th.take(first, now); wait != 0 {
		t.Fatalf("forgotten source refused (wait %v)", wait)
	}
}

func TestLoginThrottleRefundForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	th, err := newLoginThrottle(2, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	src := netip.MustParsePrefix("192.0.2.1/32")

	// A success leaves nothing behind.
	th.take(src, now)
	th.refund(src, now.Add(time.Second))
	if n := th.tracked(); n != 0 {
		t.Fatalf("%d sources tracked after a success, want 0", n)
	}
	// After a failure, a success gives back its own token only.
	th.take(src, now)
	th.take(src, now)
	th.refund(src, now)
	if n := th.tracked(); n != 1 {
		t.Fatalf("%d sources tracked after a failure, want 1", n)
	}
	if wait, _ := th.take(src, now); wait != 0 {
		t.Fatalf("second token refused (wait %v)", wait)
	}
	if wait, first := th.take(src, now); wait != time.Minute || !first {
		t.Fatalf("third attempt: wait %v first %v, want a minute, first refusal", wait, first)
	}
	if wait, first := th.take(src, now.Add(time.Second)); wait != time.Minute-time.Second || first {
		t.Fatalf("fourth attempt: wait %v first %v, want 59s, not the first refusal", wait, first)
	}
	// A refund for a source already forgotten is harmless.
	th.refund(netip.MustParsePrefix("192.0.2.2/32"), now)
}
