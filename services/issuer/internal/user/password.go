package user

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Password policy bounds, in bytes. Long passphrases are welcome; the upper
// bound only keeps a request from feeding megabytes into the hash.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 256
)

// Errors about passwords and their hashes.
var (
	// ErrPasswordMismatch means the password does not match the hash.
	ErrPasswordMismatch = errors.New("password does not match")
	// ErrPasswordPolicy means a new password breaks the password policy.
	ErrPasswordPolicy = errors.New("password does not meet the policy")
	// ErrMalformedHash means a stored hash is not a PHC argon2id string
	// this package can read.
	ErrMalformedHash = errors.New("malformed password hash")
	// ErrUnsupportedHash means a stored hash uses another algorithm, another
	// argon2 version, or parameters outside the accepted bounds.
	ErrUnsupportedHash = errors.New("unsupported password hash")
)

// Params are argon2id cost parameters. They are written into every hash, so
// raising them later only affects new hashes; NeedsRehash tells when a
// stored hash should be replaced after a successful login.
type Params struct {
	// Memory is the memory cost in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism (lanes).
	Threads uint8
	// SaltLen is the length of the random salt, in bytes.
	SaltLen uint32
	// KeyLen is the length of the derived key, in bytes.
	KeyLen uint32
}

// DefaultParams are the issuer's argon2id parameters: 64 MiB, 2 passes,
// 2 lanes, 16-byte salt, 32-byte key. On the reference machine (2 vCPU AMD
// EPYC) a hash takes about 60 ms of wall time and 115 ms of CPU; see
// docs/users.md for the measurements and the reasoning.
func DefaultParams() Params {
	return Params{Memory: 64 * 1024, Time: 2, Threads: 2, SaltLen: 16, KeyLen: 32}
}

// Bounds on the parameters of a hash this package will compute or verify.
// They reject nonsense and keep a tampered hash from demanding gigabytes.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 16
	maxThreads = 16
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// Validate reports whether p is within the bounds this package accepts.
func (p Params) Validate() error {
	switch {
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("%w: threads %d out of range [1, %d]", ErrUnsupportedHash, p.Threads, maxThreads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("%w: memory %d KiB out of range [%d, %d]", ErrUnsupportedHash, p.Memory, 8*uint32(p.Threads), maxMemory)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("%w: time %d out of range [1, %d]", ErrUnsupportedHash, p.Time, maxTime)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("%w: salt length %d out of range [%d, %d]", ErrUnsupportedHash, p.SaltLen, minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("%w: key length %d out of range [%d, %d]", ErrUnsupportedHash, p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

// CheckPasswordPolicy reports whether password may be set as a new
// password: MinPasswordLen to MaxPasswordLen bytes. It does not apply to
// logins, where a wrong password is simply wrong.
func CheckPasswordPolicy(password string) error {
	if n := len(password); n < MinPasswordLen || n > MaxPasswordLen {
		return fmt.Errorf("%w: length must be %d to %d bytes", ErrPasswordPolicy, MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// phcPrefix starts every hash: algorithm and argon2 version 0x13.
const phcPrefix = "$argon2id$v=19$"

// b64 is the PHC string format's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding

// HashPassword returns the argon2id hash of password under p with a fresh
// random salt, as a PHC string:
//
//	$argon2id$v=19$m=65536,t=2,p=2$<salt>$<key>
func HashPassword(password string, p Params) (string, error) {
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	salt := make([]byte, p.SaltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (it crashes the program instead).
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("%sm=%d,t=%d,p=%d$%s$%s", phcPrefix, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches encoded, using the
// parameters stored in encoded and a constant-time comparison. It returns
// nil on a match, ErrPasswordMismatch otherwise, and ErrMalformedHash or
// ErrUnsupportedHash (without hashing anything) when encoded cannot be used.
func VerifyPassword(encoded, password string) error {
	h, err := parseHash(encoded)
	if err != nil {
		return err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.Memory, h.params.Threads, h.params.KeyLen)
	if subtle.ConstantTimeCompare(key, h.key) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}

// NeedsRehash reports whether encoded should be replaced by a hash under p:
// it is unreadable, or its parameters differ from p (for example because
// DefaultParams were raised since it was computed).
func NeedsRehash(encoded string, p Params) bool {
	h, err := parseHash(encoded)
	if err != nil {
		return true
	}
	return h.params != p
}

// ParseParams returns the argon2id parameters stored in encoded.
func ParseParams(encoded string) (Params, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return Params{}, err
	}
	return h.params, nil
}

type phcHash struct {
	params Params
	salt   []byte
	key    []byte
}

// parseHash reads a PHC argon2id string strictly: exact field order, decimal
// numbers without sign or leading zeros, unpadded standard base64, and
// parameters within Params.Validate's bounds.
func parseHash(encoded string) (phcHash, error) {
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return phcHash{}, fmt.Errorf("%w: want 5 '$'-separated fields", ErrMalformedHash)
	}
	if fields[1] != "argon2id" {
		return phcHash{}, fmt.Errorf("%w: algorithm %q, want argon2id", ErrUnsupportedHash, fields[1])
	}
	if fields[2] != "v=19" {
		return phcHash{}, fmt.Errorf("%w: version %q, want v=19", ErrUnsupportedHash, fields[2])
	}
	kv := strings.Split(fields[3], ",")
	if len(kv) != 3 {
		return phcHash{}, fmt.Errorf("%w: want parameters m,t,p", ErrMalformedHash)
	}
	var nums [3]uint64
	for i, param := range []struct {
		name string
		bits int
	}{{"m", 32}, {"t", 32}, {"p", 8}} {
		v, ok := strings.CutPrefix(kv[i], param.name+"=")
		if !ok {
			return phcHash{}, fmt.Errorf("%w: parameter %d is not %s", ErrMalformedHash, i+1, param.name)
		}
		n, err := strconv.ParseUint(v, 10, param.bits)
		if err != nil || strconv.FormatUint(n, 10) != v {
			return phcHash{}, fmt.Errorf("%w: parameter %s=%q is not a %d-bit number", ErrMalformedHash, param.name, v, param.bits)
		}
		nums[i] = n
	}
	salt, err := b64.Strict().DecodeString(fields[4])
	if err != nil {
		return phcHash{}, fmt.Errorf("%w: salt: not unpadded base64", ErrMalformedHash)
	}
	key, err := b64.Strict().DecodeString(fields[5])
	if err != nil {
		return phcHash{}, fmt.Errorf("%w: hash: not unpadded base64", ErrMalformedHash)
	}
	h := phcHash{
		params: Params{
			// ParseUint's bit sizes above bound the conversions; Validate
			// bounds the lengths.
			Memory:  uint32(nums[0]),   //nolint:gosec // G115: parsed with bitSize 32
			Time:    uint32(nums[1]),   //nolint:gosec // G115: parsed with bitSize 32
			Threads: uint8(nums[2]),    //nolint:gosec // G115: parsed with bitSize 8
			SaltLen: uint32(len(salt)), //nolint:gosec // G115: a string's length
			KeyLen:  uint32(len(key)),  //nolint:gosec // G115: a string's length
		},
		salt: salt,
		key:  key,
	}
	if err := h.params.Validate(); err != nil {
		return phcHash{}, err
	}
	return h, nil
}
