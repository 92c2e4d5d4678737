package stack

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Test values. The JWT is a real ES256 access token's shape (header and
// claims of the issuer's profile, a made-up signature).
const (
	testJWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6IkVuMEo5NmlFTTVYUmhpajRIdUp1NVdqTWtfYnlPV0VaTmY5UEpHdjRRT3ciLCJ0eXAiOiJhdCtqd3QifQ" +
		".eyJhdWQiOlsiZ2F0ZWhvdXNlLWFwaSJdLCJjbGllbnRfaWQiOiJiaWxsaW5nLWJvdCIsImV4cCI6MTc5NTY4MjQ0MCwianRpIjoiVldYTkRFSzJTNkxLR0tCTFRBRkZWRElGUEUiLCJzdWIiOiJiaWxsaW5nLWJvdCJ9" +
		".MEUCIQDx1kR0ZPe8oB3yYV2m8Q9cJmC8qg3oZ4xk3w0kJ7p1AAIgQ0r3V8yQ6a1m0Ez2cD8nS5uVb9oX3aL7fW2hK4jR6tM"
	testKey = "EBuxSxSth6JnGJLWCdn3x2RJkRH3dv3FrAvfVltu54Y" // 43 base64url characters: fosite's token key
	testSig = "zZCS0fOYMcPIa-PK4vrGorAIddeovxYeUSMnV3H88Ko"
	testKEK = "0123456789abcdef0123456789abcdef" // 32 bytes
)

