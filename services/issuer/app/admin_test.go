package app_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

func adminRequest(t *testing.T, is *issuer, method, path, id, secret string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, is.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		req.SetBasicAuth(id, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, body
}

func TestAdminKeyRotation(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	before := servedJWKS(t, is)

	for _, tc := range []struct {
		name, id, secret string
		want             int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong secret", "issuer-admin", "nope", http.StatusUnauthorized},
		{"client without keys:admin", "reporting-job", "reporting-job-secret", http.StatusForbidden},
	} {
		if status, body := adminRequest(t, is, http.MethodPost, "/admin/keys/rotate", tc.id, tc.secret); status != tc.want || body["error"] == nil {
			t.Errorf("%s: %d %v, want %d with an error", tc.name, status, body, tc.want)
		}
	}
	if after := servedJWKS(t, is); len(after.Keys) != len(before.Keys) {
		t.Fatal("a refused rotation changed the key set")
	}

	status, body := adminRequest(t, is, http.MethodPost, "/admin/keys/rotate", "issuer-admin", "issuer-admin-secret")
	kid, _ := body["rotated"].(string)
	if status != http.StatusOK || kid == "" {
		t.Fatalf("rotate: %d %v", status, body)
	}
	var published []string
	for _, k := range servedJWKS(t, is).Keys {
		published = append(published, k.KeyID)
	}
	if !slices.Contains(published, kid) || len(published) != len(before.Keys)+1 {
		t.Fatalf("JWKS %v after rotating to %s (before: %d keys)", published, kid, len(before.Keys))
	}
	// A second rotation right away is refused: each key stays in the JWKS
	// for hours.
	if status, body := adminRequest(t, is, http.MethodPost, "/admin/keys/rotate", "issuer-admin", "issuer-admin-secret"); status != http.StatusTooManyRequests {
		t.Fatalf("immediate second rotation: %d %v, want 429", status, body)
	}
	status, body = adminRequest(t, is, http.MethodGet, "/admin/keys", "issuer-admin", "issuer-admin-secret")
	keys, _ := body["keys"].([]any)
	if status != http.StatusOK || len(keys) != len(published) {
		t.Fatalf("list: %d %v", status, body)
	}
	first, _ := keys[0].(map[string]any)
	if first["kid"] != kid || first["state"] != "pending" {
		t.Errorf("newest key = %v, want %s pending", first, kid)
	}
}
