package stepup

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse/gatehouse/e2e/browser"
	"github.com/gatehouse/gatehouse/e2e/stack"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// TestStepUpDemoClient is issue 6's whole dance, with the demo client
// (deploy/demo/cmd/stepup) as a subprocess and alice in Chromium:
//
//  1. a fresh sign-in (password, TOTP code, consent) approves a 25,000.00
//     invoice at once: no challenge;
//  2. more than max_age later her browser session signs her in to the
//     client again without a page, with the old auth_time; approving a
//     second 25,000.00 invoice is challenged (401, RFC 9470); the client
//     re-authorizes with acr_values=mfa and max_age, the issuer asks for
//     her password and code again, and the retry succeeds.
func TestStepUpDemoClient(t *testing.T) {
	shortMaxAge(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	fresh := createInvoice(t, largeAmount, "Initech (approved fresh)")
	stepUp := createInvoice(t, largeAmount, "Initech (approved after a step-up)")
	proxy := issuerProxy(t)
	b := newBrowser(t)
	alice := user{"alice", alicePassword, aliceTOTPSecret}

	// 1. Sign in and approve at once.
	run1 := startStepUpCLI(ctx, t, proxy, fresh)
	b.signIn(ctx, run1.nextURL(ctx, t), alice, true)
	out1 := run1.wait(t)
	signIns1 := signInsOf(out1)
	if len(signIns1) != 1 || signIns1[0].subject != "alice" || signIns1[0].acr != "mfa" {
		t.Fatalf("first run: sign-ins %+v, want one of alice with acr mfa:\n%s", signIns1, out1)
	}
	if strings.Contains(out1, "step-up challenge") {
		t.Fatalf("first run: a fresh MFA sign-in was challenged:\n%s", out1)
	}
	checkApproved(t, out1, fresh)

	// 2. Past max_age: challenged, steps up, succeeds.
	waitUntil(ctx, t, signIns1[0].authTime.Add((maxAge+1)*time.Second))
	run2 := startStepUpCLI(ctx, t, proxy, stepUp)
	first := run2.nextURL(ctx, t)
	if q := query(t, first); q.Has("acr_values") || q.Has("max_age") || q.Has("prompt") {
		t.Fatalf("the first authorization asks for acr_values, max_age or prompt: %s", first)
	}
	b.step("the browser session signs alice in without a page",
		chromedp.Navigate(browserURL(t, first)), chromedp.WaitVisible(chromedp.ID("signed-in")))
	second := run2.nextURL(ctx, t)
	if q := query(t, second); q.Get("acr_values") != "mfa" || q.Get("max_age") != fmt.Sprint(maxAge) || q.Has("prompt") ||
		q.Get("client_id") != webClientID || q.Get("code_challenge_method") != "S256" {
		t.Fatalf("the step-up authorization URL %s: want client_id %s, acr_values=mfa, max_age=%d, S256, no prompt", second, webClientID, maxAge)
	}
	b.signIn(ctx, second, alice, false) // the consent of step 1 covers the scopes
	out2 := run2.wait(t)
	t.Logf("the demo client's output, first run:\n%s\nsecond run:\n%s", out1, out2)

	signIns2 := signInsOf(out2)
	if len(signIns2) != 2 {
		t.Fatalf("second run: sign-ins %+v, want two:\n%s", signIns2, out2)
	}
	if old := signIns2[0]; old.subject != "alice" || old.acr != "mfa" || !old.authTime.Equal(signIns1[0].authTime) {
		t.Errorf("second run, first sign-in %+v: want alice, mfa, the session's auth_time %v", old, signIns1[0].authTime)
	}
	if up := signIns2[1]; up.subject != "alice" || up.acr != "mfa" || !up.authTime.After(signIns1[0].authTime.Add(maxAge*time.Second)) {
		t.Errorf("second run, step-up sign-in %+v: want alice, mfa, a new auth_time", up)
	}
	inOrder(t, out2,
		`^approving `+regexp.QuoteMeta(stepUp)+` \.\.\.$`,
		`^step-up challenge: unauthenticated$`,
		`^  WWW-Authenticate: Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=`+fmt.Sprint(maxAge)+`$`,
		fmt.Sprintf(`^  it asks for acr_values=mfa max_age=%d; this sign-in has acr "mfa" and is \d+s old$`, maxAge),
		fmt.Sprintf(`^re-authorizing with acr_values=mfa max_age=%d$`, maxAge),
		`^open this URL: `,
		`^signed in as alice: `,
		`^retrying the approval with the new token \.\.\.$`,
	)
	checkApproved(t, out2, stepUp)
}

// user is a demo user who signs in at the issuer's pages.
type user struct {
	name, password string
	// totpSecret is set for a user enrolled in TOTP.
	totpSecret string
}

// browserTab is a headless Chromium of one test, with a fresh profile.
type browserTab struct {
	t   *testing.T
	tab context.Context
}

func newBrowser(t *testing.T) *browserTab {
	t.Helper()
	tab, stop, err := browser.Start(t.Context(), t.TempDir())
	if err != nil {
		t.Fatalf("cannot run the browser test: %v", err)
	}
	t.Cleanup(stop)
	return &browserTab{t: t, tab: tab}
}

// step runs one step of actions, each step with its own deadline.
func (b *browserTab) step(name string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\n%s", name, err, browser.Page(b.tab))
	}
}

