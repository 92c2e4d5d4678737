package stack

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// The log scan: after a package's tests, Main reads every container's whole
// output and fails the run if any line holds a token, a secret or a
// password (DESIGN.md: "Raw tokens and secrets are never logged"). It looks
// for two things: values it knows (the demo seed's credentials, the stack's
// own database password and key-encryption key) and shapes that are
// credentials whatever their value (JWTs, the issuer's opaque codes and
// refresh tokens, Authorization headers, secret form fields, passwords in
// URLs, session cookies, private keys). Identifiers that are fine to log
// (jti, kid, trace_id, grant and session ids, decision ids) have none of
// these shapes. A hit is reported with the secret replaced by [REDACTED],
// so the CI log does not leak it either.

// redacted replaces every secret in the lines the scan prints.
const redacted = "[REDACTED]"

// maxReportedLine bounds a reported line, after redaction.
const maxReportedLine = 1000

// knownSecret is a value that must never appear in a container's output.
type knownSecret struct {
	// kind says what it is, for the report; never the value itself.
	kind  string
	value string
}

// demoSecrets are the credentials of the demo seed (DESIGN.md, "Demo
// seed") and of the stack itself. The e2e module cannot import the
// services' internal packages, so they are restated here;
// TestDemoSecretsMatchTheSeed reads the demo seeds' sources and fails when
// a secret there is missing here, or a secret here is gone from there.
func demoSecrets() []knownSecret {
	//nolint:gosec // G101: these are the published demo credentials, listed so that the scan finds them.
	return []knownSecret{
		// services/issuer/internal/demoseed/demoseed.go, clientSpecs: the
		// demo clients' secrets (support-console's and support-export's
		// also in services/support/internal/demoseed/demoseed.go).
		{"client secret of reporting-job", "reporting-job-secret"},
		{"client secret of billing-bot", "billing-bot-secret"},
		{"client secret of support-console", "support-console-secret"},
		{"client secret of support-export", "support-export-secret"},
		{"client secret of gateway", "gateway-secret"},
		{"client secret of issuer-admin", "issuer-admin-secret"},
		{"client secret of policy-admin", "policy-admin-secret"},
		// services/issuer/internal/demoseed/demoseed.go, Users: passwords
		// and base32 TOTP secrets of the demo users.
		{"password of alice", "alice-demo-password"},
		{"password of bob", "bob-demo-password"},
		{"password of carol", "carol-demo-password"},
		{"password of sam", "sam-demo-password"},
		{"TOTP secret of alice", "JBSWY3DPEHPK3PXPALICE234"},
		{"TOTP secret of carol", "JBSWY3DPEHPK3PXPCAROL234"},
		{"TOTP secret of sam", "JBSWY3DPEHPK3PXPSAM23456"},
		// stack.go: the stack's Postgres password.
		{"database password", dbPassword},
	}
}

// secrets returns what the scan of this stack looks for by value: the demo
// secrets and the issuer's key-encryption key, which Start makes up, in
// every encoding a log line could carry it in.
func (s *Stack) secrets() []knownSecret {
	out := demoSecrets()
	if len(s.kek) == 0 {
		return out
	}
	const kind = "issuer key-encryption key"
	for _, v := range []string{
		string(s.kek),
		hex.EncodeToString(s.kek),
		base64.StdEncoding.EncodeToString(s.kek),
		base64.RawStdEncoding.EncodeToString(s.kek),
		base64.URLEncoding.EncodeToString(s.kek),
		base64.RawURLEncoding.EncodeToString(s.kek),
	} {
		out = append(out, knownSecret{kind, v})
	}
	return out
}