// realLines are lines the services wrote in real runs of the suites
// (rollout, stepup, flows, attacks, faults): none holds a credential.
var realLines = []string{
	`{"time":"2026-11-26T08:35:33.222643262Z","level":"INFO","msg":"access token issued","service":"issuer","client_id":"policy-admin","sub":"policy-admin","tenant":"gatehouse","grant_type":"client_credentials","scopes":["policy:admin"],"audience":["gatehouse-pdp"],"jti":"AZIBPLUXRXDWKEXHLTQTPGJLVA","exp":"2026-11-26T08:40:33.217751555Z","refresh_token":false,"id_token":false,"trace_id":"c890c871edb304a1b2c3d4e5f6a7b8c9","span_id":"8200bdda16055cd4"}`,
	`{"time":"2026-11-26T08:35:29.326717872Z","level":"INFO","msg":"signing key created","service":"issuer","event":"signing_key.created","kid":"En0J96iEM5XRhij4HuJu5WjMk_byOWEZNf9PJGv4QOw","alg":"ES256","created_at":"2026-11-26T08:35:29.325105Z","activate_at":"2026-11-26T08:35:29.325105Z"}`,
	`{"time":"2026-11-26T08:35:29.332971895Z","level":"WARN","msg":"DEV ONLY: demo seed loaded; these clients have published secrets","service":"issuer","clients":["reporting-job","billing-bot","invoice-web","support-console","support-export","gateway","issuer-admin","policy-admin"]}`,
	`{"time":"2026-11-26T08:35:29.229527605Z","level":"WARN","msg":"DEV ONLY: no -client-secret-key-file, using a random client-secret key; stored secret hashes are useless after a restart","service":"issuer"}`,
	`{"time":"2026-11-26T08:36:47.530973227Z","level":"INFO","msg":"user login","service":"issuer","event":"user.login","outcome":"mfa_required","username":"alice","reason":"missing_totp","trace_id":"dae16846268686cbadcb29487a188cc2","span_id":"440b8843b1203ed2"}`,
	`{"time":"2026-11-26T08:36:47.807096058Z","level":"INFO","msg":"user login","service":"issuer","event":"user.login","outcome":"success","username":"alice","amr":["pwd","otp","mfa"],"trace_id":"c2321120a2e2120295de8d4919dbb951","span_id":"b7e74cd23674be3c"}`,
	`{"time":"2026-11-26T08:36:47.958121204Z","level":"INFO","msg":"authorization code issued","service":"issuer","client_id":"invoice-web","sub":"alice","tenant":"acme","scopes":["openid","invoice:read","invoice:approve"],"acr":"mfa","consent_id":"AsuImkSNwhGjv8iZKpbPqolpXIkUJLVYlmUzpCHstmM","trace_id":"cd679c6f4f5a9aa39139cae5f1b48c68","span_id":"ed5dda8371e383e2"}`,
	`{"time":"2026-11-26T08:38:30.086151083Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"invalid_grant","status":400,"hint":"The refresh token was already used.","debug":"Refresh token re-use was detected. All related tokens have been revoked.","client_id":"invoice-web","grant_type":"refresh_token","trace_id":"6cec93b64359c17829df053f8465d895","span_id":"1f75fcfe0d6fc70d"}`,
	`{"time":"2026-11-26T08:39:01.226127579Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"invalid_grant","status":400,"hint":"The PKCE code challenge did not match the code verifier.","debug":"","client_id":"invoice-web","grant_type":"authorization_code","trace_id":"818c8e61349407f7599a8e203b827313","span_id":"7e3075645d92877a"}`,
	`{"time":"2026-11-26T08:39:01.242829656Z","level":"INFO","msg":"authorization request rejected","service":"issuer","error":"invalid_request","hint":"Public clients must use PKCE: send code_challenge with code_challenge_method=S256.","debug":"","client_id":"invoice-web","trace_id":"0da63a9f64b7da9afcc0f2be66828bee","span_id":"91d37f6ee402f688"}`,
	`{"time":"2026-11-26T08:39:08.08242268Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"invalid_client","status":401,"hint":"","debug":"client secret does not match","client_id":"reporting-job","grant_type":"client_credentials","trace_id":"0bc5de4473be7fb1ac76038637fbe0dc","span_id":"0d9aef6e1478cdec"}`,
	`{"time":"2026-11-26T08:39:11.397860294Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"invalid_grant","status":400,"hint":"","debug":"ticket_required: pdp DECISION_DENY (decision cd3ef541d63800937b25dcd15b8ec779, policy 2026-11-26.3)","client_id":"support-console","grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","trace_id":"d33fcfb47b5328d8e7d3bb4e948bb253","span_id":"bf8dfd1fd2873368"}`,
	`{"time":"2026-11-26T08:39:05.857567652Z","level":"WARN","msg":"revocation feed cannot read the log","service":"issuer","subscriber":"gateway","error":"issuer store: read revocations: failed to connect to ` + "`user=postgres database=issuer`" + `: 172.31.0.2:5432 (postgres): server error: FATAL: the database system is shutting down (SQLSTATE 57P03)","trace_id":"76fb67e80826b8109524c77b3612e3a6","span_id":"f3f63cd829221d9f"}`,
	`{"time":"2026-11-26T08:38:30.073052027Z","level":"INFO","msg":"token introspected","service":"issuer","client_id":"billing-bot","outcome":"active","jti":"VNNW5YP2LSREEZBM2Y77T6CQOU","token_client_id":"invoice-web","trace_id":"692d53799200fa6e1f83aeecbe1d9bd7","span_id":"b2fd6313becd7c21"}`,
	`{"time":"2026-11-26T08:39:07.883401279Z","level":"INFO","msg":"token revoked","service":"gateway","request_id":"e59da8c38f374915d142a48f70d048ea","path":"/gatehouse.invoice.v1.InvoiceService/ListInvoices","subject":"billing-bot","tenant":"acme","client_id":"billing-bot","jti":"NR623GULJRSXKMUEZI43XOY63F","trace_id":"9c38206f24793b527f9329b30eaef63f","span_id":"817c6066ca7a94ae"}`,
	`{"time":"2026-11-26T08:39:08.080087116Z","level":"INFO","msg":"token rejected","service":"gateway","request_id":"0a49a3864787a19b96a9c536c36d8a88","path":"/gatehouse.invoice.v1.InvoiceService/ListInvoices","error":"accesstoken: bad signature: go-jose/go-jose: error in cryptographic primitive","trace_id":"7bb45203d7852a40cb05fb02170ed5df","span_id":"d6ffdddb41a16c56"}`,
	`{"time":"2026-11-26T08:39:08.077168904Z","level":"INFO","msg":"denied","service":"gateway","request_id":"c4c6df00bf76d2efd513d50621041592","path":"/gatehouse.invoice.v1.InvoiceService/CreateInvoice","subject":"reporting-job","tenant":"acme","client_id":"reporting-job","decision_id":"9f03cd9200163ae9caa8fbfd4bd3ac8b","policy_version":"2026-11-26.3","decision_source":"pdp","code":"permission_denied","reason_code":"insufficient_scope","latency":3597841,"trace_id":"e16a12907d42bf8ae61c707716ea1df5","span_id":"c880f8832bc6b022"}`,
	`{"time":"2026-11-26T08:35:33.010731635Z","level":"INFO","msg":"revocation feed subscribed","service":"gateway","log_id":"2ace887d-27b5-4aa6-97dc-cd26a59e7037","after_cursor":0}`,
	`{"time":"2026-11-26T08:39:06.520112774Z","level":"INFO","msg":"postgres not ready, retrying","service":"invoice","target":"postgres@postgres:5432/invoice","attempt":1,"retry_in":100000000,"error":"failed to connect to ` + "`user=postgres database=invoice`" + `: hostname resolving error: lookup postgres on 127.0.0.11:53: no such host"}`,
	`{"time":"2026-11-26T08:35:40.253084899Z","level":"INFO","msg":"rpc","service":"invoice","procedure":"/gatehouse.invoice.v1.InvoiceService/CreateInvoice","code":"ok","latency":4278829,"trace_id":"60c45138dacf98a59169e407ffbf15f9","span_id":"1be0020b82edf6e9"}`,
	`{"time":"2026-11-26T08:39:10.965587872Z","level":"INFO","msg":"impersonation session started","service":"support","session_id":"imp_NM4ERYWG6KNMFKP7C4VMBXGM7I","ticket_id":"tkt_E4AB7WCIDUYQORUBJ5665NGXVD","tenant":"acme","customer":"bob","agent":"sam","jti":"G5GTY73NHPWRDH6XZQ2B4AJCOT","scopes":["invoice:read"],"expire_time":"2026-11-26T08:44:10Z","trace_id":"739a506221592faf2b558dbbe94c1b8c","span_id":"52c39a96c574f98a"}`,
	`{"time":"2026-11-26T08:35:34.386999916Z","level":"INFO","msg":"policy bundle refused","service":"pdp","error":"bundle is invalid: not a gzipped tarball: gzip: invalid header","trace_id":"ead157325010f7f6bc94d27834f08864","span_id":"26b9a13604c0755f"}`,
	`{"time":"2026-11-26T08:42:01.772240577Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"unsupported_grant_type","status":400,"hint":"","debug":"grant_type \"password\"","client_id":"billing-bot","grant_type":"password","trace_id":"a8c27947d801d6e1d3cbeda77428fb90","span_id":"3ead734803172f24"}`,
	`{"time":"2026-11-26T08:42:02.101620312Z","level":"INFO","msg":"token request rejected","service":"issuer","error":"invalid_grant","status":400,"hint":"","debug":"actor_token of client support-export","client_id":"support-console","grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","trace_id":"c58df6d95817cc547b7626645021593a","span_id":"73257d5fcc098e2b"}`,
	`{"time":"2026-11-26T08:42:01.690457217Z","level":"INFO","msg":"token introspected","service":"issuer","client_id":"billing-bot","outcome":"inactive","reason":"token is not a JWS in compact form","trace_id":"b567f579199c876a65bbc7a117e04d83","span_id":"682227232a66be15"}`,
	`{"time":"2026-11-26T08:42:00.996010398Z","level":"INFO","msg":"token rejected","service":"gateway","request_id":"1679f46c89b706baa100c96c374aea2c","path":"/gatehouse.invoice.v1.InvoiceService/ListInvoices","error":"accesstoken: malformed token: unexpected signature algorithm \"none\"; expected [\"ES256\"]","trace_id":"c0dbd9cb252968187a650d00bba754bb","span_id":"d8c6b9c20fb4e89a"}`,
	`{"time":"2026-11-26T08:42:01.925551045Z","level":"INFO","msg":"form rejected: cross-site, or CSRF token missing or stale","service":"issuer","path":"/consent","trace_id":"ae1495d0ff500ab9f904906f04dc6455","span_id":"2561dedb60d8ef88"}`,
	`{"time":"2026-11-26T08:42:47.201310051Z","level":"ERROR","msg":"pdp unavailable: denying","service":"invoice","request_id":"55d242b8027d25dd939d6362a599fb0d","subject":"reporting-job","tenant":"acme","action":"invoice:read","resource_id":"","error":"enforce: pdp unavailable: canceled: Post \"http://pdp:8081/gatehouse.authz.v1.DecisionService/Check\": read tcp 192.168.176.6:45472->192.168.176.4:8081: read: connection reset by peer","trace_id":"ebeb877945c593375f19d5305460ae29","span_id":"18ed9eea32dccfda"}`,
	`{"time":"2026-11-26T08:42:56.025912671Z","level":"INFO","msg":"signing key rotated on request","service":"issuer","client_id":"issuer-admin","kid":"yyG8CvFBkpRopvn0f0SmuUyyVuIP4uzfUqOb8KAMY2I","trace_id":"b67c75d2f3636af506479a7c1e22e792","span_id":"24c2c21273798210"}`,
	`2026-11-26 08:35:26 UTC [entrypoint] initializing /var/lib/postgresql/data (superuser postgres, host auth scram-sha-256)`,
	`2026-11-26 08:35:35.932 UTC [91] FATAL:  the database system is starting up`,
}

