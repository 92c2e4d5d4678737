package browser_test

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse/gatehouse/e2e/browser"
)

// TestFormPostIsSameOriginWithCookie proves the browser the suites drive
// behaves as a user's would where the issuer's pages depend on it: a cookie
// set by a page comes back with the form it served, the form post carries
// Origin and Sec-Fetch-Site: same-origin, and a 303 after the post is
// followed to the next page.
func TestFormPostIsSameOriginWithCookie(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	type post struct{ origin, site, cookie, field string }
	posts := make(chan post, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "s1", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		fmt.Fprint(w, `<!doctype html><form id="f" method="post" action="/submit">`+
			`<input name="field"><button id="go" type="submit">Go</button></form>`)
	})
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Cookie("session")
		p := post{origin: r.Header.Get("Origin"), site: r.Header.Get("Sec-Fetch-Site"), field: r.PostFormValue("field")}
		if c != nil {
			p.cookie = c.Value
		}
		select {
		case posts <- p:
		default:
		}
		http.Redirect(w, r, "/done", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><p id="done">`+html.EscapeString(r.URL.Path)+`</p>`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tab, stop, err := browser.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	if err := chromedp.Do(tab,
		chromedp.Navigate(srv.URL+"/form"),
		chromedp.SendKeys(chromedp.CSS(`#f input[name="field"]`), "typed"),
		chromedp.Click(chromedp.ID("go")),
		chromedp.WaitVisible(chromedp.ID("done")),
	); err != nil {
		t.Fatalf("%v\n%s", err, browser.Page(tab))
	}
	var got post
	select {
	case got = <-posts:
	case <-ctx.Done():
		t.Fatal("the form was never posted")
	}
	want := post{origin: srv.URL, site: "same-origin", cookie: "s1", field: "typed"}
	if got != want {
		t.Fatalf("post = %+v, want %+v", got, want)
	}
	location, err := chromedp.Run(tab, chromedp.Location())
	if err != nil || !strings.HasSuffix(location, "/done") {
		t.Fatalf("location after the post = %q, %v", location, err)
	}
}

// TestStartWithoutChromiumFails shows the error a machine without Chromium
// gets: ErrNoChromium, which names the package to install.
func TestStartWithoutChromiumFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, _, err := browser.Start(t.Context(), t.TempDir())
	if !errors.Is(err, browser.ErrNoChromium) || !strings.Contains(err.Error(), "apt-get install -y chromium") {
		t.Fatalf("err = %v, want ErrNoChromium naming the package", err)
	}
}
