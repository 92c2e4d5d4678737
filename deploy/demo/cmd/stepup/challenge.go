package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// The RFC 9470 error code and Gatehouse's ErrorInfo reason for the same
// challenge.
const (
	errorInsufficientUserAuthentication = "insufficient_user_authentication"
	reasonStepUpRequired                = "step_up_required"
)

// errMalformedChallenge means a step-up challenge whose parameters cannot be
// followed (a max_age that is not a non-negative integer).
var errMalformedChallenge = errors.New("malformed step-up challenge")

// challenge is what an RFC 9470 step-up challenge asks for.
type challenge struct {
	// header is the WWW-Authenticate value as received; empty when the
	// challenge came only in the ErrorInfo (gRPC carries no
	// WWW-Authenticate).
	header string
	// acrValues is the space-separated acr_values; empty if none is asked.
	acrValues string
	// maxAge is the oldest sign-in accepted, in seconds, when hasMaxAge.
	maxAge    int
	hasMaxAge bool
}

// stepUpChallenge returns the challenge err carries: a Connect
// unauthenticated error whose WWW-Authenticate holds a Bearer challenge with
// error="insufficient_user_authentication", or, without that header, whose
// ErrorInfo reason is step_up_required (its metadata carries acr_values and
// max_age). ok is false for any other error.
func stepUpChallenge(err error) (c challenge, ok bool, _ error) {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated {
		return challenge{}, false, nil
	}
	for _, header := range ce.Meta().Values("WWW-Authenticate") {
		for _, ch := range parseChallenges(header) {
			if strings.EqualFold(ch.scheme, "Bearer") && ch.params["error"] == errorInsufficientUserAuthentication {
				c, err := newChallenge(header, ch.params["acr_values"], ch.params["max_age"])
				return c, true, err
			}
		}
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if info, isInfo := v.(*errdetails.ErrorInfo); derr == nil && isInfo && info.GetReason() == reasonStepUpRequired {
			c, err := newChallenge("", info.GetMetadata()["acr_values"], info.GetMetadata()["max_age"])
			return c, true, err
		}
	}
	return challenge{}, false, nil
}

func newChallenge(header, acrValues, maxAge string) (challenge, error) {
	c := challenge{header: header, acrValues: strings.Join(strings.Fields(acrValues), " ")}
	if maxAge == "" {
		return c, nil
	}
	n, err := strconv.Atoi(maxAge)
	if err != nil || n < 0 {
		return challenge{}, fmt.Errorf("%w: max_age %q is not a non-negative integer", errMalformedChallenge, maxAge)
	}
	c.maxAge, c.hasMaxAge = n, true
	return c, nil
}

// String describes what the challenge asks for.
func (c challenge) String() string {
	var parts []string
	if c.acrValues != "" {
		parts = append(parts, "acr_values="+c.acrValues)
	}
	if c.hasMaxAge {
		parts = append(parts, "max_age="+strconv.Itoa(c.maxAge))
	}
	if len(parts) == 0 {
		return "a new sign-in"
	}
	return strings.Join(parts, " ")
}

// authChallenge is one challenge of a WWW-Authenticate header: its scheme
// and its auth-params, names lower-cased.
type authChallenge struct {
	scheme string
	params map[string]string
}

// parseChallenges parses a WWW-Authenticate value (RFC 9110 section 11.6.1):
// one or more challenges, each a scheme and comma-separated auth-params
// whose values are tokens or quoted strings. token68 credentials, which
// Bearer does not use, are not understood. A malformed value yields the
// challenges parsed before the error.
func parseChallenges(header string) []authChallenge {
	var out []authChallenge
	l := lexer{s: header}
	for {
		l.skip(" \t,")
		name := l.token()
		if name == "" {
			return out
		}
		l.skip(" \t")
		if l.peek() != '=' || len(out) == 0 {
			// A new challenge: name is its scheme.
			out = append(out, authChallenge{scheme: name, params: map[string]string{}})
			continue
		}
		l.pos++
		l.skip(" \t")
		value, ok := l.value()
		if !ok {
			return out
		}
		out[len(out)-1].params[strings.ToLower(name)] = value
	}
}

// lexer reads a header value left to right.
type lexer struct {
	s   string
	pos int
}

func (l *lexer) done() bool { return l.pos >= len(l.s) }

func (l *lexer) peek() byte {
	if l.done() {
		return 0
	}
	return l.s[l.pos]
}

func (l *lexer) skip(chars string) {
	for !l.done() && strings.IndexByte(chars, l.s[l.pos]) >= 0 {
		l.pos++
	}
}

// token reads an RFC 9110 token.
func (l *lexer) token() string {
	start := l.pos
	for !l.done() && isTokenChar(l.s[l.pos]) {
		l.pos++
	}
	return l.s[start:l.pos]
}

// value reads a token or a quoted string (with backslash escapes).
func (l *lexer) value() (string, bool) {
	if l.peek() != '"' {
		v := l.token()
		return v, v != ""
	}
	l.pos++
	var b strings.Builder
	for !l.done() {
		c := l.s[l.pos]
		l.pos++
		switch c {
		case '"':
			return b.String(), true
		case '\\':
			if l.done() {
				return "", false
			}
			b.WriteByte(l.s[l.pos])
			l.pos++
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