// madeUpLines are lines that no service writes today but that are fine to
// log, and look close to a credential.
var madeUpLines = []string{
	`WWW-Authenticate: Bearer error="invalid_token", error_description="The access token expired"`,
	`WWW-Authenticate: Bearer error_description="The access token expired", error="invalid_token"`,
	`{"msg":"decided","authorization":"denied","private_key":"/etc/gatehouse/key.pem"}`,
	`{"www_authenticate":"Bearer realm=\"gatehouse\", error=\"insufficient_user_authentication\", error_description=\"a stronger authentication is required\", acr_values=\"mfa\", max_age=300"}`,
	`missing Bearer token in the Authorization header`,
	`Basic authentication failed for the client`,
	`WWW-Authenticate: Basic realm="issuer"`,
	`{"msg":"postgres not ready, retrying","error":"dial postgres://postgres:xxxxx@postgres:5432/issuer: refused"}`,
	`{"msg":"config","client_secret_file":"/run/secrets/gateway","password":"[REDACTED]"}`,
	`token_type_hint=refresh_token&client_id=invoice-web`,
	`{"msg":"token revocation","client_id":"reporting-job","outcome":"revoked","token_type":"refresh_token","grant_id":"8c3e51f2-6d2a-4a43-9f44-2b7d7f1c0e11"}`,
	`{"msg":"signing key created","kid":"` + testKey + `","x5t#S256":"` + testSig + `"}`,
	`JSON Web Token header starts with eyJ.`,
	// A detached JWS (RFC 7515 appendix F) signs content sent apart: no claims.
	`{"msg":"bundle signature","jws":"eyJhbGciOiJSUzI1NiJ9..c2lnbmF0dXJl"}`,
	// Longer runs than fosite's key.signature.
	`{"digest":"x` + testKey + `.` + testSig + `x"}`,
}

