// Package bundle reads, signs and verifies the PDP's policy bundles: OPA
// bundles signed with OPA's own bundle signing (a .signatures.json holding
// one RS256 JWT that lists the SHA-256 of every file). A bundle is only
// ever handed to the policy engine after its signature, its file set and
// its manifest were checked.
//
// Bundles travel as gzipped tarballs (Build, Open) and live in the
// repository as directories with a committed .signatures.json (SignDir,
// LoadDir). In a directory, files named *_test.rego, directories named
// testdata and dot-files other than .manifest are not part of the bundle.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
)

// MaxTarballBytes bounds a bundle tarball (gzipped).
const MaxTarballBytes = 4 << 20

// maxContentBytes bounds the uncompressed content of a bundle, so that a
// small tarball cannot expand without limit (a gzip bomb).
const maxContentBytes = 16 << 20

// maxRevisionBytes bounds a manifest revision.
const maxRevisionBytes = 128

// signaturesFile is the name of a bundle's signatures file, at its root.
const signaturesFile = ".signatures.json"

// Errors of Open, LoadDir and Build. Their messages name files, keys and
// limits, never policy source.
var (
	// ErrUnsigned: the bundle has no .signatures.json.
	ErrUnsigned = errors.New("bundle is not signed")
	// ErrSignature: the signature does not verify (another key or key id,
	// an algorithm other than RS256), or the files do not match it (a
	// file changed, added or removed).
	ErrSignature = errors.New("bundle signature is invalid")
	// ErrInvalid: not a readable bundle, or its manifest is missing, has
	// no revision or is otherwise unacceptable.
	ErrInvalid = errors.New("bundle is invalid")
	// ErrTooLarge: the tarball or its content exceeds the limits.
	ErrTooLarge = errors.New("bundle is too large")
)

// Bundle is a verified policy bundle.
type Bundle struct {
	// Revision is the manifest's revision: the policy version.
	Revision string
	// Digest is the lowercase hex SHA-256 of Tarball.
	Digest string
	// SigningKeyID is the id of the key that signed the bundle.
	SigningKeyID string
	// Tarball is the gzipped bundle, .signatures.json included.
	Tarball []byte

	parsed *opabundle.Bundle
}

// Parsed returns the bundle as OPA parsed it (modules and data), for the
// policy engine to compile. Callers must not modify it. It is nil for a
// Bundle not made by Open or LoadDir.
func (b *Bundle) Parsed() *opabundle.Bundle { return b.parsed }

// file is one file of a bundle; name is slash-separated and relative to
// the bundle root, without a leading slash.
type file struct {
	name string
	data []byte
}

// Open verifies and reads a bundle tarball: it must be at most
// MaxTarballBytes (ErrTooLarge), carry a .signatures.json (ErrUnsigned)
// whose one RS256 JWT, signed by v's key and naming v's key id, lists
// exactly the bundle's files with their hashes (ErrSignature), and be a
// Rego v1 bundle whose .manifest has a revision (ErrInvalid).
func Open(tarball []byte, v *Verifier) (*Bundle, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: no verification key configured", ErrSignature)
	}
	if len(tarball) > MaxTarballBytes {
		return nil, fmt.Errorf("%w: tarball has %d bytes, the limit is %d", ErrTooLarge, len(tarball), MaxTarballBytes)
	}
	files, sig, err := untar(tarball)
	if err != nil {
		return nil, err
	}
	if sig == nil {
		return nil, fmt.Errorf("%w: no %s", ErrUnsigned, signaturesFile)
	}
	keyID, err := v.verify(files, sig)
	if err != nil {
		return nil, err
	}

	// The files match the signature; OPA's reader verifies it again as it
	// parses them.
	parsed, err := opabundle.NewReader(bytes.NewReader(tarball)).
		WithBundleVerificationConfig(v.config()).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(maxContentBytes + 1).
		Read()
	if err != nil {
		return nil, fmt.Errorf("%w: read bundle: %s", ErrInvalid, Describe(err))
	}
	if err := checkManifest(parsed.Manifest); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tarball)
	return &Bundle{
		Revision:     parsed.Manifest.Revision,
		Digest:       hex.EncodeToString(digest[:]),
		SigningKeyID: keyID,
		Tarball:      bytes.Clone(tarball),
		parsed:       &parsed,
	}, nil
}

