// Package browser runs Debian's Chromium headless under chromedp, for the
// end-to-end suites that must prove a flow in a real browser: its cookies,
// redirects, form posts and the Origin and Sec-Fetch-* headers it sends.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/chromedp/chromedp"
)

// Command is the browser's command: Debian's chromium package installs it
// as /usr/bin/chromium.
const Command = "chromium"

// ErrNoChromium means Chromium is not installed. The suites fail on it,
// never skip: .ci/run installs the package.
var ErrNoChromium = errors.New("chromium is not installed: install Debian's chromium package (apt-get install -y chromium); .ci/run installs it on CI")

// Start starts a headless Chromium whose profile lives in userDataDir (give
// it a fresh empty directory: no cookies or saved state from an earlier
// run) and returns a chromedp context for its first tab. The browser runs
// until ctx ends or stop is called; stop waits for its process to exit.
// Derive a context with a timeout from the tab's context for each step.
func Start(ctx context.Context, userDataDir string) (tab context.Context, stop context.CancelFunc, err error) {
	path, err := exec.LookPath(Command)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%w)", ErrNoChromium, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(userDataDir),
		// CI runs as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Everything a test visits is on this machine.
		chromedp.Flag("no-proxy-server", true),
	)
	allocCtx, stopAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, stopTab := chromedp.NewContext(allocCtx)
	stop = func() {
		stopTab()
		stopAlloc()
	}
	// An empty Run starts the browser, so a browser that cannot start is
	// reported here rather than at the first step. It runs on the tab's own
	// context: a deadline on the first Run would end the browser with it, so
	// ctx bounds the start.
	if err := chromedp.Do(tab); err != nil {
		stop()
		return nil, nil, fmt.Errorf("start %s: %w", path, err)
	}
	return tab, stop, nil
}

// Page describes the tab's current page for a failure message: its URL and
// visible text (never its HTML, whose hidden fields hold CSRF tokens). It
// uses its own short deadline, so it works after a step timed out.
func Page(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("no page: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		return fmt.Sprintf("page at %q (no text: %v)", location, err)
	}
	return fmt.Sprintf("page at %q:\n%s", location, text)
}
