package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Build signs the directory bundle dir with s and returns it as a gzipped
// tarball, .signatures.json included. The output is deterministic: the
// same files and key give the same bytes. A .signatures.json in dir is
// ignored (the files are signed afresh).
func Build(dir string, s *Signer) ([]byte, error) {
	files, _, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(files)
	if err != nil {
		return nil, err
	}
	tarball, err := writeTarball(files, sig)
	if err != nil {
		return nil, err
	}
	if len(tarball) > MaxTarballBytes {
		return nil, fmt.Errorf("%w: tarball has %d bytes, the limit is %d", ErrTooLarge, len(tarball), MaxTarballBytes)
	}
	return tarball, nil
}

// SignDir signs the directory bundle dir with s and writes its
// .signatures.json, replacing any. The output is deterministic, so
// re-signing unchanged files leaves the file byte for byte the same.
func SignDir(dir string, s *Signer) error {
	files, _, err := readDir(dir)
	if err != nil {
		return err
	}
	sig, err := s.sign(files)
	if err != nil {
		return err
	}
	// The signatures file is committed with the bundle and as readable.
	if err := os.WriteFile(filepath.Join(dir, signaturesFile), sig, 0o644); err != nil { //nolint:gosec // G306: a public, committed file
		return fmt.Errorf("bundle: write %s: %w", signaturesFile, err)
	}
	return nil
}

// LoadDir verifies and reads the directory bundle dir, which must carry
// the .signatures.json that SignDir writes, exactly as Open verifies a
// tarball. The Bundle's Tarball holds the verified files and the
// signatures file (deterministically packed, as Build packs them), so
// another replica can Open it.
func LoadDir(dir string, v *Verifier) (*Bundle, error) {
	files, sig, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	if sig == nil {
		return nil, fmt.Errorf("%w: no %s in %s", ErrUnsigned, signaturesFile, dir)
	}
	tarball, err := writeTarball(files, sig)
	if err != nil {
		return nil, err
	}
	return Open(tarball, v)
}

// readDir reads the files of the directory bundle dir, sorted by name,
// leaving out *_test.rego files, testdata directories and dot-files and
// dot-directories other than .manifest, and, separately, its root
// .signatures.json (nil when there is none). Anything but regular files
// and directories (a symlink, say) is refused.
func readDir(dir string) (files []file, sig []byte, err error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: bundle directory: %w", ErrInvalid, err)
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("%w: bundle directory %s is not a directory", ErrInvalid, dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: bundle directory: %w", ErrInvalid, err)
	}
	defer func() { _ = root.Close() }() // read-only: nothing to lose

	var total int64
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		base := d.Name()
		if d.IsDir() {
			if base == "testdata" || strings.HasPrefix(base, ".") {
				return fs.SkipDir
			}
			return nil
		}
		isSig := name == signaturesFile
		if !isSig && (strings.HasSuffix(base, "_test.rego") || strings.HasPrefix(base, ".") && base != ".manifest") {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%w: %s in the bundle directory is not a regular file", ErrInvalid, name)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if total += fi.Size(); total > maxContentBytes {
			return fmt.Errorf("%w: the bundle directory's files exceed %d bytes", ErrTooLarge, maxContentBytes)
		}
		data, err := fs.ReadFile(root.FS(), name)
		if err != nil {
			return err
		}
		if isSig {
			sig = data
			return nil
		}
		files = append(files, file{name: name, data: data})
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: read bundle directory: %w", ErrInvalid, err)
	}
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	return files, sig, nil
}

// writeTarball packs files and the signatures file sig as a gzipped
// tarball, deterministically: files in the order given, fixed modes and
// times, names with a leading slash as `opa build` writes them.
func writeTarball(files []file, sig []byte) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	tw := tar.NewWriter(gz)
	all := append([]file{{name: signaturesFile, data: sig}}, files...)
	for _, f := range all {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     "/" + f.name,
			Mode:     0o644,
			Size:     int64(len(f.data)),
			ModTime:  time.Unix(0, 0), // fixed, so the same files give the same bytes
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("bundle: write tarball: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("bundle: write tarball: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("bundle: write tarball: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("bundle: write tarball: %w", err)
	}
	return buf.Bytes(), nil
}