func scanner(t *testing.T) *logScanner {
	t.Helper()
	s := &Stack{kek: []byte(testKEK)}
	return newLogScanner(append(s.secrets(), envSecrets([]Option{WithEnv("gateway", map[string]string{
		"GATEHOUSE_GATEWAY_REVOCATION_CLIENT_SECRET": "a-package-own-secret",
		"GATEHOUSE_GATEWAY_CLIENT_SECRET_FILE":       "/run/secrets/not-a-secret",
	})})...))
}

func TestScanFindsCredentials(t *testing.T) {
	t.Parallel()
	basic := base64.StdEncoding.EncodeToString([]byte("reporting-job:reporting-job-secret"))
	tests := []struct {
		name string
		line string
		// kind is one of the kinds the scan must report.
		kind string
		// secret must not survive in the report.
		secret string
	}{
		{"JWT in JSON", `{"msg":"verify failed","error":"bad token ` + testJWT + `"}`, "JWT", testJWT},
		{"JWT in prose", "token " + testJWT + ". Next", "JWT", testJWT},
		{"unsigned JWT", `alg none: eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.`, "JWT", "eyJzdWIiOiJhbGljZSJ9"},
		{"JWT with another payload", `eyJhbGciOiJFUzI1NiJ9.YWJjZGVm.c2ln`, "JWT", "YWJjZGVm"},
		{"JWE with no encrypted key", `eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXZpdml2.Y2lwaGVydGV4dA.dGFndGFn`, "JWT", "Y2lwaGVydGV4dA"},
		{"authorization code", `GET /callback?code=ory_ac_` + testKey + `.` + testSig + `&state=abcdefgh`, "authorization code (ory_ac_)", testKey},
		{"refresh token", `"rt":"ory_rt_` + testKey + `.` + testSig + `"`, "refresh token (ory_rt_)", testSig},
		{"truncated refresh token", `refresh ory_rt_` + testKey[:10] + `...`, "refresh token (ory_rt_)", testKey[:10]},
		{"opaque access token", `ory_at_` + testKey + `.` + testSig, "opaque access token (ory_at_)", testKey},
		{"fosite token without prefix", `lookup ` + testKey + `.` + testSig + ` failed`, "opaque OAuth token (fosite key.signature)", testKey},
		{"Authorization header", `Authorization: Bearer abc`, "Authorization header", "abc"},
		{"Authorization in JSON", `{"authorization":"DPoP zz9"}`, "Authorization header", "zz9"},
		{"Authorization in a Go header map", `map[Authorization:[Bearer q1w2e3] Content-Type:[application/json]]`, "Authorization header", "q1w2e3"},
		{"Bearer credential", `retrying with Bearer 0123456789abcdefXYZ==`, "Bearer credential", "0123456789abcdefXYZ"},
		{"Basic credentials", `Basic ` + basic, "Basic credentials", basic},
		{"Basic in a header", `Authorization: Basic ` + basic, "Authorization header", basic},
		{"client_secret in a form", `grant_type=client_credentials&client_secret=s3cr3t-value&scope=x`, "secret form or query parameter", "s3cr3t-value"},
		{"password in a form", `username=alice&password=hunter2hunter2`, "secret form or query parameter", "hunter2hunter2"},
		{"TOTP code in a form", `interaction=abc&code=123456&csrf_token=zzz`, "secret form or query parameter", "123456"},
		{"code_verifier in a form", `code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk`, "secret form or query parameter", "dBjftJeZ4CVP"},
		{"token in a form", `token=opaque-garbage-value&token_type_hint=access_token`, "secret form or query parameter", "opaque-garbage-value"},
		{"password in JSON", `{"username":"x","password":"hunter2hunter2"}`, "secret JSON member", "hunter2hunter2"},
		{"client_secret in JSON in JSON", `{"error":"body {\"client_secret\":\"s3cr3t-value\"}"}`, "secret JSON member", "s3cr3t-value"},
		{"private JWK", `{"kty":"EC","crv":"P-256","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}`, "private JWK", "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"},
		{"password in a URL", `dial postgres://postgres:hunter2hunter2@db:5432/issuer`, "password in URL", "hunter2hunter2"},
		{"session cookie", `Cookie: gatehouse-session=c2Vzc2lvbi12YWx1ZQ; theme=dark`, "issuer session cookie", "c2Vzc2lvbi12YWx1ZQ"},
		{"browser cookie with __Host-", `__Host-gatehouse-browser=YnJvd3Nlcg`, "issuer session cookie", "YnJvd3Nlcg"},
		{"cookie header", `Set-Cookie: sid=abcdef123456; Path=/; HttpOnly`, "cookie header", "abcdef123456"},
		{"PEM private key", `{"error":"bad key -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----\n"}`, "private key (PEM)", "MHcCAQEEIBkg"},
		{"database password", `pq: password "e2e-db-password" rejected`, "database password", dbPassword},
		{"KEK in hex", `kek=` + hex.EncodeToString([]byte(testKEK)), "issuer key-encryption key", hex.EncodeToString([]byte(testKEK))},
		{"KEK in base64", base64.StdEncoding.EncodeToString([]byte(testKEK)), "issuer key-encryption key", base64.RawStdEncoding.EncodeToString([]byte(testKEK))},
		{"KEK raw", "read " + testKEK, "issuer key-encryption key", testKEK},
		{"a package's own secret", `secret a-package-own-secret`, "value of GATEHOUSE_GATEWAY_REVOCATION_CLIENT_SECRET", "a-package-own-secret"},
	}
	for _, k := range demoSecrets() {
		tests = append(tests,
			struct{ name, line, kind, secret string }{k.kind, `{"msg":"login","note":"` + k.value + `"}`, k.kind, k.value},
			struct{ name, line, kind, secret string }{k.kind + " in other case", "x " + strings.ToUpper(k.value) + " y", k.kind, strings.ToUpper(k.value)})
	}
	s := scanner(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := map[string][]byte{"issuer": []byte("first line\n" + tc.line + "\nlast line\n")}
			report, ok := scanLogs(s, logs, nil)
			if ok {
				t.Fatalf("scan passed; want a hit in %q", tc.line)
			}
			if !strings.Contains(report, "issuer line 2: ") || !strings.Contains(report, tc.kind) {
				t.Errorf("report does not say issuer line 2, %s:\n%s", tc.kind, report)
			}
			if strings.Contains(report, tc.secret) {
				t.Errorf("report leaks the secret %q:\n%s", tc.secret, report)
			}
			if !strings.Contains(report, redacted) {
				t.Errorf("report has no %s:\n%s", redacted, report)
			}
			if dump := s.redact(logs["issuer"]); strings.Contains(dump, tc.secret) || !strings.HasPrefix(dump, "first line\n") {
				t.Errorf("redacted output leaks the secret or loses a line:\n%s", dump)
			}
		})
	}
}

