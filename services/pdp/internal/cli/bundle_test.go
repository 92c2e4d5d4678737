package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

// policyDir writes a minimal policy directory with revision.
func policyDir(t *testing.T, revision string) string {
	t.Helper()
	return bundletest.WriteDir(t, map[string]string{
		".manifest":           `{"revision": "` + revision + `", "roots": ["gatehouse"]}`,
		"gatehouse/main.rego": "package gatehouse.main\n\ndefault decision := {\"decision\": \"allow\", \"reason_code\": \"allowed\"}\n",
	})
}

// keyFile writes the shared test signing key and returns its path.
func keyFile(t *testing.T) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "signing.key.pem")
	if err := os.WriteFile(name, bundletest.Shared(t).PrivateKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestPolicyBuild(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir, key := policyDir(t, "r7"), keyFile(t)
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	res := run(t, func(string) string { return "" }, "policy", "build", "-dir", dir, "-signing-key", key, "-key-id", kp.KeyID, "-o", out)
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Open(data, kp.Verifier)
	if err != nil {
		t.Fatalf("the built bundle does not verify: %v", err)
	}
	if b.Revision != "r7" || b.SigningKeyID != kp.KeyID {
		t.Errorf("bundle revision %q key %q, want r7 signed by %s", b.Revision, b.SigningKeyID, kp.KeyID)
	}
	wantOut := fmt.Sprintf("wrote %s: %d bytes, sha256 %s, key %s\n", out, len(data), sha(data), kp.KeyID)
	if res.stdout != wantOut {
		t.Errorf("stdout = %q, want %q", res.stdout, wantOut)
	}
	if !strings.Contains(res.stderr, "building a bundle from "+dir) {
		t.Errorf("stderr = %q, want a progress line", res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, "PRIVATE KEY") {
		t.Error("output contains the private key")
	}
	info, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o644 {
		t.Errorf("bundle mode %o, want 644", perm)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
		t.Errorf("output directory holds %d files, want only the bundle (no temporary file left)", len(entries))
	}
}

func TestPolicyBuildErrors(t *testing.T) {
	t.Parallel()
	notAKey := filepath.Join(t.TempDir(), "not-a-key.pem")
	if err := os.WriteFile(notAKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dir, key   string
		wantStderr string
	}{
		{"key file missing", policyDir(t, "r1"), filepath.Join(t.TempDir(), "absent.pem"), "gatehouse: read -signing-key: open "},
		{"not a key", policyDir(t, "r1"), notAKey, "gatehouse: signing key " + notAKey + ": "},
		{"policy dir missing", filepath.Join(t.TempDir(), "absent"), keyFile(t), "gatehouse: build bundle from "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "bundle.tar.gz")
			res := run(t, func(string) string { return "" }, "policy", "build", "-dir", tc.dir, "-signing-key", tc.key, "-o", out)
			if res.code != cli.ExitFailure {
				t.Errorf("exit %d, want %d", res.code, cli.ExitFailure)
			}
			if !strings.Contains(res.stderr, tc.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", res.stderr, tc.wantStderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed build left %s behind (%v)", out, err)
			}
		})
	}
}

func TestPolicySign(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir := policyDir(t, "r8")
	res := run(t, func(string) string { return "" }, "policy", "sign", "-dir", dir, "-signing-key", keyFile(t), "-key-id", kp.KeyID)
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	sigFile := filepath.Join(dir, ".signatures.json")
	if want := "wrote " + sigFile + ", key " + kp.KeyID + "\n"; res.stdout != want {
		t.Errorf("stdout = %q, want %q", res.stdout, want)
	}
	b, err := bundle.LoadDir(dir, kp.Verifier)
	if err != nil {
		t.Fatalf("the signed directory does not verify: %v", err)
	}
	if b.Revision != "r8" {
		t.Errorf("revision %q, want r8", b.Revision)
	}
}

func TestPolicyPush(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	tarball := bundletest.Tarball(t, policyDir(t, "r2"))
	tarballFile := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(tarballFile, tarball, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("from a directory", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		res := run(t, h.env(nil), "policy", "push", "-dir", policyDir(t, "r2"), "-signing-key", keyFile(t), "-key-id", kp.KeyID)
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
		sent := request[*authzv1.PushBundleRequest](t, h.pdp, "PushBundle").GetBundle()
		if _, err := bundle.Open(sent, kp.Verifier); err != nil {
			t.Errorf("the pushed bundle does not verify: %v", err)
		}
		want := fmt.Sprintf(`revision     r2
digest       %s
size         %d
signing key  gatehouse-demo
uploaded by  policy-admin
uploaded at  2026-01-02T03:04:05Z
created      yes
`, sha(sent), len(sent))
		if res.stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want)
		}
		if !strings.Contains(res.stderr, fmt.Sprintf("pushing %d bytes (sha256 %s) to %s", len(sent), sha(sent), h.url)) {
			t.Errorf("stderr = %q, want a progress line", res.stderr)
		}
	})

	t.Run("a tarball as it is", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.pdp.created = false
		res := run(t, h.env(nil), "policy", "push", "-bundle", tarballFile)
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
		if sent := request[*authzv1.PushBundleRequest](t, h.pdp, "PushBundle").GetBundle(); !bytes.Equal(sent, tarball) {
			t.Error("the pushed bytes differ from the file")
		}
		if !strings.Contains(res.stdout, "created      no (already stored with the same content)\n") {
			t.Errorf("stdout:\n%s\nwant created no", res.stdout)
		}
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.pdp.errs["PushBundle"] = enforce.Error(context.Background(), connect.CodeInvalidArgument, reason.BundleSignatureInvalid,
			"the signature does not verify with key gatehouse-demo")
		res := run(t, h.env(nil), "policy", "push", "-bundle", tarballFile)
		want := "gatehouse: push refused: invalid_argument: bundle_signature_invalid: the signature does not verify with key gatehouse-demo\n"
		if res.code != cli.ExitFailure || !strings.HasSuffix(res.stderr, want) {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 1 ending with %q", res.code, res.stderr, want)
		}
	})

	t.Run("too large to send", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		big := filepath.Join(t.TempDir(), "big.tar.gz")
		if err := os.WriteFile(big, make([]byte, bundle.MaxTarballBytes+1), 0o600); err != nil {
			t.Fatal(err)
		}
		res := run(t, h.env(nil), "policy", "push", "-bundle", big)
		if res.code != cli.ExitFailure || !strings.Contains(res.stderr, "is larger than the 4194304 bytes the PDP accepts") {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 1 for the size", res.code, res.stderr)
		}
		if len(h.issuer.received())+len(h.pdp.procedures()) > 0 {
			t.Error("an oversized bundle reached the network")
		}
	})
}
