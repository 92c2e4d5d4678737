package main

import (
	"errors"
	"reflect"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   []authChallenge
	}{
		{
			name:   "Gatehouse's step-up challenge",
			header: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`,
			want: []authChallenge{{scheme: "Bearer", params: map[string]string{
				"realm": "gatehouse", "error": "insufficient_user_authentication", "acr_values": "mfa", "max_age": "300",
			}}},
		},
		{
			name:   "RFC 9470 section 3 example, names in any case, no spaces, quoted max_age",
			header: `bearer ERROR="insufficient_user_authentication",Error_Description="A different authentication level is required",acr_values="myACR",max_age="5"`,
			want: []authChallenge{{scheme: "bearer", params: map[string]string{
				"error": "insufficient_user_authentication", "error_description": "A different authentication level is required",
				"acr_values": "myACR", "max_age": "5",
			}}},
		},
		{
			name:   "two challenges, escapes in a quoted string",
			header: `Basic realm="a \"b\" c", Bearer realm="gatehouse" , error="invalid_token"`,
			want: []authChallenge{
				{scheme: "Basic", params: map[string]string{"realm": `a "b" c`}},
				{scheme: "Bearer", params: map[string]string{"realm": "gatehouse", "error": "invalid_token"}},
			},
		},
		{
			name:   "a scheme alone",
			header: `Bearer`,
			want:   []authChallenge{{scheme: "Bearer", params: map[string]string{}}},
		},
		{
			name:   "unterminated quoted string: what came before it",
			header: `Bearer realm="gatehouse", error="insufficient_user`,
			want:   []authChallenge{{scheme: "Bearer", params: map[string]string{"realm": "gatehouse"}}},
		},
		{name: "empty", header: ``, want: nil},
		{name: "no token", header: ` , "x"`, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseChallenges(tc.header); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseChallenges(%q) =\n%v, want\n%v", tc.header, got, tc.want)
			}
		})
	}
}

func TestStepUpChallenge(t *testing.T) {
	const header = `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`
	withHeader := func(code connect.Code, h string) error {
		err := connect.NewError(code, errors.New("a stronger or more recent authentication is required"))
		err.Meta().Set("WWW-Authenticate", h)
		return err
	}
	withInfo := func(reason string, meta map[string]string) error {
		err := connect.NewError(connect.CodeUnauthenticated, errors.New("a stronger or more recent authentication is required"))
		d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: reason, Domain: "gatehouse.dev", Metadata: meta})
		if derr != nil {
			t.Fatal(derr)
		}
		err.AddDetail(d)
		return err
	}
	tests := []struct {
		name      string
		err       error
		want      challenge
		ok        bool
		malformed bool
	}{
		{name: "WWW-Authenticate", err: withHeader(connect.CodeUnauthenticated, header),
			want: challenge{header: header, acrValues: "mfa", maxAge: 300, hasMaxAge: true}, ok: true},
		{name: "ErrorInfo only (gRPC)", err: withInfo("step_up_required", map[string]string{"acr_values": "mfa", "max_age": "300", "decision_id": "d"}),
			want: challenge{acrValues: "mfa", maxAge: 300, hasMaxAge: true}, ok: true},
		{name: "acr only", err: withHeader(connect.CodeUnauthenticated, `Bearer error="insufficient_user_authentication", acr_values="mfa  phr"`),
			want: challenge{header: `Bearer error="insufficient_user_authentication", acr_values="mfa  phr"`, acrValues: "mfa phr"}, ok: true},
		{name: "max_age 0", err: withInfo("step_up_required", map[string]string{"max_age": "0"}),
			want: challenge{maxAge: 0, hasMaxAge: true}, ok: true},
		{name: "max_age not a number", err: withHeader(connect.CodeUnauthenticated, `Bearer error="insufficient_user_authentication", max_age=soon`), ok: true, malformed: true},
		{name: "negative max_age", err: withInfo("step_up_required", map[string]string{"max_age": "-1"}), ok: true, malformed: true},
		{name: "invalid token", err: withHeader(connect.CodeUnauthenticated, `Bearer realm="gatehouse", error="invalid_token"`)},
		{name: "insufficient scope", err: withHeader(connect.CodePermissionDenied, `Bearer realm="gatehouse", error="insufficient_scope", scope="invoice:approve"`)},
		{name: "permission denied with a step-up header", err: withHeader(connect.CodePermissionDenied, header)},
		{name: "another reason", err: withInfo("role_not_permitted", nil)},
		{name: "not a Connect error", err: errors.New("boom")},
		{name: "nil", err: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := stepUpChallenge(tc.err)
			if ok != tc.ok || errors.Is(err, errMalformedChallenge) != tc.malformed || (err != nil && !tc.malformed) {
				t.Fatalf("stepUpChallenge = %v, %t, %v; want ok %t, malformed %t", got, ok, err, tc.ok, tc.malformed)
			}
			if !tc.malformed && got != tc.want {
				t.Errorf("challenge = %+v, want %+v", got, tc.want)
			}
		})
	}
}
