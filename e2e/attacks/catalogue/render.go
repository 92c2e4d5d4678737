package catalogue

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// Render writes the catalogue as the Markdown page
// docs/security/attack-scenarios.md, from the scenarios' static fields only.
func Render(scenarios []Scenario) []byte {
	var b bytes.Buffer
	b.WriteString(`# Attack scenarios

Generated from the catalogue in ` + "`e2e/attacks/catalogue`" + ` by
` + "`go test ./attacks/catalogue -run TestCatalogueDoc -update`" + ` (in ` + "`e2e/`" + `); do not
edit by hand. The suite ` + "`e2e/attacks`" + ` sends every scenario to the containerised
stack (through the gateway; the OAuth flow scenarios to the issuer; the
BatchCheck ones straight to the PDP) and requires exactly the outcome below:
the HTTP status, the Connect error code and ` + "`google.rpc.ErrorInfo`" + ` reason
code (see [reason codes](../reference/reason-codes.md)) or the RFC 6749 error
code (with the issuer's ` + "`reason_code`" + ` where a token exchange is refused by
policy; in the redirect to the client where the issuer refuses an
authorization request), and where the request tries to change something,
that it is the same before and after. A slow client must see the server close
its connection within the bound given. Where the stack accepts the request,
the suite checks that the attack achieved nothing. No answer may echo the
token that was sent. Genuine requests of the same clients, users and
procedures (the suite's controls) must succeed first, so a refusal below
comes from the attack.
`)
	fmt.Fprintf(&b, "\n%d scenarios.\n\n| category | scenario | reference | request | expected outcome |\n|---|---|---|---|---|\n", len(scenarios))
	for _, c := range Categories() {
		for _, s := range scenarios {
			if s.Category == c {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(string(s.Category)), cell(s.Name), cell(s.Reference), cell(s.Request),
					cell(s.Expect.describe(s.State, s.Verify)))
			}
		}
	}
	return b.Bytes()
}

// describe is the outcome in one table cell.
func (o Outcome) describe(state *State, verify *Verify) string {
	if o.Dropped > 0 {
		return strings.Join(append([]string{fmt.Sprintf("connection closed by the server within %v, after `%d %s` or no answer",
			o.Dropped, o.Status, http.StatusText(o.Status))}, extras(state, verify)...), "; ")
	}
	parts := []string{fmt.Sprintf("%d %s", o.Status, http.StatusText(o.Status))}
	if o.Code != "" {
		parts[0] += fmt.Sprintf(", `%s`", o.Code)
	}
	if o.OAuthError != "" {
		parts[0] += fmt.Sprintf(", OAuth error `%s`", o.OAuthError)
	}
	switch o.Reason {
	case "":
	case NoErrorInfo:
		parts = append(parts, "no `ErrorInfo` (the Connect library's own refusal)")
	default:
		parts = append(parts, fmt.Sprintf("reason `%s`", o.Reason))
	}
	if o.Challenge != "" {
		parts = append(parts, fmt.Sprintf("`WWW-Authenticate: Bearer %s`", o.Challenge))
	}
	if o.Location == "" && o.Code == "" && o.OAuthError == "" && o.Status >= 400 {
		parts = append(parts, "no redirect")
	}
	switch {
	case o.Location == "":
	case o.OAuthError != "":
		parts = append(parts, fmt.Sprintf("error redirect to `%s`, no code", o.Location))
	case o.Status == http.StatusTemporaryRedirect || o.Status == http.StatusPermanentRedirect:
		// The gateway's redirect to a clean path, method and body kept.
		parts = append(parts, fmt.Sprintf("to `%s`, nothing forwarded", o.Location))
	default:
		parts = append(parts, fmt.Sprintf("redirect to `%s`, no code", o.Location))
	}
	return strings.Join(append(parts, extras(state, verify)...), "; ")
}

// extras describes what is checked beyond the answer.
func extras(state *State, verify *Verify) []string {
	var parts []string
	if state != nil {
		parts = append(parts, "unchanged: "+state.Name)
	}
	if verify != nil {
		parts = append(parts, verify.Name)
	}
	return parts
}

func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
