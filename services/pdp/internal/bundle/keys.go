package bundle

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// algorithm is the one signature algorithm bundles are signed with:
// RSASSA-PKCS1-v1_5, deterministic, so re-signing unchanged files
// reproduces .signatures.json byte for byte.
const algorithm = "RS256"

// hashing is the one file hash a signature may list.
const hashing = opabundle.SHA256

// minRSABits is the smallest RSA key accepted.
const minRSABits = 2048

// Signer signs bundles with an RSA private key under a key id.
type Signer struct {
	keyID  string
	config *opabundle.SigningConfig
}

// NewSigner returns a Signer for an RSA private key of at least 2048 bits
// in PEM (PKCS #8 "PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY"). Its
// signatures name keyID, which the verifier must expect.
func NewSigner(keyID string, privateKeyPEM []byte) (*Signer, error) {
	if keyID == "" {
		return nil, errors.New("bundle: signing key id is empty")
	}
	block, rest := pem.Decode(privateKeyPEM)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("bundle: signing key is not one PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("bundle: signing key is a PEM %q block, want PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: parse signing key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("bundle: signing key is a %T, want an RSA key", key)
	}
	if bits := rsaKey.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("bundle: signing key has %d bits, want at least %d", bits, minRSABits)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode signing key: %w", err)
	}
	// OPA's signing config takes the key as PEM text.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return &Signer{
		keyID:  keyID,
		config: opabundle.NewSigningConfig(string(keyPEM), algorithm, ""),
	}, nil
}

// KeyID returns the key id the signatures name.
func (s *Signer) KeyID() string { return s.keyID }

// sign returns the content of a .signatures.json listing files, as
// `opa sign --bundle` would (structured documents hashed by their JSON
// value, everything else by its bytes), in the order given.
func (s *Signer) sign(files []file) ([]byte, error) {
	hasher, err := opabundle.NewSignatureHasher(hashing)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	infos := make([]opabundle.FileInfo, len(files))
	for i, f := range files {
		var value any = f.data
		if opabundle.IsStructuredDoc(f.name) {
			if err := util.Unmarshal(f.data, &value); err != nil {
				return nil, fmt.Errorf("%w: %s is not valid JSON or YAML: %w", ErrInvalid, f.name, err)
			}
		}
		sum, err := hasher.HashFile(value)
		if err != nil {
			return nil, fmt.Errorf("%w: hash %s: %w", ErrInvalid, f.name, err)
		}
		infos[i] = opabundle.NewFile(f.name, hex.EncodeToString(sum), string(hashing))
	}
	token, err := opabundle.GenerateSignedToken(infos, s.config, s.keyID)
	if err != nil {
		return nil, fmt.Errorf("bundle: sign: %w", err)
	}
	out, err := json.MarshalIndent(opabundle.SignaturesConfig{Signatures: []string{token}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bundle: encode %s: %w", signaturesFile, err)
	}
	return append(out, '\n'), nil
}

// Verifier verifies bundle signatures: RS256 only, by one RSA public key
// under one key id. It is safe for concurrent use.
type Verifier struct {
	keyID     string
	publicPEM string
}

// NewVerifier returns a Verifier for an RSA public key of at least 2048
// bits in PEM (PKIX "PUBLIC KEY" or PKCS #1 "RSA PUBLIC KEY"); it accepts
// only signatures that name keyID.
func NewVerifier(keyID string, publicKeyPEM []byte) (*Verifier, error) {
	if keyID == "" {
		return nil, errors.New("bundle: verification key id is empty")
	}
	block, rest := pem.Decode(publicKeyPEM)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("bundle: verification key is not one PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("bundle: verification key is a PEM %q block, want PUBLIC KEY or RSA PUBLIC KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: parse verification key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("bundle: verification key is a %T, want an RSA key", key)
	}
	if bits := rsaKey.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("bundle: verification key has %d bits, want at least %d", bits, minRSABits)
	}
	der, err := x509.MarshalPKIXPublicKey(rsaKey)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode verification key: %w", err)
	}
	return &Verifier{
		keyID:     keyID,
		publicPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}, nil
}

// KeyID returns the key id the Verifier accepts.
func (v *Verifier) KeyID() string { return v.keyID }

// config returns OPA's verification config for v: the one key, looked up
// by the kid the JWT names (so another kid finds no key), RS256 only.
func (v *Verifier) config() *opabundle.VerificationConfig {
	keys := map[string]*opabundle.KeyConfig{
		v.keyID: {Key: v.publicPEM, Algorithm: algorithm},
	}
	return opabundle.NewVerificationConfig(keys, "", "", nil)
}

// verify checks a signatures file against files with OPA's verifier and
// returns the key id that signed them. Every file must be listed with its
// SHA-256, and every listed file must be present.
func (v *Verifier) verify(files []file, sigFile []byte) (string, error) {
	var sc opabundle.SignaturesConfig
	if err := util.UnmarshalJSON(sigFile, &sc); err != nil {
		return "", fmt.Errorf("%w: %s is not valid JSON: %w", ErrSignature, signaturesFile, err)
	}
	if sc.Plugin != "" {
		return "", fmt.Errorf("%w: %s names a signing plugin; only RS256 signatures are accepted", ErrSignature, signaturesFile)
	}
	if len(sc.Signatures) != 1 {
		return "", fmt.Errorf("%w: %s holds %d signatures, want exactly one", ErrSignature, signaturesFile, len(sc.Signatures))
	}
	// The allow-list: OPA verifies with the algorithm configured for the
	// key, so this refuses what the token itself claims beforehand.
	jws, err := jose.ParseSignedCompact(sc.Signatures[0], []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "", fmt.Errorf("%w: not an RS256 JWT: %w", ErrSignature, err)
	}
	if kid := jws.Signatures[0].Header.KeyID; kid != v.keyID {
		return "", fmt.Errorf("%w: signed with key id %.64q, want %q", ErrSignature, kid, v.keyID)
	}
	signed, err := opabundle.VerifyBundleSignature(sc, v.config())
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSignature, err)
	}
	for name, fi := range signed {
		if fi.Algorithm != string(hashing) {
			return "", fmt.Errorf("%w: %s is hashed with %.16q, want %s", ErrSignature, name, fi.Algorithm, hashing)
		}
	}
	for _, f := range files {
		// VerifyBundleFile removes each verified file from signed.
		if err := opabundle.VerifyBundleFile(f.name, *bytes.NewBuffer(f.data), signed); err != nil {
			return "", fmt.Errorf("%w: %w", ErrSignature, err)
		}
	}
	if len(signed) != 0 {
		missing := make([]string, 0, len(signed))
		for name := range signed {
			missing = append(missing, name)
		}
		slices.Sort(missing)
		return "", fmt.Errorf("%w: signed files missing from the bundle: %q", ErrSignature, missing)
	}
	return v.keyID, nil
}
