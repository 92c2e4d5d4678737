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
stack (through the gateway; the OAuth flow scenarios to the issuer) and
requires exactly the outcome below: the HTTP status, the Connect error code
and ` + "`google.rpc.ErrorInfo`" + ` reason code (see
[reason codes](../reference/reason-codes.md)) or the RFC 6749 error code
(with the issuer's ` + "`reason_code`" + ` where a token exchange is refused by
policy), and where the request tries to change something, that it is the same
before and after. Where the stack accepts the request, the suite checks that the attack
achieved nothing. No answer may echo the token that was sent. Genuine
requests of the same clients, users and procedures (the suite's controls)
must succeed first, so a refusal below comes from the attack.
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
	parts := []string{fmt.Sprintf("%d %s", o.Status, http.StatusText(o.Status))}
	if o.Code != "" {
		parts[0] += fmt.Sprintf(", `%s`", o.Code)
	}
	if o.OAuthError != "" {
		parts[0] += fmt.Sprintf(", OAuth error `%s`", o.OAuthError)
	}
	if o.Reason != "" {
		parts = append(parts, fmt.Sprintf("reason `%s`", o.Reason))
	}
	if o.Challenge != "" {
		parts = append(parts, fmt.Sprintf("`WWW-Authenticate: Bearer %s`", o.Challenge))
	}
	if o.Location == "" && o.Code == "" && o.OAuthError == "" && o.Status >= 400 {
		parts = append(parts, "no redirect")
	}
	if o.Location != "" {
		parts = append(parts, fmt.Sprintf("to `%s`, nothing forwarded", o.Location))
	}
	if state != nil {
		parts = append(parts, "unchanged: "+state.Name)
	}
	if verify != nil {
		parts = append(parts, verify.Name)
	}
	return strings.Join(parts, "; ")
}

func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
