// Package scopecatalog loads the scope catalog: what each OAuth 2.0 scope
// lets a client do, in words a user understands. The consent and account
// pages show these descriptions. The catalog lives with the policies
// (policies/gatehouse/data.json, key "scopes"), so the PDP and the pages
// speak of the same scopes.
package scopecatalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
)

// Bounds on a catalog file.
const (
	// MaxFileBytes is the largest catalog file read.
	MaxFileBytes = 1 << 20
	// MaxDescriptionLen is the longest description accepted, in characters.
	MaxDescriptionLen = 300
)

// ErrInvalid marks a catalog that cannot be used.
var ErrInvalid = errors.New("invalid scope catalog")

// Catalog maps scope names to descriptions. It is immutable and safe for
// concurrent use.
type Catalog struct {
	descriptions map[string]string
}

// Entry is one scope as a page shows it.
type Entry struct {
	// Name is the scope as requested.
	Name string
	// Description is the catalog's description, or Name when the catalog
	// does not know the scope.
	Description string
	// Known reports whether the catalog describes the scope.
	Known bool
}

// Load reads and validates the catalog in the JSON file at path (see Parse).
func Load(path string) (*Catalog, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the path is operator configuration.
	if err != nil {
		return nil, fmt.Errorf("scopecatalog: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to flush
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("scopecatalog: read %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return c, nil
}

// Parse validates data, a JSON object whose "scopes" member maps each scope
// name to an object with a "description": {"scopes": {"invoice:read":
// {"description": "View invoices of your organization."}}}. Other members,
// at either level, are ignored. Every name must be a valid scope and every
// description one non-empty line of printable text of at most
// MaxDescriptionLen characters; the catalog must describe at least one scope.
func Parse(data []byte) (*Catalog, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxFileBytes)
	}
	var doc struct {
		Scopes map[string]*struct {
			Description *string `json:"description"`
		} `json:"scopes"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	if len(doc.Scopes) == 0 {
		return nil, fmt.Errorf("%w: no \"scopes\" object, or it is empty", ErrInvalid)
	}
	c := &Catalog{descriptions: make(map[string]string, len(doc.Scopes))}
	var errs []error
	for name, entry := range doc.Scopes {
		if !consent.ValidScope(name) {
			errs = append(errs, fmt.Errorf("scope %q: not a valid scope name", name))
			continue
		}
		if entry == nil || entry.Description == nil {
			errs = append(errs, fmt.Errorf("scope %q: no description", name))
			continue
		}
		d := strings.TrimSpace(*entry.Description)
		if err := validateDescription(d); err != nil {
			errs = append(errs, fmt.Errorf("scope %q: %w", name, err))
			continue
		}
		c.descriptions[name] = d
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, nil
}

func validateDescription(d string) error {
	switch {
	case d == "":
		return errors.New("empty description")
	case !utf8.ValidString(d):
		return errors.New("description is not UTF-8")
	case utf8.RuneCountInString(d) > MaxDescriptionLen:
		return fmt.Errorf("description longer than %d characters", MaxDescriptionLen)
	case strings.ContainsFunc(d, func(r rune) bool { return !unicode.IsPrint(r) }):
		return errors.New("description contains control characters")
	}
	return nil
}

// Describe returns the entry for scope; a scope the catalog does not know
// is described by its own name.
func (c *Catalog) Describe(scope string) Entry {
	if d, ok := c.descriptions[scope]; ok {
		return Entry{Name: scope, Description: d, Known: true}
	}
	return Entry{Name: scope, Description: scope}
}

// DescribeAll returns the entries for scopes, in their order.
func (c *Catalog) DescribeAll(scopes []string) []Entry {
	out := make([]Entry, 0, len(scopes))
	for _, s := range scopes {
		out = append(out, c.Describe(s))
	}
	return out
}

// Scopes returns the described scope names, sorted.
func (c *Catalog) Scopes() []string {
	out := make([]string, 0, len(c.descriptions))
	for name := range c.descriptions {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