func TestScanPassesCleanLines(t *testing.T) {
	t.Parallel()
	s := scanner(t)
	for _, line := range slices.Concat(realLines, madeUpLines) {
		if kinds, clean := s.scanLine(line); kinds != nil || clean != line {
			t.Errorf("scanLine(%q) = %v, %q; want no hit", line, kinds, clean)
		}
	}
	logs := map[string][]byte{"issuer": []byte(strings.Join(realLines, "\r\n") + "\r\n"), "pdp": nil}
	report, ok := scanLogs(s, logs, nil)
	if !ok {
		t.Fatalf("scan failed on clean lines:\n%s", report)
	}
	want := "e2e: log scan: no token, secret or password in " + strconv.Itoa(len(realLines)) + " lines (issuer " + strconv.Itoa(len(realLines)) + ", pdp 0)\n"
	if report != want {
		t.Errorf("report = %q, want %q", report, want)
	}
}

func TestScanRedactsEverySecretOfALine(t *testing.T) {
	t.Parallel()
	line := `{"msg":"x","password":"alice-demo-password","token":"` + testJWT + `","u":"postgres://postgres:e2e-db-password@postgres/x"}`
	kinds, clean := scanner(t).scanLine(line)
	for _, secret := range []string{"alice-demo-password", testJWT[:20], testJWT[len(testJWT)-20:], dbPassword} {
		if strings.Contains(clean, secret) {
			t.Errorf("redacted line %q holds %q", clean, secret)
		}
	}
	want := `{"msg":"x","password":"[REDACTED]","token":"[REDACTED]","u":"postgres://postgres:[REDACTED]@postgres/x"}`
	if clean != want {
		t.Errorf("redacted line = %q, want %q", clean, want)
	}
	for _, kind := range []string{"JWT", "secret JSON member", "password of alice", "password in URL", "database password"} {
		if !slices.Contains(kinds, kind) {
			t.Errorf("kinds %v lack %q", kinds, kind)
		}
	}
}