// checkManifest requires a well-formed revision and Rego v1 throughout.
func checkManifest(m opabundle.Manifest) error {
	if m.Revision == "" {
		return fmt.Errorf("%w: no revision in .manifest", ErrInvalid)
	}
	if !validRevision(m.Revision) {
		return fmt.Errorf("%w: revision in .manifest must be 1 to %d of the characters A-Z a-z 0-9 . _ - + : @", ErrInvalid, maxRevisionBytes)
	}
	if m.RegoVersion != nil && *m.RegoVersion != 1 {
		return fmt.Errorf("%w: .manifest declares rego_version %d, only Rego v1 is accepted", ErrInvalid, *m.RegoVersion)
	}
	for path, version := range m.FileRegoVersions {
		if version != 1 {
			return fmt.Errorf("%w: .manifest declares rego_version %d for %q, only Rego v1 is accepted", ErrInvalid, version, path)
		}
	}
	return nil
}

// validRevision reports whether rev is usable as an identifier in logs,
// metrics, URLs and decisions.
func validRevision(rev string) bool {
	if rev == "" || len(rev) > maxRevisionBytes {
		return false
	}
	for i := range len(rev) {
		c := rev[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("._-+:@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// untar reads the regular files of a gzipped tarball, as OPA's reader
// sees them (names without their leading slash), and the content of its
// signatures file (nil when there is none).
func untar(tarball []byte) (files []file, sig []byte, err error) {
	gz, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not a gzipped tarball: %w", ErrInvalid, err)
	}
	content := &limitReader{r: gz, n: maxContentBytes}
	tr := tar.NewReader(content)
	seen := make(map[string]bool)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, tarError(content, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue // OPA's reader reads regular files only
		}
		name := strings.TrimPrefix(hdr.Name, "/")
		if seen[name] {
			return nil, nil, fmt.Errorf("%w: tarball holds %q twice", ErrInvalid, name)
		}
		seen[name] = true
		if hdr.Size > maxContentBytes {
			return nil, nil, fmt.Errorf("%w: %q has %d bytes, the limit for the bundle's content is %d", ErrTooLarge, name, hdr.Size, maxContentBytes)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, tarError(content, err)
		}
		if opabundle.IsSignaturesFile(name) {
			if name != signaturesFile {
				return nil, nil, fmt.Errorf("%w: %q: the signatures file must be at the bundle root", ErrInvalid, name)
			}
			sig = data
			continue
		}
		files = append(files, file{name: name, data: data})
	}
	return files, sig, nil
}

func tarError(content *limitReader, err error) error {
	if content.exceeded {
		return fmt.Errorf("%w: content exceeds %d bytes uncompressed", ErrTooLarge, maxContentBytes)
	}
	return fmt.Errorf("%w: not a gzipped tarball: %w", ErrInvalid, err)
}

// limitReader reads at most n bytes, then fails, and remembers that it did.
type limitReader struct {
	r        io.Reader
	n        int64
	exceeded bool
}

var errLimit = errors.New("content limit exceeded")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// Anything more than the limit is too much.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.exceeded = true
			return 0, errLimit
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// Describe renders an error of OPA's reader or compiler without the
// source excerpts that Rego errors carry in their details, so it can be
// logged or returned without showing policy text.
func Describe(err error) string {
	var astErrs ast.Errors
	if !errors.As(err, &astErrs) {
		return err.Error()
	}
	msgs := make([]string, len(astErrs))
	for i, e := range astErrs {
		plain := *e
		plain.Details = nil
		msgs[i] = plain.Error()
	}
	return strings.Join(msgs, "; ")
}

// SameFiles reports whether a and b are the same signed files: their
// signatures, which cover every file's hash, are identical. Two packings of
// one directory (whose gzip bytes, and so digests, may differ between
// builds) are the same files.
func SameFiles(a, b *Bundle) bool {
	sa, sb := a.parsed.Signatures.Signatures, b.parsed.Signatures.Signatures
	return len(sa) > 0 && slices.Equal(sa, sb)
}