// envSecrets returns the values that opts (WithEnv) give to variables
// named for a secret or a password, other than the path of a file that
// holds one: a package that configures a secret of its own gets it
// scanned for too.
func envSecrets(opts []Option) []knownSecret {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var out []knownSecret
	for _, service := range slices.Sorted(maps.Keys(o.env)) {
		for _, name := range slices.Sorted(maps.Keys(o.env[service])) {
			if (strings.Contains(name, "SECRET") || strings.Contains(name, "PASSWORD")) && !strings.HasSuffix(name, "_FILE") {
				out = append(out, knownSecret{"value of " + name, o.env[service][name]})
			}
		}
	}
	return out
}

// pattern finds a kind of credential by its shape.
type pattern struct {
	kind string
	// maybe is a fast test of the line, lowered (asciiLower): re is tried
	// only on a line where it holds, since most lines hold none of the
	// words or shapes that the expressions look for.
	maybe func(lower string) bool
	re    *regexp.Regexp
	// group is the submatch that is the secret, redacted in the report
	// (0: the whole match). The rest of the match is context, such as the
	// name of a form field, and stays readable.
	group int
	// accept, if set, vets a match (the submatch indexes of re in line):
	// false means the match is not a credential after all.
	accept func(line string, m []int) bool
}

// b64url is a run of base64url characters (RFC 4648 section 5), which
// JWTs and the issuer's opaque tokens are made of.
const b64url = `[A-Za-z0-9_-]`

// The names of form fields, query parameters and JSON members whose value
// is a credential: RFC 6749/7009/7636/7662/8693/7523 parameters, OIDC's
// id_token_hint and logout_token, the issuer's login form (password, and
// code for the TOTP code) and its CSRF token. "code" is left out of JSON
// members, where the services' access log uses it for the Connect code;
// Authorization headers and private keys have patterns of their own.
const (
	formSecretNames = `client_secret|password|passwd|secret|code_verifier|code|otp|totp|csrf_token|` +
		`token|access_token|refresh_token|id_token|id_token_hint|logout_token|subject_token|actor_token|` +
		`client_assertion|assertion`
	jsonSecretNames = `client_secret|password|passwd|secret|code_verifier|otp|totp|totp_secret|csrf_token|` +
		`token|access_token|refresh_token|id_token|id_token_hint|logout_token|subject_token|actor_token|` +
		`client_assertion|assertion`
)

// q is an optional quote, as a key or value appears in JSON, in a JSON
// string inside a JSON log line (\"), or in a quoted log value.
const q = `(?:\\?["'])?`

