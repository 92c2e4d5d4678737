package clientsecret_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
)

func TestHasher(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, err := clientsecret.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := h.Hash(ctx, []byte("reporting-job-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if string(hash) == "reporting-job-secret" || len(hash) != 32 {
		t.Fatalf("hash = %x, want a 32-byte MAC", hash)
	}

	tests := []struct {
		name   string
		secret string
		want   error
	}{
		{name: "right secret", secret: "reporting-job-secret", want: nil},
		{name: "wrong secret", secret: "reporting-job-secreT", want: clientsecret.ErrMismatch},
		{name: "prefix of secret", secret: "reporting-job", want: clientsecret.ErrMismatch},
		{name: "empty secret", secret: "", want: clientsecret.ErrEmpty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := h.Compare(ctx, hash, []byte(tc.secret)); !errors.Is(err, tc.want) {
				t.Fatalf("Compare = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHasherIsKeyed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	b, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := a.Hash(ctx, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Compare(ctx, hash, []byte("s3cret")); !errors.Is(err, clientsecret.ErrMismatch) {
		t.Fatalf("Compare under another key = %v, want ErrMismatch", err)
	}
}

func TestHashRejectsEmptySecret(t *testing.T) {
	t.Parallel()
	h, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Hash(t.Context(), nil); !errors.Is(err, clientsecret.ErrEmpty) {
		t.Fatalf("Hash(empty) = %v, want ErrEmpty", err)
	}
}

func TestKeySize(t *testing.T) {
	t.Parallel()
	if _, err := clientsecret.NewHasher(make([]byte, clientsecret.MinKeySize-1)); err == nil {
		t.Fatal("NewHasher accepted a 31-byte key")
	}
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := clientsecret.LoadKey(short); err == nil {
		t.Fatal("LoadKey accepted a 9-byte key")
	}
	if _, err := clientsecret.LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKey(missing) = %v, want ErrNotExist", err)
	}
	good := filepath.Join(dir, "good")
	want := clientsecret.GenerateKey()
	if err := os.WriteFile(good, want, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := clientsecret.LoadKey(good)
	if err != nil || string(got) != string(want) {
		t.Fatalf("LoadKey = %x, %v; want %x", got, err, want)
	}
}

func TestDeriveKey(t *testing.T) {
	t.Parallel()
	h, err := clientsecret.NewHasher(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	other, err := clientsecret.NewHasher(bytes.Repeat([]byte("j"), 32))
	if err != nil {
		t.Fatal(err)
	}
	a, b := h.DeriveKey("token-hmac"), h.DeriveKey("csrf")
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("derived keys: %x and %x, want two distinct 32-byte keys", a, b)
	}
	if !bytes.Equal(a, h.DeriveKey("token-hmac")) {
		t.Fatal("DeriveKey is not deterministic")
	}
	if bytes.Equal(a, other.DeriveKey("token-hmac")) {
		t.Fatal("keys derived from different secrets are equal")
	}
}
