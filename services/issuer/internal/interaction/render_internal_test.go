package interaction

import "testing"

func TestFormActionSource(t *testing.T) {
	t.Parallel()
	tests := []struct{ raw, want string }{
		{"http://127.0.0.1:5555/callback", "http://127.0.0.1:5555"},
		{"https://app.example.com/cb?x=1", "https://app.example.com"},
		{"HTTPS://App.Example.com:8443/cb", "https://App.Example.com:8443"},
		{"http://[::1]:5555/callback", "http:"}, // CSP cannot name an IPv6 literal
		{"com.example.app:/oauth2redirect", "com.example.app:"},
		{"javascript:alert(1)", ""},
		{"data:text/html,x", ""},
		{"", ""},
		{"/relative", ""},
		{"http://a b/", ""},
		{"http://host;script-src *;/", ""},
		{"http://user:pw@host.example/cb", "http://host.example"},
		{"1http://x/", ""},
	}
	for _, tc := range tests {
		if got := formActionSource(tc.raw); got != tc.want {
			t.Errorf("formActionSource(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}
