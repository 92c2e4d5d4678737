package bundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
)

// sourceMarker appears in policy source only: no error may show it.
const sourceMarker = "source_marker_7f3a"

// policyFiles is a small valid bundle, with files that are not part of
// it (tests, testdata, dot-files).
func policyFiles() map[string]string {
	return map[string]string{
		".manifest":                `{"revision": "rev.1", "roots": ["gatehouse"]}`,
		"gatehouse/main.rego":      "package gatehouse.main\n\ndefault decision := {\"decision\": \"allow\", \"reason_code\": \"allowed\"}\n\n" + sourceMarker + " := data.gatehouse.limits.max\n",
		"gatehouse/other.rego":     "package gatehouse.other\n\nx := 1\n",
		"gatehouse/data.json":      `{"limits": {"max": 3}}`,
		"gatehouse/main_test.rego": "package gatehouse.main_test\n\ntest_x if true\n",
		"testdata/fixture.json":    `{"not": "signed"}`,
		".hidden":                  "not signed",
		".git/config":              "not signed",
	}
}

// signedNames are the files Build and SignDir sign for policyFiles.
var signedNames = []string{".manifest", "gatehouse/data.json", "gatehouse/main.rego", "gatehouse/other.rego"}

// entry is one tarball member, in order.
type entry struct {
	name string
	data []byte
}

func untarEntries(t *testing.T, tarball []byte) []entry {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{hdr.Name, data})
	}
}