// signIn opens authURL and answers the issuer's pages as u: the login page,
// the TOTP page for a user enrolled in TOTP, the consent page when consent
// is expected, up to the client's callback page (id "signed-in").
func (b *browserTab) signIn(ctx context.Context, authURL string, u user, consent bool) {
	b.t.Helper()
	next := "signed-in"
	if consent {
		next = "consent-allow"
	}
	afterPassword := next
	if u.totpSecret != "" {
		afterPassword = "mfa-form"
	}
	b.step("open the authorization URL: the login page",
		chromedp.Navigate(browserURL(b.t, authURL)),
		chromedp.WaitVisible(chromedp.ID("login-form")),
	)
	b.step("sign in as "+u.name+" with the password",
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="username"]`), u.name),
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="password"]`), u.password),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID(afterPassword)),
	)
	if u.totpSecret != "" {
		code, err := gh.TOTPCode(ctx, u.totpSecret) // the code her app shows now
		if err != nil {
			b.t.Fatal(err)
		}
		b.step("enter the TOTP code",
			chromedp.SendKeys(chromedp.CSS(`#mfa-form input[name="code"]`), code),
			chromedp.Click(chromedp.ID("mfa-submit")),
			chromedp.WaitVisible(chromedp.ID(next)),
		)
	}
	if consent {
		b.step("allow", chromedp.Click(chromedp.ID("consent-allow")), chromedp.WaitVisible(chromedp.ID("signed-in")))
	}
}

// browserURL is an issuer URL (on its identifier http://issuer:8080) as the
// browser on the host reaches it: on the issuer's published port. Every
// later URL of the flow is relative to the issuer's pages or the client's
// loopback callback.
func browserURL(t *testing.T, issuerURL string) string {
	t.Helper()
	if !strings.HasPrefix(issuerURL, stack.IssuerID+"/") {
		t.Fatalf("%s is not on the issuer %s", issuerURL, stack.IssuerID)
	}
	return gh.IssuerURL + strings.TrimPrefix(issuerURL, stack.IssuerID)
}