// patterns returns the shapes the scan looks for.
func patterns() []pattern {
	return []pattern{
		{
			// A JWS or JWE compact serialisation: access, ID and logout
			// tokens, client assertions, DPoP proofs. The header is a JSON
			// object, so it starts with eyJ ({"). A JWS needs a payload;
			// a JWE with an empty encrypted key has five parts.
			kind:  "JWT",
			maybe: anyOf("eyj"),
			re:    regexp.MustCompile(`eyJ` + b64url + `+\.` + b64url + `*\.` + b64url + `*(?:\.` + b64url + `*\.` + b64url + `*)?`),
			accept: func(line string, m []int) bool {
				parts := strings.Split(line[m[0]:m[1]], ".")
				return parts[1] != "" || len(parts) == 5
			},
		},
		// The issuer's authorization codes and refresh tokens (and access
		// tokens, were they opaque): fosite's HMAC strategy, ory_<type>_
		// then <key>.<signature> (services/issuer/internal/token). Eight
		// characters are enough: a truncated token is still a leak.
		{kind: "authorization code (ory_ac_)", maybe: anyOf("ory_ac_"), re: regexp.MustCompile(`ory_ac_` + b64url + `{8,}(?:\.` + b64url + `*)?`)},
		{kind: "refresh token (ory_rt_)", maybe: anyOf("ory_rt_"), re: regexp.MustCompile(`ory_rt_` + b64url + `{8,}(?:\.` + b64url + `*)?`)},
		{kind: "opaque access token (ory_at_)", maybe: anyOf("ory_at_"), re: regexp.MustCompile(`ory_at_` + b64url + `{8,}(?:\.` + b64url + `*)?`)},
		{
			// The same without the prefix: 32 random bytes, a dot, and
			// their HMAC-SHA512/256, each base64url without padding.
			kind:   "opaque OAuth token (fosite key.signature)",
			maybe:  hasDottedRun,
			re:     regexp.MustCompile(b64url + `{43}\.` + b64url + `{43}`),
			accept: standsAlone,
		},
		{
			// An Authorization header, whatever its value.
			kind:  "Authorization header",
			maybe: anyOf("authorization"),
			re:    regexp.MustCompile(`(?i)\b(?:proxy-)?authorization` + q + `\s*[:=]\s*(?:\[\s*)?` + q + `(?:bearer|basic|dpop|digest|negotiate|token)\s+([^\s"'\\,\]]+)`),
			group: 1,
		},
		{
			// A bearer or DPoP-bound token (RFC 6750 token68, RFC 9449)
			// after its scheme, outside a header. Sixteen characters
			// at least, so prose ("a Bearer token") is not one.
			kind:   "Bearer credential",
			maybe:  anyOf("bearer", "dpop"),
			re:     regexp.MustCompile(`(?i)\b(?:bearer|dpop)\s+([A-Za-z0-9\-._~+/]{16,}=*)`),
			group:  1,
			accept: notAuthParam,
		},
		{
			// Basic credentials (RFC 7617): base64 of "user-id:password".
			kind:   "Basic credentials",
			maybe:  anyOf("basic"),
			re:     regexp.MustCompile(`(?i)\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})`),
			group:  1,
			accept: isBasicCredentials,
		},
		{
			// name=value in a form body, a query string or logfmt.
			kind:   "secret form or query parameter",
			maybe:  anyOf(suffixed(formSecretNames, "=")...),
			re:     regexp.MustCompile(`(?i)(?:^|[^A-Za-z0-9_])(?:` + formSecretNames + `)=([^&\s"'\\,;)\]}]+)`),
			group:  1,
			accept: notPlaceholder,
		},
		{
			// "name": "value" in JSON, also JSON inside a JSON string.
			kind:   "secret JSON member",
			maybe:  anyOf(suffixed(jsonSecretNames, "")...),
			re:     regexp.MustCompile(`(?i)\\?"(?:` + jsonSecretNames + `)\\?"\s*:\s*\\?"([^"\\]+)\\?"`),
			group:  1,
			accept: notPlaceholder,
		},
		{
			// The private exponent of a JWK (RFC 7518 section 6.2.2.1 and
			// 6.3.2.1): a private key in JSON.
			kind:  "private JWK",
			maybe: anyOf(`"d"`, `\"d\"`),
			re:    regexp.MustCompile(`\\?"d\\?"\s*:\s*\\?"(` + b64url + `{20,})\\?"`),
			group: 1,
		},
		{
			// scheme://user:password@host (a database URL, say).
			kind:   "password in URL",
			maybe:  anyOf("://"),
			re:     regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@"'\\]+:([^/\s@"'\\]+)@`),
			group:  1,
			accept: notPlaceholder,
		},
		{
			// The issuer's browser and login session cookies
			// (services/issuer/internal/interaction), with or without
			// their __Host- prefix.
			kind:  "issuer session cookie",
			maybe: anyOf("gatehouse-session=", "gatehouse-browser="),
			re:    regexp.MustCompile(`(?i)gatehouse-(?:session|browser)=([^;\s"'\\,]+)`),
			group: 1,
		},
		{
			// A Cookie or Set-Cookie header with a value.
			kind:   "cookie header",
			maybe:  anyOf("cookie"),
			re:     regexp.MustCompile(`(?i)\b(?:set-)?cookie` + q + `\s*[:=]\s*(?:\[\s*)?` + q + `[A-Za-z0-9_.\-]+=([^;\s"'\\,]+)`),
			group:  1,
			accept: notPlaceholder,
		},
		{
			// A private key in PEM, to the end of the key or of the line.
			kind:  "private key (PEM)",
			maybe: anyOf("private key-----"),
			re:    regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`),
		},
	}
}

// anyOf returns a test of whether a lowered line contains one of needles.
func anyOf(needles ...string) func(string) bool {
	return func(lower string) bool {
		return slices.ContainsFunc(needles, func(n string) bool { return strings.Contains(lower, n) })
	}
}

// suffixed returns the names of an alternation ("a|b"), lowered, each
// followed by suffix.
func suffixed(names, suffix string) []string {
	out := strings.Split(asciiLower(names), "|")
	for i := range out {
		out[i] += suffix
	}
	return out
}

// hasDottedRun reports whether line has 43 or more base64url characters in
// a row followed by a dot: what a fosite token starts with.
func hasDottedRun(line string) bool {
	run := 0
	for i := range len(line) {
		switch c := line[i]; {
		case c == '.' && run >= 43:
			return true
		case c == '_' || c == '-' || isAlnum(c):
			run++
		default:
			run = 0
		}
	}
	return false
}

// standsAlone accepts a match that is not part of a longer run of base64url
// characters and dots.
func standsAlone(line string, m []int) bool {
	inRun := func(c byte) bool {
		return c == '.' || c == '_' || c == '-' || isAlnum(c)
	}
	return (m[0] == 0 || !inRun(line[m[0]-1])) && (m[1] == len(line) || !inRun(line[m[1]]))
}

// notAuthParam rejects an auth-param that only looks like a token68, such as
// error_description="..." in a WWW-Authenticate challenge.
func notAuthParam(line string, m []int) bool {
	if !strings.HasSuffix(line[m[2]:m[3]], "=") || m[1] == len(line) {
		return true
	}
	c := line[m[1]]
	return c != '"' && c != '\'' && c != '\\' && !isAlnum(c)
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// isBasicCredentials accepts base64 that decodes to text with a colon.
func isBasicCredentials(line string, m []int) bool {
	enc := line[m[2]:m[3]]
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(enc); err != nil {
			return false
		}
	}
	return utf8.Valid(b) && bytes.IndexByte(b, ':') >= 0
}

// placeholder matches what stands in for a secret that was left out.
var placeholder = regexp.MustCompile(`(?i)^(?:x+|\*+|•+|\.\.\.|…|\[?redacted\]?|<redacted>|\[?hidden\]?|<hidden>|null|nil|none)$`)

// notPlaceholder accepts a value that is not a placeholder for one.
func notPlaceholder(line string, m []int) bool {
	return !placeholder.MatchString(line[m[2]:m[3]])
}

// logScanner finds credentials in containers' output.
type logScanner struct {
	patterns []pattern
	// secrets are the known values, lowered (asciiLower): they are found
	// whatever their case.
	secrets []knownSecret
}

// newLogScanner returns a scanner for the patterns and the given values.
func newLogScanner(secrets []knownSecret) *logScanner {
	s := &logScanner{patterns: patterns()}
	for _, k := range secrets {
		// A short value would be found by chance; the list has none.
		if len(k.value) >= 8 {
			s.secrets = append(s.secrets, knownSecret{k.kind, asciiLower(k.value)})
		}
	}
	return s
}

// logHit is a line of a container's output that holds a credential.
type logHit struct {
	service string
	// line is the line number in the service's output, from 1.
	line int
	// kinds says what the credentials look like.
	kinds []string
	// text is the line with every credential replaced by redacted.
	text string
}

func (h logHit) String() string {
	return fmt.Sprintf("%s line %d: %s: %s", h.service, h.line, strings.Join(h.kinds, ", "), h.text)
}

// scanLine returns what kinds of credential line holds, and line with
// each of them redacted.
func (s *logScanner) scanLine(line string) (kinds []string, clean string) {
	type span struct{ start, end int }
	var spans []span
	found := func(kind string, start, end int) {
		if !slices.Contains(kinds, kind) {
			kinds = append(kinds, kind)
		}
		spans = append(spans, span{start, end})
	}
	lower := asciiLower(line)
	for _, p := range s.patterns {
		if !p.maybe(lower) {
			continue
		}
		for _, m := range p.re.FindAllStringSubmatchIndex(line, -1) {
			if p.accept == nil || p.accept(line, m) {
				found(p.kind, m[2*p.group], m[2*p.group+1])
			}
		}
	}
	for _, k := range s.secrets {
		for from := 0; ; {
			i := strings.Index(lower[from:], k.value)
			if i < 0 {
				break
			}
			found(k.kind, from+i, from+i+len(k.value))
			from += i + len(k.value)
		}
	}
	if len(spans) == 0 {
		return nil, line
	}
	// Redact the union of the spans, left to right.
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	merged := []span{spans[0]}
	for _, sp := range spans[1:] {
		if last := &merged[len(merged)-1]; sp.start <= last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		merged = append(merged, sp)
	}
	var out strings.Builder
	pos := 0
	for _, sp := range merged {
		out.WriteString(line[pos:sp.start])
		out.WriteString(redacted)
		pos = sp.end
	}
	out.WriteString(line[pos:])
	return kinds, out.String()
}

// scan scans one service's output, line by line. It returns the hits and
// the number of lines scanned.
func (s *logScanner) scan(service string, output []byte) (hits []logHit, lines int) {
	for n, line := range splitLines(output) {
		lines++
		if kinds, clean := s.scanLine(line); kinds != nil {
			hits = append(hits, logHit{service: service, line: n + 1, kinds: kinds, text: truncate(clean, maxReportedLine)})
		}
	}
	return hits, lines
}

// redact returns output with every credential in it redacted, for printing.
func (s *logScanner) redact(output []byte) string {
	var out strings.Builder
	for _, line := range splitLines(output) {
		_, clean := s.scanLine(line)
		out.WriteString(clean)
		out.WriteByte('\n')
	}
	return out.String()
}

// scanLogs scans the output of every service (logs, by service name). It
// returns whether the scan passed, and its report: a summary line, and a
// line for each hit. readErr is the error of reading the output: a service
// whose output could not be read fails the scan, since nothing can be said
// of it.
func scanLogs(s *logScanner, logs map[string][]byte, readErr error) (report string, ok bool) {
	var hits []logHit
	total := 0
	var counts []string
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		h, n := s.scan(name, logs[name])
		hits = append(hits, h...)
		total += n
		counts = append(counts, fmt.Sprintf("%s %d", name, n))
	}
	scanned := fmt.Sprintf("%d lines (%s)", total, strings.Join(counts, ", "))
	var b strings.Builder
	if readErr != nil {
		fmt.Fprintf(&b, "e2e: log scan: cannot read every container's output, so the scan cannot vouch for it: %v\n", readErr)
	}
	if len(hits) == 0 {
		fmt.Fprintf(&b, "e2e: log scan: no token, secret or password in %s\n", scanned)
		return b.String(), readErr == nil
	}
	fmt.Fprintf(&b, "e2e: log scan: %d of %s hold a token, secret or password (redacted below); services must never log them:\n",
		len(hits), scanned)
	for _, h := range hits {
		fmt.Fprintf(&b, "e2e: log scan: %s\n", h)
	}
	return b.String(), false
}

// splitLines splits output into lines, without their line endings.
func splitLines(output []byte) []string {
	text := strings.TrimSuffix(string(output), "\n")
	if text == "" {
		return nil
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// asciiLower lowers ASCII letters only, so that offsets in the result are
// offsets in s (strings.ToLower may change the length of non-ASCII text).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// truncate shortens s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