func tarEntries(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// token returns the one JWT of a .signatures.json.
func token(t *testing.T, sigFile []byte) string {
	t.Helper()
	var sc struct{ Signatures []string }
	if err := json.Unmarshal(sigFile, &sc); err != nil || len(sc.Signatures) != 1 {
		t.Fatalf("signatures file %s: %v", sigFile, err)
	}
	return sc.Signatures[0]
}

func signaturesFile(tok string) []byte {
	out, _ := json.Marshal(map[string][]string{"signatures": {tok}})
	return out
}

// withSignatures replaces the tarball's .signatures.json.
func withSignatures(t *testing.T, tarball, sigFile []byte) []byte {
	t.Helper()
	entries := untarEntries(t, tarball)
	for i := range entries {
		if entries[i].name == "/.signatures.json" {
			entries[i].data = sigFile
		}
	}
	return tarEntries(t, entries)
}

// resign re-signs the payload of tarball's token with header and sign.
func resign(t *testing.T, tarball []byte, header map[string]string, sign func(signingInput []byte) []byte) []byte {
	t.Helper()
	var sig []byte
	for _, e := range untarEntries(t, tarball) {
		if e.name == "/.signatures.json" {
			sig = e.data
		}
	}
	parts := strings.Split(token(t, sig), ".")
	hdr, _ := json.Marshal(header)
	input := base64.RawURLEncoding.EncodeToString(hdr) + "." + parts[1]
	tok := input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
	return withSignatures(t, tarball, signaturesFile(tok))
}

func TestBuildOpenRoundTrip(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir := bundletest.WriteDir(t, policyFiles())
	tarball, err := bundle.Build(dir, kp.Signer)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	b, err := bundle.Open(tarball, kp.Verifier)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	sum := sha256.Sum256(tarball)
	if b.Revision != "rev.1" || b.SigningKeyID != bundletest.KeyID || b.Digest != hex.EncodeToString(sum[:]) || !bytes.Equal(b.Tarball, tarball) {
		t.Errorf("Open = revision %q, key %q, digest %q; want rev.1, %s, %x and the tarball", b.Revision, b.SigningKeyID, b.Digest, bundletest.KeyID, sum)
	}
	p := b.Parsed()
	if p == nil || len(p.Modules) != 2 {
		t.Fatalf("Parsed() = %v, want the two policy modules", p)
	}
	if got, err := json.Marshal(p.Data); err != nil || string(got) != `{"gatehouse":{"limits":{"max":3}}}` {
		t.Errorf("Parsed().Data = %s, want the data.json under gatehouse", got)
	}

	// The tarball holds the signed files and the signatures only, and the
	// signature lists exactly those files.
	var names []string
	var sigFile []byte
	for _, e := range untarEntries(t, tarball) {
		if e.name == "/.signatures.json" {
			sigFile = e.data
			continue
		}
		names = append(names, strings.TrimPrefix(e.name, "/"))
	}
	if !slices.Equal(names, signedNames) {
		t.Errorf("tarball files = %q, want %q", names, signedNames)
	}
	jws, err := jose.ParseSignedCompact(token(t, sigFile), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if kid := jws.Signatures[0].Header.KeyID; kid != bundletest.KeyID {
		t.Errorf("JWT kid = %q, want %q", kid, bundletest.KeyID)
	}
	var payload struct {
		Files []struct{ Name, Algorithm string }
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &payload); err != nil {
		t.Fatal(err)
	}
	var signed []string
	for _, f := range payload.Files {
		signed = append(signed, f.Name)
		if f.Algorithm != "SHA-256" {
			t.Errorf("%s hashed with %s, want SHA-256", f.Name, f.Algorithm)
		}
	}
	if !slices.Equal(signed, signedNames) {
		t.Errorf("signed files = %q, want %q", signed, signedNames)
	}
}

func TestBuildDeterministic(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir := bundletest.WriteDir(t, policyFiles())
	first, err := bundle.Build(dir, kp.Signer)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	// A stale signatures file in the directory is ignored.
	if err := os.WriteFile(filepath.Join(dir, ".signatures.json"), []byte(`{"signatures": ["stale"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := bundle.Build(dir, kp.Signer)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if !bytes.Equal(first, second) {
		t.Error("Build gave different bytes for the same directory")
	}
	// The same key in PKCS #1 signs identically.
	block, _ := pem.Decode(kp.PrivateKeyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))})
	s, err := bundle.NewSigner(bundletest.KeyID, pkcs1)
	if err != nil {
		t.Fatalf("NewSigner(PKCS #1): %v", err)
	}
	third, err := bundle.Build(dir, s)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if !bytes.Equal(first, third) {
		t.Error("Build with the PKCS #1 form of the key gave different bytes")
	}
}

func TestSignDirLoadDir(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir := bundletest.WriteDir(t, policyFiles())
	if err := bundle.SignDir(dir, kp.Signer); err != nil {
		t.Fatalf("SignDir: %v", err)
	}
	first, err := os.ReadFile(filepath.Join(dir, ".signatures.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.SignDir(dir, kp.Signer); err != nil {
		t.Fatalf("SignDir again: %v", err)
	}
	second, err := os.ReadFile(filepath.Join(dir, ".signatures.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("SignDir is not deterministic:\n%s\n%s", first, second)
	}

	b, err := bundle.LoadDir(dir, kp.Verifier)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if b.Revision != "rev.1" || b.SigningKeyID != bundletest.KeyID || b.Parsed() == nil {
		t.Errorf("LoadDir = revision %q, key %q; want rev.1, %s, parsed", b.Revision, b.SigningKeyID, bundletest.KeyID)
	}
	// The stored form is what Build makes, and another replica opens it.
	built, err := bundle.Build(dir, kp.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Tarball, built) {
		t.Error("LoadDir's Tarball differs from Build's for the same signed directory")
	}
	reopened, err := bundle.Open(b.Tarball, kp.Verifier)
	if err != nil {
		t.Fatalf("Open(LoadDir().Tarball): %v", err)
	}
	if reopened.Digest != b.Digest || reopened.Revision != b.Revision {
		t.Errorf("reopened digest %s revision %s, want %s %s", reopened.Digest, reopened.Revision, b.Digest, b.Revision)
	}
}

func TestLoadDirRefuses(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	other := bundletest.NewKeyPair(t, bundletest.KeyID)
	tests := []struct {
		name   string
		signer *bundle.Signer // nil: leave unsigned
		change func(t *testing.T, dir string)
		want   error
	}{
		{"unsigned", nil, nil, bundle.ErrUnsigned},
		{"another key", other.Signer, nil, bundle.ErrSignature},
		{"tampered file", kp.Signer, func(t *testing.T, dir string) {
			write(t, dir, "gatehouse/other.rego", "package gatehouse.other\n\nx := 2\n")
		}, bundle.ErrSignature},
		{"tampered data", kp.Signer, func(t *testing.T, dir string) {
			write(t, dir, "gatehouse/data.json", `{"limits": {"max": 4}}`)
		}, bundle.ErrSignature},
		{"added file", kp.Signer, func(t *testing.T, dir string) {
			write(t, dir, "gatehouse/extra.rego", "package gatehouse.extra\n")
		}, bundle.ErrSignature},
		{"removed file", kp.Signer, func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "gatehouse", "other.rego")); err != nil {
				t.Fatal(err)
			}
		}, bundle.ErrSignature},
		{"symlink", kp.Signer, func(t *testing.T, dir string) {
			if err := os.Symlink("other.rego", filepath.Join(dir, "gatehouse", "link.rego")); err != nil {
				t.Fatal(err)
			}
		}, bundle.ErrInvalid},
		{"garbage signatures file", kp.Signer, func(t *testing.T, dir string) {
			write(t, dir, ".signatures.json", "not json")
		}, bundle.ErrSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := bundletest.WriteDir(t, policyFiles())
			if tc.signer != nil {
				if err := bundle.SignDir(dir, tc.signer); err != nil {
					t.Fatalf("SignDir: %v", err)
				}
			}
			if tc.change != nil {
				tc.change(t, dir)
			}
			b, err := bundle.LoadDir(dir, kp.Verifier)
			if !errors.Is(err, tc.want) {
				t.Fatalf("LoadDir = %+v, %v; want %v", b, err, tc.want)
			}
			t.Logf("LoadDir error: %v", err)
		})
	}
}

func TestLoadDirIgnoresUnsignedExtras(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	dir := bundletest.WriteDir(t, policyFiles())
	if err := bundle.SignDir(dir, kp.Signer); err != nil {
		t.Fatalf("SignDir: %v", err)
	}
	// Files that are not part of a bundle may change after signing.
	write(t, dir, "gatehouse/new_test.rego", "package gatehouse.new_test\n")
	write(t, dir, "gatehouse/testdata/x.rego", "package x\n")
	write(t, dir, ".editorconfig", "root = true\n")
	write(t, dir, "gatehouse/.notes", "todo\n")
	if _, err := bundle.LoadDir(dir, kp.Verifier); err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
}

func TestDirectoryErrors(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	missing := filepath.Join(t.TempDir(), "missing")
	notDir := filepath.Join(bundletest.WriteDir(t, map[string]string{"f": "x"}), "f")
	for _, dir := range []string{missing, notDir} {
		if _, err := bundle.Build(dir, kp.Signer); !errors.Is(err, bundle.ErrInvalid) {
			t.Errorf("Build(%s) error = %v, want ErrInvalid", dir, err)
		}
		if err := bundle.SignDir(dir, kp.Signer); !errors.Is(err, bundle.ErrInvalid) {
			t.Errorf("SignDir(%s) error = %v, want ErrInvalid", dir, err)
		}
		if _, err := bundle.LoadDir(dir, kp.Verifier); !errors.Is(err, bundle.ErrInvalid) {
			t.Errorf("LoadDir(%s) error = %v, want ErrInvalid", dir, err)
		}
	}
	if _, err := bundle.Build(missing, kp.Signer); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Build(missing) error = %v, want it to wrap fs.ErrNotExist", err)
	}
	// Structured documents are hashed by value, so they must parse.
	bad := bundletest.WriteDir(t, map[string]string{".manifest": `{"revision": `})
	if _, err := bundle.Build(bad, kp.Signer); !errors.Is(err, bundle.ErrInvalid) {
		t.Errorf("Build(bad manifest) error = %v, want ErrInvalid", err)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// bomb is a tarball of a few KiB whose content expands past the limit.
func bomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	const size = 17 << 20
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "/data.json", Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	other := bundletest.NewKeyPair(t, bundletest.KeyID)
	otherKid, err := bundle.NewSigner("someone-else", kp.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	privKey := func() *rsa.PrivateKey {
		block, _ := pem.Decode(kp.PrivateKeyPEM)
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return key.(*rsa.PrivateKey)
	}()

	build := func(signer *bundle.Signer, files map[string]string) []byte {
		t.Helper()
		tarball, err := bundle.Build(bundletest.WriteDir(t, files), signer)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		return tarball
	}
	good := build(kp.Signer, policyFiles())
	withFiles := func(change func(map[string]string)) map[string]string {
		files := policyFiles()
		change(files)
		return files
	}
	// edit rewrites good's entries.
	edit := func(change func([]entry) []entry) []byte {
		return tarEntries(t, change(untarEntries(t, good)))
	}
	hs256 := func(input []byte) []byte {
		// The classic confusion: the public key as an HMAC secret.
		mac := hmac.New(sha256.New, kp.PublicKeyPEM)
		mac.Write(input)
		return mac.Sum(nil)
	}
	rs := func(alg jose.SignatureAlgorithm) []byte {
		t.Helper()
		var payload []byte
		for _, e := range untarEntries(t, good) {
			if e.name == "/.signatures.json" {
				jws, err := jose.ParseSignedCompact(token(t, e.data), []jose.SignatureAlgorithm{jose.RS256})
				if err != nil {
					t.Fatal(err)
				}
				payload = jws.UnsafePayloadWithoutVerification()
			}
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: privKey},
			(&jose.SignerOptions{}).WithHeader("kid", bundletest.KeyID).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jws.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return withSignatures(t, good, signaturesFile(tok))
	}
	kid := map[string]string{"kid": bundletest.KeyID, "typ": "JWT"}
	header := func(alg string) map[string]string {
		h := map[string]string{"alg": alg}
		for k, v := range kid {
			h[k] = v
		}
		return h
	}

	tests := []struct {
		name    string
		tarball []byte
		want    error
	}{
		{"unsigned", edit(func(es []entry) []entry {
			return slices.DeleteFunc(es, func(e entry) bool { return e.name == "/.signatures.json" })
		}), bundle.ErrUnsigned},
		{"another key", build(other.Signer, policyFiles()), bundle.ErrSignature},
		{"another key id", build(otherKid, policyFiles()), bundle.ErrSignature},
		{"tampered file", edit(func(es []entry) []entry {
			for i := range es {
				if es[i].name == "/gatehouse/other.rego" {
					es[i].data = []byte("package gatehouse.other\n\nx := 2\n")
				}
			}
			return es
		}), bundle.ErrSignature},
		{"added file", edit(func(es []entry) []entry {
			return append(es, entry{"/gatehouse/extra.rego", []byte("package gatehouse.extra\n")})
		}), bundle.ErrSignature},
		{"added test file", edit(func(es []entry) []entry {
			return append(es, entry{"/gatehouse/extra_test.rego", []byte("package gatehouse.extra_test\n")})
		}), bundle.ErrSignature},
		{"removed file", edit(func(es []entry) []entry {
			return slices.DeleteFunc(es, func(e entry) bool { return e.name == "/gatehouse/other.rego" })
		}), bundle.ErrSignature},
		{"duplicate file", edit(func(es []entry) []entry {
			return append(es, entry{"/gatehouse/other.rego", []byte("package gatehouse.other\n\nx := 2\n")})
		}), bundle.ErrInvalid},
		{"nested signatures file", edit(func(es []entry) []entry {
			for i := range es {
				if es[i].name == "/.signatures.json" {
					es[i].name = "/gatehouse/.signatures.json"
				}
			}
			return es
		}), bundle.ErrInvalid},
		{"HS256 with the public key", resign(t, good, header("HS256"), hs256), bundle.ErrSignature},
		{"alg none", resign(t, good, header("none"), func([]byte) []byte { return nil }), bundle.ErrSignature},
		{"RS384", rs(jose.RS384), bundle.ErrSignature},
		{"PS256", rs(jose.PS256), bundle.ErrSignature},
		{"no kid", resign(t, good, map[string]string{"alg": "RS256"}, func(input []byte) []byte {
			h := sha256.Sum256(input)
			sig, err := rsa.SignPKCS1v15(nil, privKey, crypto.SHA256, h[:])
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}), bundle.ErrSignature},
		{"two signatures", withSignatures(t, good, []byte(`{"signatures": ["a.b.c", "d.e.f"]}`)), bundle.ErrSignature},
		{"signing plugin", withSignatures(t, good, []byte(`{"signatures": ["a.b.c"], "plugin": "custom"}`)), bundle.ErrSignature},
		{"garbage token", withSignatures(t, good, signaturesFile("not a token")), bundle.ErrSignature},
		{"no revision", build(kp.Signer, withFiles(func(f map[string]string) {
			f[".manifest"] = `{"roots": ["gatehouse"]}`
		})), bundle.ErrInvalid},
		{"no manifest", build(kp.Signer, withFiles(func(f map[string]string) { delete(f, ".manifest") })), bundle.ErrInvalid},
		{"revision with spaces", build(kp.Signer, withFiles(func(f map[string]string) {
			f[".manifest"] = `{"revision": "rev 1"}`
		})), bundle.ErrInvalid},
		{"rego v0", build(kp.Signer, withFiles(func(f map[string]string) {
			f[".manifest"] = `{"revision": "rev.1", "rego_version": 0}`
		})), bundle.ErrInvalid},
		{"rego v0 file", build(kp.Signer, withFiles(func(f map[string]string) {
			f[".manifest"] = `{"revision": "rev.1", "file_rego_versions": {"gatehouse/other.rego": 0}}`
		})), bundle.ErrInvalid},
		{"manifest of wrong shape", build(kp.Signer, withFiles(func(f map[string]string) {
			f[".manifest"] = `{"revision": "rev.1", "roots": "gatehouse"}`
		})), bundle.ErrInvalid},
		{"syntax error", build(kp.Signer, withFiles(func(f map[string]string) {
			f["gatehouse/other.rego"] = "package gatehouse.other\n\nx := { " + sourceMarker + " ==\n"
		})), bundle.ErrInvalid},
		{"garbage", []byte("definitely not a tarball"), bundle.ErrInvalid},
		{"empty", nil, bundle.ErrInvalid},
		{"truncated", good[:len(good)/2], bundle.ErrInvalid},
		{"oversized", make([]byte, bundle.MaxTarballBytes+1), bundle.ErrTooLarge},
		{"expands too far", bomb(t), bundle.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := bundle.Open(tc.tarball, kp.Verifier)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %+v, %v; want %v", b, err, tc.want)
			}
			t.Logf("Open error: %v", err)
			for _, other := range []error{bundle.ErrUnsigned, bundle.ErrSignature, bundle.ErrInvalid, bundle.ErrTooLarge} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("Open error %q also matches %v", err, other)
				}
			}
			if strings.Contains(err.Error(), sourceMarker) {
				t.Errorf("Open error %q shows policy source", err)
			}
		})
	}

	if _, err := bundle.Open(good, nil); !errors.Is(err, bundle.ErrSignature) {
		t.Errorf("Open(nil verifier) error = %v, want ErrSignature", err)
	}
}

func TestOpenAcceptsReformattedData(t *testing.T) {
	t.Parallel()
	// OPA hashes JSON documents by value: whitespace is not content.
	kp := bundletest.Shared(t)
	tarball := tarEntries(t, slices.Collect(func(yield func(entry) bool) {
		for _, e := range untarEntries(t, bundletest.Tarball(t, bundletest.WriteDir(t, policyFiles()))) {
			if e.name == "/gatehouse/data.json" {
				e.data = []byte("{\n  \"limits\": { \"max\": 3 }\n}\n")
			}
			if !yield(e) {
				return
			}
		}
	}))
	if _, err := bundle.Open(tarball, kp.Verifier); err != nil {
		t.Fatalf("Open: %v", err)
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	rsaPub := func() []byte {
		block, _ := pem.Decode(kp.PublicKeyPEM)
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub.(*rsa.PublicKey))})
	}()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	smallPubDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	signers := []struct {
		name  string
		keyID string
		pem   []byte
		ok    bool
	}{
		{"PKCS #8", "k", kp.PrivateKeyPEM, true},
		{"empty key id", "", kp.PrivateKeyPEM, false},
		{"public key", "k", kp.PublicKeyPEM, false},
		{"1024 bits", "k", pemOf("PRIVATE KEY", smallDER), false},
		{"ECDSA", "k", pemOf("PRIVATE KEY", ecDER), false},
		{"not PEM", "k", []byte("secret"), false},
		{"two blocks", "k", append(slices.Clone(kp.PrivateKeyPEM), kp.PrivateKeyPEM...), false},
	}
	for _, tc := range signers {
		t.Run("signer "+tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := bundle.NewSigner(tc.keyID, tc.pem)
			if (err == nil) != tc.ok {
				t.Fatalf("NewSigner = %v, %v; want ok=%v", s, err, tc.ok)
			}
			if err == nil && s.KeyID() != tc.keyID {
				t.Errorf("KeyID() = %q, want %q", s.KeyID(), tc.keyID)
			}
		})
	}
	verifiers := []struct {
		name  string
		keyID string
		pem   []byte
		ok    bool
	}{
		{"PKIX", "k", kp.PublicKeyPEM, true},
		{"PKCS #1", "k", rsaPub, true},
		{"empty key id", "", kp.PublicKeyPEM, false},
		{"private key", "k", kp.PrivateKeyPEM, false},
		{"1024 bits", "k", pemOf("PUBLIC KEY", smallPubDER), false},
		{"ECDSA", "k", pemOf("PUBLIC KEY", ecPubDER), false},
		{"not PEM", "k", []byte("secret"), false},
	}
	for _, tc := range verifiers {
		t.Run("verifier "+tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := bundle.NewVerifier(tc.keyID, tc.pem)
			if (err == nil) != tc.ok {
				t.Fatalf("NewVerifier = %v, %v; want ok=%v", v, err, tc.ok)
			}
			if err == nil && v.KeyID() != tc.keyID {
				t.Errorf("KeyID() = %q, want %q", v.KeyID(), tc.keyID)
			}
		})
	}

	// The PKCS #1 form of the public key verifies the same signatures.
	v, err := bundle.NewVerifier(bundletest.KeyID, rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Open(bundletest.Tarball(t, bundletest.WriteDir(t, policyFiles())), v); err != nil {
		t.Errorf("Open with the PKCS #1 public key: %v", err)
	}
}
