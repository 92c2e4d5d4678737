package user_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

func TestHashPasswordRoundTrip(t *testing.T) {
	t.Parallel()
	hash, err := user.HashPassword("alice-demo-password", testParams())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(hash, "alice-demo-password") {
		t.Fatalf("hash = %q, want a PHC argon2id string", hash)
	}
	again, err := user.HashPassword("alice-demo-password", testParams())
	if err != nil {
		t.Fatal(err)
	}
	if again == hash {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}

	tests := []struct {
		name     string
		password string
		want     error
	}{
		{name: "right password", password: "alice-demo-password", want: nil},
		{name: "wrong password", password: "bob-demo-password", want: user.ErrPasswordMismatch},
		{name: "case differs", password: "Alice-demo-password", want: user.ErrPasswordMismatch},
		{name: "prefix", password: "alice-demo-passwor", want: user.ErrPasswordMismatch},
		{name: "empty", password: "", want: user.ErrPasswordMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := user.VerifyPassword(hash, tc.password); !errors.Is(err, tc.want) {
				t.Fatalf("VerifyPassword = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestVerifyKnownVector checks interoperability: a hash produced by the
// reference argon2 CLI (`echo -n password | argon2 somesalt -id -t 2 -m 16
// -p 1 -l 32 -e`), which any other PHC implementation can also read.
func TestVerifyKnownVector(t *testing.T) {
	t.Parallel()
	const ref = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	if err := user.VerifyPassword(ref, "password"); err != nil {
		t.Fatalf("VerifyPassword(reference vector) = %v", err)
	}
	if err := user.VerifyPassword(ref, "passwore"); !errors.Is(err, user.ErrPasswordMismatch) {
		t.Fatalf("VerifyPassword(wrong) = %v, want ErrPasswordMismatch", err)
	}
}

func TestVerifyRejectsMalformedHashes(t *testing.T) {
	t.Parallel()
	const salt, key = "c29tZXNhbHRzb21lc2FsdA", "CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	tests := []struct {
		name, hash string
		want       error
	}{
		{name: "empty", hash: "", want: user.ErrMalformedHash},
		{name: "clear text", hash: "alice-demo-password", want: user.ErrMalformedHash},
		{name: "missing key", hash: "$argon2id$v=19$m=64,t=1,p=1$" + salt, want: user.ErrMalformedHash},
		{name: "extra field", hash: "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$x", want: user.ErrMalformedHash},
		{name: "argon2i", hash: "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "bcrypt", hash: "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", want: user.ErrMalformedHash},
		{name: "version 16", hash: "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "parameters reordered", hash: "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "parameter missing", hash: "$argon2id$v=19$m=64,t=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "negative", hash: "$argon2id$v=19$m=64,t=-1,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "plus sign", hash: "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "leading zero", hash: "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "not a number", hash: "$argon2id$v=19$m=lots,t=1,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "overflow", hash: "$argon2id$v=19$m=99999999999,t=1,p=1$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "padded salt", hash: "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key, want: user.ErrMalformedHash},
		{name: "salt not base64", hash: "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + key, want: user.ErrMalformedHash},
		{name: "zero time", hash: "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "zero threads", hash: "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "threads beyond 8 bits", hash: "$argon2id$v=19$m=4096,t=1,p=300$" + salt + "$" + key, want: user.ErrMalformedHash},
		{name: "too many threads", hash: "$argon2id$v=19$m=4096,t=1,p=17$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "memory below 8 KiB per lane", hash: "$argon2id$v=19$m=8,t=1,p=2$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "memory above 1 GiB", hash: "$argon2id$v=19$m=2097152,t=1,p=1$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "too many passes", hash: "$argon2id$v=19$m=64,t=100,p=1$" + salt + "$" + key, want: user.ErrUnsupportedHash},
		{name: "short salt", hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + key, want: user.ErrUnsupportedHash},
		{name: "short key", hash: "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$c2hvcnQ", want: user.ErrUnsupportedHash},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := user.VerifyPassword(tc.hash, "password"); !errors.Is(err, tc.want) {
				t.Fatalf("VerifyPassword(%q) = %v, want %v", tc.hash, err, tc.want)
			}
			if !user.NeedsRehash(tc.hash, testParams()) {
				t.Fatal("NeedsRehash = false for an unusable hash")
			}
		})
	}
}

func TestParseParams(t *testing.T) {
	t.Parallel()
	want := user.Params{Memory: 128, Time: 3, Threads: 2, SaltLen: 24, KeyLen: 48}
	hash, err := user.HashPassword("a-long-enough-password", want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := user.ParseParams(hash)
	if err != nil || got != want {
		t.Fatalf("ParseParams = %+v, %v; want %+v", got, err, want)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=128,t=3,p=2$") {
		t.Fatalf("hash = %q", hash)
	}
}

func TestNeedsRehash(t *testing.T) {
	t.Parallel()
	hash, err := user.HashPassword("a-long-enough-password", testParams())
	if err != nil {
		t.Fatal(err)
	}
	raised := testParams()
	raised.Time = 2
	longerSalt := testParams()
	longerSalt.SaltLen = 32
	tests := []struct {
		name   string
		params user.Params
		want   bool
	}{
		{name: "same parameters", params: testParams(), want: false},
		{name: "more passes", params: raised, want: true},
		{name: "longer salt", params: longerSalt, want: true},
		{name: "defaults", params: user.DefaultParams(), want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := user.NeedsRehash(hash, tc.params); got != tc.want {
				t.Fatalf("NeedsRehash = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHashPasswordRejectsBadParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params user.Params
	}{
		{name: "zero", params: user.Params{}},
		{name: "short salt", params: user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 4, KeyLen: 32}},
		{name: "short key", params: user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 8}},
		{name: "too much memory", params: user.Params{Memory: 1<<20 + 1, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := user.HashPassword("a-long-enough-password", tc.params); !errors.Is(err, user.ErrUnsupportedHash) {
				t.Fatalf("HashPassword = %v, want ErrUnsupportedHash", err)
			}
		})
	}
	if err := user.DefaultParams().Validate(); err != nil {
		t.Fatalf("DefaultParams invalid: %v", err)
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		password string
		wantErr  bool
	}{
		{name: "11 bytes", password: strings.Repeat("x", 11), wantErr: true},
		{name: "12 bytes", password: strings.Repeat("x", 12)},
		{name: "demo password", password: "bob-demo-password"},
		{name: "256 bytes", password: strings.Repeat("x", 256)},
		{name: "257 bytes", password: strings.Repeat("x", 257), wantErr: true},
		{name: "empty", password: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := user.CheckPasswordPolicy(tc.password)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, user.ErrPasswordPolicy)) {
				t.Fatalf("CheckPasswordPolicy = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

// BenchmarkHashPassword measures DefaultParams on this machine: the cost a
// login pays. docs/users.md records the result; keep it near 50-100 ms.
func BenchmarkHashPassword(b *testing.B) {
	p := user.DefaultParams()
	for b.Loop() {
		if _, err := user.HashPassword("alice-demo-password", p); err != nil {
			b.Fatal(err)
		}
	}
}
