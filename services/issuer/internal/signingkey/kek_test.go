package signingkey_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
)

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	k := newKey(t)
	sealed, err := kek.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := k.Private().Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, scalar) {
		t.Fatal("sealed key contains the private scalar in clear")
	}
	opened, err := kek.Open(k.KeyID(), sealed)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if opened.KeyID() != k.KeyID() || !opened.Private().Equal(k.Private()) {
		t.Fatal("opened key differs from the sealed one")
	}
	again, err := kek.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one key are identical: the nonce is not random")
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	k, other := newKey(t), newKey(t)
	sealed, err := kek.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	otherSealed, err := kek.Seal(other)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		kek    *signingkey.KEK
		kid    string
		sealed []byte
	}{
		{name: "wrong KEK", kek: newKEK(t), kid: k.KeyID(), sealed: sealed},
		{name: "tampered version", kek: kek, kid: k.KeyID(), sealed: flip(0)},
		{name: "tampered nonce", kek: kek, kid: k.KeyID(), sealed: flip(5)},
		{name: "tampered ciphertext", kek: kek, kid: k.KeyID(), sealed: flip(40)},
		{name: "tampered tag", kek: kek, kid: k.KeyID(), sealed: flip(len(sealed) - 1)},
		{name: "truncated", kek: kek, kid: k.KeyID(), sealed: sealed[:20]},
		{name: "empty", kek: kek, kid: k.KeyID(), sealed: nil},
		// Another row's ciphertext moved under this kid: the kid is
		// authenticated data, so it does not open.
		{name: "ciphertext of another kid", kek: kek, kid: k.KeyID(), sealed: otherSealed},
		{name: "kid swapped", kek: kek, kid: other.KeyID(), sealed: sealed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.kek.Open(tc.kid, tc.sealed)
			if !errors.Is(err, signingkey.ErrUndecryptable) || got != nil {
				t.Fatalf("Open = %v, %v; want ErrUndecryptable", got, err)
			}
		})
	}
}

func TestLoadKEK(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{name: "32 bytes", content: bytes.Repeat([]byte{7}, 32)},
		{name: "31 bytes", content: bytes.Repeat([]byte{7}, 31), wantErr: "want exactly 32"},
		{name: "32 bytes and a newline", content: append(bytes.Repeat([]byte{7}, 32), '\n'), wantErr: "want exactly 32"},
		{name: "empty", content: nil, wantErr: "want exactly 32"},
		{name: "missing", wantErr: "read key-encryption key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if tc.name != "missing" {
				writeFile(t, path, tc.content)
			}
			_, err := signingkey.LoadKEK(path)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("LoadKEK: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("LoadKEK = %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
}