func query(t *testing.T, rawURL string) url.Values {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// waitUntil waits for the clock: the policy compares auth_time with the
// request's time, so only time passing makes a sign-in too old.
func waitUntil(ctx context.Context, t *testing.T, when time.Time) {
	t.Helper()
	select {
	case <-time.After(time.Until(when)):
	case <-ctx.Done():
		t.Fatalf("waiting until %v: %v", when, ctx.Err())
	}
}

// cliProcess is a running stepup CLI.
type cliProcess struct {
	cmd *exec.Cmd
	// lines is its stdout, line by line, closed at the end.
	lines  chan string
	out    strings.Builder
	stderr bytes.Buffer
}

// startStepUpCLI runs the demo client against the stack for invoice id:
// the issuer by its identifier (through proxy), the gateway on its
// published port.
func startStepUpCLI(ctx context.Context, t *testing.T, proxy, id string) *cliProcess {
	t.Helper()
	cmd := exec.CommandContext(ctx, stepupCLI, "-issuer", stack.IssuerID, "-gateway", gh.GatewayURL, "-invoice", id, "-timeout", "3m")
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToUpper(name), "_PROXY") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HTTP_PROXY="+proxy)
	p := &cliProcess{cmd: cmd, lines: make(chan string, 100)}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the stepup CLI: %v", err)
	}
	go func() {
		defer close(p.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.lines <- s.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return p
}

// nextURL reads the output up to the next "open this URL: " line and
// returns the URL.
func (p *cliProcess) nextURL(ctx context.Context, t *testing.T) string {
	t.Helper()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the stepup CLI ended without asking for a sign-in:\n%s\nstderr:\n%s", p.out.String(), p.stderr.String())
			}
			p.out.WriteString(line + "\n")
			if u, found := strings.CutPrefix(line, "open this URL: "); found {
				return u
			}
		case <-ctx.Done():
			t.Fatalf("waiting for the stepup CLI: %v\n%s", ctx.Err(), p.out.String())
		}
	}
}

// wait reads the rest of the output, requires exit code 0 and no token in
// the output, and returns the whole stdout.
func (p *cliProcess) wait(t *testing.T) string {
	t.Helper()
	for line := range p.lines {
		p.out.WriteString(line + "\n")
	}
	err := p.cmd.Wait()
	out := p.out.String()
	if err != nil {
		t.Fatalf("the stepup CLI: %v\nstdout:\n%s\nstderr:\n%s", err, out, p.stderr.String())
	}
	// Access and ID tokens are JWTs, whose header starts with eyJ.
	if strings.Contains(out+p.stderr.String(), "eyJ") {
		t.Errorf("the stepup CLI printed a token:\n%s\n%s", out, p.stderr.String())
	}
	return out
}

// cliSignIn is one "signed in as" line of the CLI's output.
type cliSignIn struct {
	subject, acr string
	authTime     time.Time
}

var signInLine = regexp.MustCompile(`(?m)^signed in as (\S+): acr "([^"]*)", auth_time (\S+) \(\d+s ago\)$`)

func signInsOf(out string) []cliSignIn {
	var got []cliSignIn
	for _, m := range signInLine.FindAllStringSubmatch(out, -1) {
		at, err := time.Parse(time.RFC3339, m[3])
		if err != nil {
			continue
		}
		got = append(got, cliSignIn{subject: m[1], acr: m[2], authTime: at})
	}
	return got
}

// inOrder checks that out has lines matching patterns, in this order.
func inOrder(t *testing.T, out string, patterns ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	i := 0
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		for i < len(lines) && !re.MatchString(lines[i]) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("no line matching %q (after the earlier ones) in:\n%s", p, out)
		}
		i++
	}
}

// checkApproved checks the CLI reported approving id, and that the invoice
// is approved by alice.
func checkApproved(t *testing.T, out, id string) {
	t.Helper()
	inOrder(t, out, `^approved `+regexp.QuoteMeta(id)+`: customer "[^"]+", amount_cents 2500000 EUR, status INVOICE_STATUS_APPROVED, approved by alice at \S+$`)
	if inv := invoice(t, id); inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED || inv.GetApprovedBy() != "alice" {
		t.Errorf("invoice %s: status %s approved by %q, want APPROVED by alice", id, inv.GetStatus(), inv.GetApprovedBy())
	}
}