func TestScanFailsWhenOutputIsUnread(t *testing.T) {
	t.Parallel()
	report, ok := scanLogs(scanner(t), map[string][]byte{"issuer": []byte(realLines[0])}, errors.New("pdp logs: gone"))
	if ok {
		t.Fatal("scan passed with a container's output unread")
	}
	if !strings.Contains(report, "pdp logs: gone") {
		t.Errorf("report does not say why: %q", report)
	}
}

func TestReportedLinesAreBounded(t *testing.T) {
	t.Parallel()
	hits, lines := scanner(t).scan("gateway", []byte(`Authorization: Bearer abc `+strings.Repeat("é", 2*maxReportedLine)))
	if lines != 1 || len(hits) != 1 {
		t.Fatalf("scan = %d hits in %d lines, want 1 in 1", len(hits), lines)
	}
	if n := len(hits[0].text); n > maxReportedLine+len("…") {
		t.Errorf("reported line is %d bytes, want at most %d", n, maxReportedLine+len("…"))
	}
}

// TestDemoSecretsMatchTheSeed keeps demoSecrets honest: every secret or
// password literal of the services' demo seeds and of stack.go is in it,
// and each of its values is still in one of them.
func TestDemoSecretsMatchTheSeed(t *testing.T) {
	t.Parallel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "services", "*", "internal", "demoseed", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return strings.HasSuffix(f, "_test.go") })
	files = append(files, filepath.Join(root, "e2e", "stack", "stack.go"))
	if len(files) < 3 {
		t.Fatalf("found only %v: where did the demo seeds go?", files)
	}
	seeded := map[string]string{} // value -> file:line
	for _, f := range files {
		for value, pos := range secretLiterals(t, f) {
			seeded[value] = pos
		}
	}
	listed := map[string]bool{}
	for _, k := range demoSecrets() {
		listed[k.value] = true
	}
	for value, pos := range seeded {
		if !listed[value] {
			t.Errorf("%s: a demo secret that demoSecrets (logscan.go) does not list", pos)
		}
	}
	for _, k := range demoSecrets() {
		if _, ok := seeded[k.value]; !ok && k.value != dbPassword {
			t.Errorf("demoSecrets lists the %s, which no demo seed has any more", k.kind)
		}
	}
}

// secretName matches a Go name or environment variable that names a
// secret or a password.
var secretName = regexp.MustCompile(`(?i)secret|password`)

// secretLiterals returns the string literals of file that are the value of
// a field, a map entry, a constant or a variable named for a secret or a
// password, with where each is.
func secretLiterals(t *testing.T, file string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	add := func(name string, value ast.Expr) {
		lit, ok := value.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING || !secretName.MatchString(name) {
			return
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			t.Fatal(err)
		}
		if s != "" {
			out[s] = fset.Position(lit.Pos()).String()
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.KeyValueExpr:
			switch k := n.Key.(type) {
			case *ast.Ident:
				add(k.Name, n.Value)
			case *ast.BasicLit:
				add(k.Value, n.Value)
			}
		case *ast.ValueSpec:
			for i, name := range n.Names {
				if i < len(n.Values) {
					add(name.Name, n.Values[i])
				}
			}
		}
		return true
	})
	return out
}
