package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
)

// DefaultKeyID is the key id bundles are signed with unless -key-id says
// otherwise: the demo key's.
const DefaultKeyID = "gatehouse-demo"

// signingFlags are the flags of the commands that sign a policy directory.
type signingFlags struct {
	dir     string
	keyFile string
	keyID   string
}

func addSigningFlags(fs *flag.FlagSet) *signingFlags {
	s := &signingFlags{}
	fs.StringVar(&s.dir, "dir", "", "policy directory (Rego, data and .manifest)")
	fs.StringVar(&s.keyFile, "signing-key", "", "PEM file of the RSA private key that signs the bundle")
	fs.StringVar(&s.keyID, "key-id", DefaultKeyID, "key id the signature names; the PDP verifies with its key of that id")
	return s
}

// signer checks the flags and loads the signing key.
func (s *signingFlags) signer(cmd *command) (*bundle.Signer, error) {
	switch {
	case s.dir == "":
		return nil, cmd.usageErr("-dir is required")
	case s.keyFile == "":
		return nil, cmd.usageErr("-signing-key is required")
	case s.keyID == "":
		return nil, cmd.usageErr("-key-id must not be empty")
	}
	pem, err := os.ReadFile(filepath.Clean(s.keyFile))
	if err != nil {
		return nil, fmt.Errorf("read -signing-key: %w", err)
	}
	signer, err := bundle.NewSigner(s.keyID, pem)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", s.keyFile, err)
	}
	return signer, nil
}

// build builds and signs the bundle of s.dir.
func (s *signingFlags) build(c *cli, cmd *command) ([]byte, error) {
	signer, err := s.signer(cmd)
	if err != nil {
		return nil, err
	}
	c.progress("building a bundle from %s, signed with key %s", s.dir, s.keyID)
	data, err := bundle.Build(s.dir, signer)
	if err != nil {
		return nil, fmt.Errorf("build bundle from %s: %w", s.dir, err)
	}
	return data, nil
}

func policyBuild(_ context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	s := addSigningFlags(fs)
	out := fs.String("o", "", "file to write the bundle tarball to (required)")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		return cmd.usageErr("-o is required")
	}
	data, err := s.build(c, cmd)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(*out, data); err != nil {
		return err
	}
	return c.printf("wrote %s: %d bytes, sha256 %s, key %s\n", *out, len(data), digest(data), s.keyID)
}

func policySign(_ context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	s := addSigningFlags(fs)
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	signer, err := s.signer(cmd)
	if err != nil {
		return err
	}
	if err := bundle.SignDir(s.dir, signer); err != nil {
		return fmt.Errorf("sign %s: %w", s.dir, err)
	}
	return c.printf("wrote %s, key %s\n", filepath.Join(s.dir, ".signatures.json"), s.keyID)
}

func policyPush(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	s := addSigningFlags(fs)
	file := fs.String("bundle", "", "signed bundle tarball to push (instead of -dir)")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	var (
		data []byte
		err  error
	)
	switch {
	case (s.dir == "") == (*file == ""):
		return cmd.usageErr("give either -dir (with -signing-key) or -bundle")
	case *file != "" && s.keyFile != "":
		return cmd.usageErr("-signing-key goes with -dir; a -bundle is already signed")
	case *file != "":
		data, err = readBundle(*file)
	default:
		data, err = s.build(c, cmd)
	}
	if err != nil {
		return err
	}
	client, err := c.adminClient(ctx)
	if err != nil {
		return err
	}
	sum := digest(data)
	c.progress("pushing %d bytes (sha256 %s) to %s", len(data), sum, c.pdpURL)
	res, err := call(ctx, c, "push", client.PushBundle, &authzv1.PushBundleRequest{Bundle: data})
	if err != nil {
		return err
	}
	b := res.GetBundle()
	if b.GetDigest() != sum {
		return fmt.Errorf("push: the PDP stored digest %s, but the bundle sent has %s", b.GetDigest(), sum)
	}
	created := "yes"
	if !res.GetCreated() {
		created = "no (already stored with the same content)"
	}
	t := newTable()
	t.row("revision", b.GetRevision())
	t.row("digest", b.GetDigest())
	t.row("size", strconv.FormatInt(b.GetSizeBytes(), 10))
	t.row("signing key", b.GetSigningKeyId())
	t.row("uploaded by", b.GetUploadedBy())
	t.row("uploaded at", formatTime(b.GetUploadedAt()))
	t.row("created", created)
	return t.writeTo(c.stdout)
}

// readBundle reads a bundle tarball, refusing one larger than the PDP
// accepts before reading all of it.
func readBundle(name string) ([]byte, error) {
	f, err := os.Open(filepath.Clean(name))
	if err != nil {
		return nil, fmt.Errorf("read -bundle: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxTarballBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read -bundle: %w", err)
	}
	if len(data) > bundle.MaxTarballBytes {
		return nil, fmt.Errorf("-bundle %s is larger than the %d bytes the PDP accepts", name, bundle.MaxTarballBytes)
	}
	return data, nil
}

// writeFileAtomic writes data to name through a temporary file in the same
// directory, so a failed build never leaves a truncated bundle behind.
func writeFileAtomic(name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".bundle-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	// A bundle is not secret: let the PDP's container user read it.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil { //nolint:gosec // G302: a policy bundle is public
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
