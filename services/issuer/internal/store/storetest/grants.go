package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// GrantBackend is what the grant suite runs against: one value that keeps
// clients, access token sessions, grant records and client assertion jtis,
// as fosite's single storage object does. RevokeRequest and
// DeleteExpiredGrants span the grant records and the access token sessions.
type GrantBackend interface {
	store.Store
	store.GrantStore
	store.ClientAssertionStore
}

// grantKinds are every tokensession.GrantKind.
var grantKinds = []tokensession.GrantKind{
	tokensession.KindAuthorizeCode, tokensession.KindPKCE, tokensession.KindOIDC, tokensession.KindRefreshToken,
}

// RunGrantStore runs the store.GrantStore and store.ClientAssertionStore
// contract suite; newStore returns a fresh, empty store for each subtest.
func RunGrantStore(t *testing.T, newStore func(t *testing.T) GrantBackend) {
	t.Helper()
	withReportingJob := func(t *testing.T) GrantBackend {
		t.Helper()
		s := newStore(t)
		if err := s.UpsertClient(t.Context(), confidential("reporting-job")); err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("CreateGrantRoundTrip", func(t *testing.T) {
		t.Parallel()
		for _, kind := range grantKinds {
			for _, active := range []bool{true, false} {
				name := string(kind)
				if !active {
					name += " inactive"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					s := withReportingJob(t)
					want := grant(kind, "sig-1", "req-1")
					want.Active = active
					if err := s.CreateGrant(t.Context(), want); err != nil {
						t.Fatal(err)
					}
					got, err := s.GetGrant(t.Context(), kind, "sig-1")
					if err != nil {
						t.Fatal(err)
					}
					assertGrant(t, got, want)
				})
			}
		}
	})
	t.Run("CreateGrantSessionIDRoundTrip", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name      string
			sessionID string
		}{
			{name: "no browser session", sessionID: ""},
			{name: "hex SHA-256", sessionID: sessionID("browser-1")},
			{name: "longest", sessionID: strings.Repeat("s", tokensession.MaxSessionIDLen)},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := withReportingJob(t)
				want := grant(tokensession.KindRefreshToken, "sig-1", "req-1")
				want.SessionID = tc.sessionID
				if err := s.CreateGrant(t.Context(), want); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetGrant(t.Context(), want.Kind, want.Signature)
				if err != nil {
					t.Fatal(err)
				}
				assertGrant(t, got, want)
			})
		}
	})
	t.Run("GrantKindsShareSignatures", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		// PKCE and OIDC records are keyed by their code's signature.
		for _, kind := range grantKinds {
			if err := s.CreateGrant(t.Context(), grant(kind, "sig-1", "req-"+string(kind))); err != nil {
				t.Fatalf("CreateGrant(%s) = %v", kind, err)
			}
		}
		for _, kind := range grantKinds {
			got, err := s.GetGrant(t.Context(), kind, "sig-1")
			if err != nil {
				t.Fatal(err)
			}
			assertGrant(t, got, grant(kind, "sig-1", "req-"+string(kind)))
		}
	})
	t.Run("CreateGrantConflict", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		first := grant(tokensession.KindRefreshToken, "sig-1", "req-1")
		if err := s.CreateGrant(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		second := grant(tokensession.KindRefreshToken, "sig-1", "req-2")
		second.Request = []byte("another request")
		if err := s.CreateGrant(t.Context(), second); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second CreateGrant = %v, want ErrConflict", err)
		}
		got, err := s.GetGrant(t.Context(), tokensession.KindRefreshToken, "sig-1")
		if err != nil {
			t.Fatal(err)
		}
		assertGrant(t, got, first)
	})
	t.Run("CreateGrantUnknownClient", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		g := grant(tokensession.KindAuthorizeCode, "sig-1", "req-1")
		g.ClientID = "nobody"
		if err := s.CreateGrant(t.Context(), g); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CreateGrant = %v, want ErrNotFound", err)
		}
		if _, err := s.GetGrant(t.Context(), g.Kind, g.Signature); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetGrant after rejected create = %v, want ErrNotFound", err)
		}
	})
	t.Run("CreateGrantRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			edit func(*tokensession.Grant)
		}{
			{name: "unknown kind", edit: func(g *tokensession.Grant) { g.Kind = "device_code" }},
			{name: "empty signature", edit: func(g *tokensession.Grant) { g.Signature = "" }},
			{name: "empty request id", edit: func(g *tokensession.Grant) { g.RequestID = "" }},
			{name: "empty client id", edit: func(g *tokensession.Grant) { g.ClientID = "" }},
			{name: "no expiry", edit: func(g *tokensession.Grant) { g.ExpiresAt = time.Time{} }},
			{name: "empty request", edit: func(g *tokensession.Grant) { g.Request = nil }},
			{name: "session id over 128 bytes", edit: func(g *tokensession.Grant) {
				g.SessionID = strings.Repeat("s", tokensession.MaxSessionIDLen+1)
			}},
			{name: "session id over 128 bytes in fewer runes", edit: func(g *tokensession.Grant) {
				g.SessionID = strings.Repeat("é", tokensession.MaxSessionIDLen/2+1)
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := withReportingJob(t)
				bad := grant(tokensession.KindAuthorizeCode, "sig-1", "req-1")
				tc.edit(&bad)
				err := s.CreateGrant(t.Context(), bad)
				if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
					t.Fatalf("CreateGrant = %v, want a validation error", err)
				}
				if _, err := s.GetGrant(t.Context(), bad.Kind, bad.Signature); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetGrant after rejected create = %v, want ErrNotFound", err)
				}
				if ids, err := s.RequestIDsForConsent(t.Context(), "consent-1"); err != nil || len(ids) != 0 {
					t.Fatalf("RequestIDsForConsent after rejected create = %v, %v; want none", ids, err)
				}
				if ids, err := s.RequestIDsForSession(t.Context(), sessionID("browser-1")); err != nil || len(ids) != 0 {
					t.Fatalf("RequestIDsForSession after rejected create = %v, %v; want none", ids, err)
				}
				// Nothing was stored under the key: the valid record fits.
				good := grant(tokensession.KindAuthorizeCode, "sig-1", "req-1")
				if err := s.CreateGrant(t.Context(), good); err != nil {
					t.Fatalf("CreateGrant after rejected create = %v", err)
				}
			})
		}
	})
	t.Run("GetGrantUnknown", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		if err := s.CreateGrant(t.Context(), grant(tokensession.KindAuthorizeCode, "sig-1", "req-1")); err != nil {
			t.Fatal(err)
		}
		for _, key := range []struct {
			kind      tokensession.GrantKind
			signature string
		}{
			{kind: tokensession.KindAuthorizeCode, signature: "sig-2"},
			{kind: tokensession.KindRefreshToken, signature: "sig-1"},
			{kind: "bogus", signature: "sig-1"},
		} {
			if _, err := s.GetGrant(t.Context(), key.kind, key.signature); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetGrant(%s, %s) = %v, want ErrNotFound", key.kind, key.signature, err)
			}
		}
	})
	t.Run("GrantCopies", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		in := grant(tokensession.KindRefreshToken, "sig-1", "req-1")
		want := in.Clone()
		if err := s.CreateGrant(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		in.Request[0] = 'X'
		got, err := s.GetGrant(t.Context(), in.Kind, in.Signature)
		if err != nil {
			t.Fatal(err)
		}
		assertGrant(t, got, want)
		got.Request[0] = 'Y'
		again, err := s.GetGrant(t.Context(), in.Kind, in.Signature)
		if err != nil {
			t.Fatal(err)
		}
		assertGrant(t, again, want)
	})
	t.Run("DeactivateGrant", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		code := grant(tokensession.KindAuthorizeCode, "sig-1", "req-1")
		pkce := grant(tokensession.KindPKCE, "sig-1", "req-1")
		for _, g := range []tokensession.Grant{code, pkce} {
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		steps := []struct {
			kind      tokensession.GrantKind
			signature string
			want      error
		}{
			{kind: code.Kind, signature: "sig-1", want: nil},
			{kind: code.Kind, signature: "sig-1", want: store.ErrInactive},
			{kind: code.Kind, signature: "sig-2", want: store.ErrNotFound},
			{kind: tokensession.KindRefreshToken, signature: "sig-1", want: store.ErrNotFound},
		}
		for _, st := range steps {
			if err := s.DeactivateGrant(t.Context(), st.kind, st.signature); !errors.Is(err, st.want) {
				t.Fatalf("DeactivateGrant(%s, %s) = %v, want %v", st.kind, st.signature, err, st.want)
			}
		}
		// The inactive record is still returned, unchanged but for Active.
		got, err := s.GetGrant(t.Context(), code.Kind, "sig-1")
		if err != nil {
			t.Fatal(err)
		}
		code.Active = false
		assertGrant(t, got, code)
		// The other kind under the same signature is untouched.
		got, err = s.GetGrant(t.Context(), pkce.Kind, "sig-1")
		if err != nil {
			t.Fatal(err)
		}
		assertGrant(t, got, pkce)
	})
	t.Run("ConcurrentDeactivationsOneWins", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "sig-1", "req-1")); err != nil {
			t.Fatal(err)
		}
		const n = 16
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = s.DeactivateGrant(t.Context(), tokensession.KindRefreshToken, "sig-1")
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrInactive):
				t.Fatalf("DeactivateGrant = %v, want nil or ErrInactive", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d concurrent deactivations succeeded, want exactly 1", wins)
		}
	})
	t.Run("DeleteGrant", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		for _, kind := range []tokensession.GrantKind{tokensession.KindAuthorizeCode, tokensession.KindOIDC} {
			if err := s.CreateGrant(t.Context(), grant(kind, "sig-1", "req-1")); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteGrant(t.Context(), tokensession.KindAuthorizeCode, "sig-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetGrant(t.Context(), tokensession.KindAuthorizeCode, "sig-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetGrant after delete = %v, want ErrNotFound", err)
		}
		if err := s.DeleteGrant(t.Context(), tokensession.KindAuthorizeCode, "sig-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second DeleteGrant = %v, want ErrNotFound", err)
		}
		if err := s.DeactivateGrant(t.Context(), tokensession.KindAuthorizeCode, "sig-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("DeactivateGrant after delete = %v, want ErrNotFound", err)
		}
		if _, err := s.GetGrant(t.Context(), tokensession.KindOIDC, "sig-1"); err != nil {
			t.Fatalf("the other kind went too: %v", err)
		}
	})
	t.Run("RevokeRequest", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		// req-1 is revoked; req-2 must come through untouched.
		grants := []tokensession.Grant{
			grant(tokensession.KindAuthorizeCode, "code-1", "req-1"),
			grant(tokensession.KindPKCE, "code-1", "req-1"),
			grant(tokensession.KindOIDC, "code-1", "req-1"),
			grant(tokensession.KindRefreshToken, "refresh-1", "req-1"),
			grant(tokensession.KindRefreshToken, "refresh-1b", "req-1"),
			grant(tokensession.KindAuthorizeCode, "code-2", "req-2"),
			grant(tokensession.KindRefreshToken, "refresh-2", "req-2"),
		}
		grants[4].Active = false // an already rotated refresh token
		for _, g := range grants {
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		sessions := []tokensession.Record{
			requestSession("at-1a", "jti-1a", "req-1"),
			requestSession("at-1b", "jti-1b", "req-1"),
			requestSession("at-2", "jti-2", "req-2"),
		}
		for _, rec := range sessions {
			if err := s.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
		}

		revoked, err := s.RevokeRequest(t.Context(), "req-1")
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(revoked, func(a, b tokensession.Record) int { return strings.Compare(a.Signature, b.Signature) })
		if len(revoked) != 2 {
			t.Fatalf("RevokeRequest returned %d records, want 2: %+v", len(revoked), revoked)
		}
		assertSession(t, revoked[0], sessions[0])
		assertSession(t, revoked[1], sessions[1])

		assertRevoked := func(t *testing.T) {
			t.Helper()
			for _, want := range grants {
				got, err := s.GetGrant(t.Context(), want.Kind, want.Signature)
				if err != nil {
					t.Fatalf("GetGrant(%s, %s) = %v", want.Kind, want.Signature, err)
				}
				if want.RequestID == "req-1" {
					want.Active = false
				}
				assertGrant(t, got, want)
			}
			for _, sig := range []string{"at-1a", "at-1b"} {
				if _, err := s.GetTokenSession(t.Context(), sig); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetTokenSession(%s) after revoke = %v, want ErrNotFound", sig, err)
				}
			}
			got, err := s.GetTokenSession(t.Context(), "at-2")
			if err != nil {
				t.Fatalf("another request's access token went: %v", err)
			}
			assertSession(t, got, sessions[2])
		}
		assertRevoked(t)

		// Idempotent: a second revoke finds nothing more to do.
		again, err := s.RevokeRequest(t.Context(), "req-1")
		if err != nil || len(again) != 0 {
			t.Fatalf("second RevokeRequest = %+v, %v; want no records, no error", again, err)
		}
		assertRevoked(t)
		if none, err := s.RevokeRequest(t.Context(), "req-unknown"); err != nil || len(none) != 0 {
			t.Fatalf("RevokeRequest(unknown) = %+v, %v; want no records, no error", none, err)
		}
		assertRevoked(t)
		// The deleted sessions' jtis are free again.
		if err := s.CreateTokenSession(t.Context(), requestSession("at-3", "jti-1a", "req-3")); err != nil {
			t.Fatalf("CreateTokenSession reusing a revoked session's jti = %v", err)
		}
	})
	t.Run("RevokeRequestWithoutGrants", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		// client_credentials tokens have sessions but no grant records.
		rec := requestSession("at-1", "jti-1", "req-1")
		if err := s.CreateTokenSession(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		revoked, err := s.RevokeRequest(t.Context(), "req-1")
		if err != nil || len(revoked) != 1 {
			t.Fatalf("RevokeRequest = %+v, %v; want one record", revoked, err)
		}
		assertSession(t, revoked[0], rec)
		if _, err := s.GetTokenSession(t.Context(), "at-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetTokenSession after revoke = %v, want ErrNotFound", err)
		}
	})
	t.Run("RevokeRequestRejectsEmptyID", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		if _, err := s.RevokeRequest(t.Context(), ""); err == nil {
			t.Fatal("RevokeRequest(\"\") succeeded")
		}
		// Nothing was revoked, least of all every record without a request id.
		if err := s.CreateTokenSession(t.Context(), requestSession("at-1", "jti-1", "")); err != nil {
			t.Fatalf("CreateTokenSession without request id after RevokeRequest(\"\") = %v", err)
		}
	})
	t.Run("RevokedRequestRefusesCreates", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name  string
			store func(t *testing.T, s GrantBackend)
		}{
			{name: "request with records", store: func(t *testing.T, s GrantBackend) {
				t.Helper()
				if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "refresh-1", "req-1")); err != nil {
					t.Fatal(err)
				}
				if err := s.CreateTokenSession(t.Context(), requestSession("at-1", "jti-1", "req-1")); err != nil {
					t.Fatal(err)
				}
			}},
			// A create racing the revocation of a request that has nothing
			// stored yet must fail too.
			{name: "unknown request", store: func(*testing.T, GrantBackend) {}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := withReportingJob(t)
				tc.store(t, s)
				if revoked, err := s.RequestRevoked(t.Context(), "req-1"); err != nil || revoked {
					t.Fatalf("RequestRevoked before revocation = %v, %v", revoked, err)
				}
				for i := range 2 { // the second revocation changes nothing
					if _, err := s.RevokeRequest(t.Context(), "req-1"); err != nil {
						t.Fatalf("RevokeRequest #%d = %v", i+1, err)
					}
				}
				if revoked, err := s.RequestRevoked(t.Context(), "req-1"); err != nil || !revoked {
					t.Fatalf("RequestRevoked after revocation = %v, %v", revoked, err)
				}
				if revoked, err := s.RequestRevoked(t.Context(), "req-2"); err != nil || revoked {
					t.Fatalf("RequestRevoked of another request = %v, %v", revoked, err)
				}
				for _, kind := range grantKinds {
					g := grant(kind, "new-1", "req-1")
					if err := s.CreateGrant(t.Context(), g); !errors.Is(err, store.ErrRevoked) {
						t.Fatalf("CreateGrant(%s) of a revoked request = %v, want ErrRevoked", kind, err)
					}
					if _, err := s.GetGrant(t.Context(), kind, "new-1"); !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("GetGrant(%s) after refused create = %v, want ErrNotFound", kind, err)
					}
				}
				if err := s.CreateTokenSession(t.Context(), requestSession("at-new", "jti-new", "req-1")); !errors.Is(err, store.ErrRevoked) {
					t.Fatalf("CreateTokenSession of a revoked request = %v, want ErrRevoked", err)
				}
				if _, err := s.GetTokenSession(t.Context(), "at-new"); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetTokenSession after refused create = %v, want ErrNotFound", err)
				}
				// Other requests are unaffected, and the refused session
				// took neither its signature nor its jti.
				if err := s.CreateTokenSession(t.Context(), requestSession("at-new", "jti-new", "req-2")); err != nil {
					t.Fatalf("CreateTokenSession of another request = %v", err)
				}
				if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "new-1", "req-2")); err != nil {
					t.Fatalf("CreateGrant of another request = %v", err)
				}
				if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "new-2", "req-10")); err != nil {
					t.Fatalf("CreateGrant of a request whose id extends the revoked one = %v", err)
				}
				if revoked, err := s.RevokeRequest(t.Context(), "req-1"); err != nil || len(revoked) != 0 {
					t.Fatalf("RevokeRequest after refused creates = %+v, %v; want no records", revoked, err)
				}
			})
		}
	})
	t.Run("RevokedRequestExpiry", func(t *testing.T) {
		t.Parallel()
		now := time.Now().UTC().Truncate(time.Microsecond)
		recordsExpire := grant(tokensession.KindRefreshToken, "refresh-1", "req-1").ExpiresAt
		tests := []struct {
			name  string
			store func(t *testing.T, s GrantBackend)
			// DeleteExpiredGrants(keptAt) keeps the revocation and returns
			// keptDeletes; DeleteExpiredGrants(forgetAt) deletes it.
			keptAt, forgetAt time.Time
			keptDeletes      int
		}{
			{
				// The session outlives the grant record: the revocation
				// lasts as long as the longer-lived of all its records.
				name: "until the request's latest expiry",
				store: func(t *testing.T, s GrantBackend) {
					t.Helper()
					if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "refresh-1", "req-1")); err != nil {
						t.Fatal(err)
					}
					rec := requestSession("at-1", "jti-1", "req-1")
					rec.ExpiresAt = recordsExpire.Add(30 * time.Minute)
					if err := s.CreateTokenSession(t.Context(), rec); err != nil {
						t.Fatal(err)
					}
				},
				keptAt:      recordsExpire.Add(30 * time.Minute),
				forgetAt:    recordsExpire.Add(30*time.Minute + time.Microsecond),
				keptDeletes: 1, // the expired grant record
			},
			{
				// Nothing stored: RevocationRetention after the revocation
				// (a minute's margin for the clocks of test and database).
				name:        "for the retention without records",
				store:       func(*testing.T, GrantBackend) {},
				keptAt:      now.Add(store.RevocationRetention - time.Minute),
				forgetAt:    now.Add(store.RevocationRetention + time.Minute),
				keptDeletes: 0,
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := withReportingJob(t)
				tc.store(t, s)
				if _, err := s.RevokeRequest(t.Context(), "req-1"); err != nil {
					t.Fatal(err)
				}
				if n, err := s.DeleteExpiredGrants(t.Context(), tc.keptAt); err != nil || n != tc.keptDeletes {
					t.Fatalf("DeleteExpiredGrants(%v) = %d, %v; want %d", tc.keptAt, n, err, tc.keptDeletes)
				}
				g := grant(tokensession.KindRefreshToken, "refresh-2", "req-1")
				if err := s.CreateGrant(t.Context(), g); !errors.Is(err, store.ErrRevoked) {
					t.Fatalf("CreateGrant before the revocation expired = %v, want ErrRevoked", err)
				}
				if n, err := s.DeleteExpiredGrants(t.Context(), tc.forgetAt); err != nil || n != 1 {
					t.Fatalf("DeleteExpiredGrants(%v) = %d, %v; want 1 (the revocation)", tc.forgetAt, n, err)
				}
				if err := s.CreateGrant(t.Context(), g); err != nil {
					t.Fatalf("CreateGrant after the revocation expired = %v", err)
				}
			})
		}
	})
	t.Run("RevokeRequestRacesRefreshes", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		// Each round revokes a request while refreshes of it run as the
		// token endpoint does them: deactivate the presented refresh
		// token, store the new access token, store the new refresh
		// token. Whatever the interleaving, nothing of the request may
		// be live afterwards.
		const rounds, refreshes = 50, 8
		for round := range rounds {
			requestID := fmt.Sprintf("req-%d", round)
			name := seedRefreshes(t, s, requestID, refreshes)
			refresh := func(i int) error {
				if err := s.DeactivateGrant(t.Context(), tokensession.KindRefreshToken, name("refresh", i)); err != nil {
					return err
				}
				sessionErr := s.CreateTokenSession(t.Context(), requestSession(name("at", i), name("jti", i), requestID))
				grantErr := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, name("rotated", i), requestID))
				if errors.Is(sessionErr, store.ErrRevoked) && grantErr == nil {
					return errors.New("CreateGrant succeeded after CreateTokenSession was refused as revoked")
				}
				return errors.Join(sessionErr, grantErr)
			}
			var revokeErr error
			errs := make([]error, refreshes)
			race(refreshes, func() {
				_, revokeErr = s.RevokeRequest(t.Context(), requestID)
			}, func(i int) { errs[i] = refresh(i) })
			if revokeErr != nil {
				t.Fatalf("round %d: RevokeRequest = %v", round, revokeErr)
			}
			for i, err := range errs {
				// Before the revocation (nil), after it (ErrInactive), or
				// across it (ErrRevoked).
				if err != nil && !errors.Is(err, store.ErrInactive) && !errors.Is(err, store.ErrRevoked) {
					t.Fatalf("round %d: refresh %d = %v, want nil, ErrInactive or ErrRevoked", round, i, err)
				}
			}
			for i := -1; i < refreshes; i++ {
				if _, err := s.GetTokenSession(t.Context(), name("at", i)); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("round %d: access token %d of the revoked request is live: GetTokenSession = %v", round, i, err)
				}
			}
			for i := range refreshes {
				if g, err := s.GetGrant(t.Context(), tokensession.KindRefreshToken, name("refresh", i)); err != nil || g.Active {
					t.Fatalf("round %d: presented refresh token %d: GetGrant = %+v, %v; want it inactive", round, i, g, err)
				}
				// The rotated token was refused, or stored and then revoked.
				g, err := s.GetGrant(t.Context(), tokensession.KindRefreshToken, name("rotated", i))
				if (err == nil && g.Active) || (err != nil && !errors.Is(err, store.ErrNotFound)) {
					t.Fatalf("round %d: rotated refresh token %d: GetGrant = %+v, %v; want it inactive or absent", round, i, g, err)
				}
			}
		}
	})
	t.Run("RequestTokenSessions", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "refresh-1", "req-1")); err != nil {
			t.Fatal(err)
		}
		expired := requestSession("at-1a", "jti-1a", "req-1")
		expired.ExpiresAt = time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
		sessions := []tokensession.Record{
			requestSession("at-1b", "jti-1b", "req-1"),
			expired,
			requestSession("at-2", "jti-2", "req-2"),
		}
		for _, rec := range sessions {
			if err := s.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
		}
		// Expired sessions too (the caller decides what still matters),
		// ordered by signature.
		got, err := s.RequestTokenSessions(t.Context(), "req-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("RequestTokenSessions(req-1) = %+v, want 2 records", got)
		}
		assertSession(t, got[0], sessions[1])
		assertSession(t, got[1], sessions[0])
		// Listing changes nothing.
		for _, rec := range sessions {
			if _, err := s.GetTokenSession(t.Context(), rec.Signature); err != nil {
				t.Fatalf("GetTokenSession(%s) after listing = %v", rec.Signature, err)
			}
		}
		if g, err := s.GetGrant(t.Context(), tokensession.KindRefreshToken, "refresh-1"); err != nil || !g.Active {
			t.Fatalf("grant after listing = %+v, %v; want it active", g, err)
		}
		if revoked, err := s.RequestRevoked(t.Context(), "req-1"); err != nil || revoked {
			t.Fatalf("RequestRevoked after listing = %v, %v", revoked, err)
		}
		if none, err := s.RequestTokenSessions(t.Context(), "req-unknown"); err != nil || len(none) != 0 {
			t.Fatalf("RequestTokenSessions(unknown) = %+v, %v; want none, no error", none, err)
		}
		if all, err := s.RequestTokenSessions(t.Context(), ""); err == nil {
			t.Fatalf("RequestTokenSessions(\"\") = %+v, want an error", all)
		}
	})
	t.Run("MarkRequestRevoked", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		grants := []tokensession.Grant{
			grant(tokensession.KindAuthorizeCode, "code-1", "req-1"),
			grant(tokensession.KindRefreshToken, "refresh-1", "req-1"),
			grant(tokensession.KindRefreshToken, "refresh-2", "req-2"),
		}
		for _, g := range grants {
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		sessions := []tokensession.Record{
			requestSession("at-1a", "jti-1a", "req-1"),
			requestSession("at-1b", "jti-1b", "req-1"),
			requestSession("at-2", "jti-2", "req-2"),
		}
		for _, rec := range sessions {
			if err := s.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
		}

		if err := s.MarkRequestRevoked(t.Context(), "req-1"); err != nil {
			t.Fatal(err)
		}
		assertMarked := func(t *testing.T) {
			t.Helper()
			for _, want := range grants {
				got, err := s.GetGrant(t.Context(), want.Kind, want.Signature)
				if err != nil {
					t.Fatal(err)
				}
				if want.RequestID == "req-1" {
					want.Active = false
				}
				assertGrant(t, got, want)
			}
			if revoked, err := s.RequestRevoked(t.Context(), "req-1"); err != nil || !revoked {
				t.Fatalf("RequestRevoked(req-1) = %v, %v; want true", revoked, err)
			}
			if revoked, err := s.RequestRevoked(t.Context(), "req-2"); err != nil || revoked {
				t.Fatalf("RequestRevoked(req-2) = %v, %v; want false", revoked, err)
			}
			// Nothing more of req-1 can be stored.
			if err := s.CreateTokenSession(t.Context(), requestSession("at-new", "jti-new", "req-1")); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("CreateTokenSession of a marked request = %v, want ErrRevoked", err)
			}
			if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, "refresh-new", "req-1")); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("CreateGrant of a marked request = %v, want ErrRevoked", err)
			}
		}
		assertMarked(t)
		// The access tokens stay, to be listed and published.
		for _, rec := range sessions {
			got, err := s.GetTokenSession(t.Context(), rec.Signature)
			if err != nil {
				t.Fatalf("GetTokenSession(%s) after marking = %v; want it kept", rec.Signature, err)
			}
			assertSession(t, got, rec)
		}
		// Idempotent.
		if err := s.MarkRequestRevoked(t.Context(), "req-1"); err != nil {
			t.Fatalf("second MarkRequestRevoked = %v", err)
		}
		assertMarked(t)

		// RevokeRequest then deletes exactly the sessions marking kept.
		revoked, err := s.RevokeRequest(t.Context(), "req-1")
		if err != nil || len(revoked) != 2 {
			t.Fatalf("RevokeRequest after marking = %+v, %v; want the two sessions", revoked, err)
		}
		assertSession(t, revoked[0], sessions[0])
		assertSession(t, revoked[1], sessions[1])
		assertMarked(t)
		if _, err := s.GetTokenSession(t.Context(), "at-2"); err != nil {
			t.Fatalf("another request's access token went: %v", err)
		}

		// An unknown request is recorded as revoked too; "" names none.
		if err := s.MarkRequestRevoked(t.Context(), "req-unknown"); err != nil {
			t.Fatalf("MarkRequestRevoked(unknown) = %v", err)
		}
		if err := s.CreateTokenSession(t.Context(), requestSession("at-late", "jti-late", "req-unknown")); !errors.Is(err, store.ErrRevoked) {
			t.Fatalf("CreateTokenSession after marking an unknown request = %v, want ErrRevoked", err)
		}
		if err := s.MarkRequestRevoked(t.Context(), ""); err == nil {
			t.Fatal("MarkRequestRevoked(\"\") succeeded")
		}
		if err := s.CreateTokenSession(t.Context(), requestSession("at-empty", "jti-empty", "")); err != nil {
			t.Fatalf("CreateTokenSession without request id after MarkRequestRevoked(\"\") = %v", err)
		}
	})
	t.Run("MarkRequestRevokedRacesRefreshes", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		// As RevokeRequestRacesRefreshes, but revoking as a publishing
		// caller does: mark, list (and publish), then RevokeRequest.
		// Whatever the interleaving, every access token a refresh stored
		// must be in the listing, or it would be deleted unpublished, and
		// nothing of the request may be live afterwards.
		const rounds, refreshes = 30, 8
		for round := range rounds {
			requestID := fmt.Sprintf("req-%d", round)
			name := seedRefreshes(t, s, requestID, refreshes)
			var (
				revokeErr error
				listed    = make(map[string]bool)
				stored    = make([]bool, refreshes)
			)
			race(refreshes, func() {
				if revokeErr = s.MarkRequestRevoked(t.Context(), requestID); revokeErr != nil {
					return
				}
				recs, err := s.RequestTokenSessions(t.Context(), requestID)
				if err != nil {
					revokeErr = err
					return
				}
				for _, rec := range recs {
					listed[rec.Signature] = true
				}
				_, revokeErr = s.RevokeRequest(t.Context(), requestID)
			}, func(i int) {
				if s.DeactivateGrant(t.Context(), tokensession.KindRefreshToken, name("refresh", i)) == nil {
					stored[i] = s.CreateTokenSession(t.Context(), requestSession(name("at", i), name("jti", i), requestID)) == nil
				}
			})
			if revokeErr != nil {
				t.Fatalf("round %d: revocation = %v", round, revokeErr)
			}
			for i := -1; i < refreshes; i++ {
				if _, err := s.GetTokenSession(t.Context(), name("at", i)); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("round %d: access token %d of the revoked request is live: GetTokenSession = %v", round, i, err)
				}
				if (i < 0 || stored[i]) && !listed[name("at", i)] {
					t.Fatalf("round %d: access token %d was stored, then deleted without being listed", round, i)
				}
			}
		}
	})
	t.Run("RevokedRequestsWithSessions", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		now := time.Now().UTC().Truncate(time.Microsecond)
		sessions := []struct {
			signature, requestID string
			expiresAt            time.Time
		}{
			// Revoked with live sessions (req-b twice): listed once each,
			// sorted.
			{signature: "at-c", requestID: "req-c", expiresAt: now.Add(time.Minute)},
			{signature: "at-b1", requestID: "req-b", expiresAt: now.Add(time.Minute)},
			{signature: "at-b2", requestID: "req-b", expiresAt: now.Add(time.Minute)},
			{signature: "at-a", requestID: "req-a", expiresAt: now.Add(time.Minute)},
			// Revoked, but its only session has expired, or expires at
			// now: nothing left to refuse.
			{signature: "at-expired", requestID: "req-expired", expiresAt: now.Add(-time.Minute)},
			{signature: "at-boundary", requestID: "req-boundary", expiresAt: now},
			// Revoked and completed: RevokeRequest deleted its sessions.
			{signature: "at-done", requestID: "req-done", expiresAt: now.Add(time.Minute)},
			// Live, not revoked.
			{signature: "at-active", requestID: "req-active", expiresAt: now.Add(time.Minute)},
		}
		for _, sess := range sessions {
			rec := requestSession(sess.signature, "jti-"+sess.signature, sess.requestID)
			rec.ExpiresAt = sess.expiresAt
			if err := s.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range []string{"req-c", "req-b", "req-a", "req-expired", "req-boundary", "req-done", "req-no-sessions"} {
			if err := s.MarkRequestRevoked(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.RevokeRequest(t.Context(), "req-done"); err != nil {
			t.Fatal(err)
		}

		tests := []struct {
			limit int
			want  []string
		}{
			{limit: 100, want: []string{"req-a", "req-b", "req-c"}},
			{limit: 3, want: []string{"req-a", "req-b", "req-c"}},
			{limit: 2, want: []string{"req-a", "req-b"}},
			{limit: 1, want: []string{"req-a"}},
		}
		for _, tc := range tests {
			got, err := s.RevokedRequestsWithSessions(t.Context(), now, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("RevokedRequestsWithSessions(now, %d) = %v, want %v", tc.limit, got, tc.want)
			}
		}
		// Listing changes nothing.
		for _, sess := range sessions {
			_, err := s.GetTokenSession(t.Context(), sess.signature)
			if gone := errors.Is(err, store.ErrNotFound); gone != (sess.requestID == "req-done") {
				t.Errorf("GetTokenSession(%s) after listing = %v", sess.signature, err)
			}
		}
		// Later, every session has expired.
		if got, err := s.RevokedRequestsWithSessions(t.Context(), now.Add(time.Minute), 100); err != nil || len(got) != 0 {
			t.Errorf("RevokedRequestsWithSessions(now+1m) = %v, %v; want none", got, err)
		}
		// A completed revocation leaves the list.
		if _, err := s.RevokeRequest(t.Context(), "req-a"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.RevokedRequestsWithSessions(t.Context(), now, 100); err != nil || !slices.Equal(got, []string{"req-b", "req-c"}) {
			t.Errorf("RevokedRequestsWithSessions after RevokeRequest(req-a) = %v, %v; want [req-b req-c]", got, err)
		}
		for _, limit := range []int{0, -1} {
			if got, err := s.RevokedRequestsWithSessions(t.Context(), now, limit); err == nil {
				t.Errorf("RevokedRequestsWithSessions(now, %d) = %v, want an error", limit, got)
			}
		}
	})
	t.Run("RequestIDsForConsent", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		records := []struct {
			kind      tokensession.GrantKind
			signature string
			requestID string
			consentID string
			active    bool
		}{
			{kind: tokensession.KindAuthorizeCode, signature: "code-1", requestID: "req-b", consentID: "consent-1"},
			{kind: tokensession.KindRefreshToken, signature: "refresh-1", requestID: "req-b", consentID: "consent-1", active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-2", requestID: "req-a", consentID: "consent-1"},
			{kind: tokensession.KindRefreshToken, signature: "refresh-3", requestID: "req-c", consentID: "consent-2", active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-4", requestID: "req-d", consentID: "", active: true},
		}
		for _, r := range records {
			g := grant(r.kind, r.signature, r.requestID)
			g.ConsentID, g.Active = r.consentID, r.active
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			consentID string
			want      []string
		}{
			{consentID: "consent-1", want: []string{"req-a", "req-b"}},
			{consentID: "consent-2", want: []string{"req-c"}},
			{consentID: "consent-unknown", want: nil},
		}
		for _, tc := range tests {
			got, err := s.RequestIDsForConsent(t.Context(), tc.consentID)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("RequestIDsForConsent(%s) = %v, want %v", tc.consentID, got, tc.want)
			}
		}
		// "" means "no consent": it names no authorization.
		if got, err := s.RequestIDsForConsent(t.Context(), ""); err == nil {
			t.Errorf("RequestIDsForConsent(\"\") = %v, want an error", got)
		}
	})
	t.Run("RequestIDsForSession", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		browser1, browser2 := sessionID("browser-1"), sessionID("browser-2")
		records := []struct {
			kind      tokensession.GrantKind
			signature string
			requestID string
			sessionID string
			active    bool
		}{
			// req-b and req-a of browser-1, each with several records
			// (one authorization: code, PKCE, OIDC, refresh tokens), some
			// used or rotated, inserted out of order.
			{kind: tokensession.KindAuthorizeCode, signature: "code-b", requestID: "req-b", sessionID: browser1},
			{kind: tokensession.KindPKCE, signature: "code-b", requestID: "req-b", sessionID: browser1},
			{kind: tokensession.KindOIDC, signature: "code-b", requestID: "req-b", sessionID: browser1, active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-b1", requestID: "req-b", sessionID: browser1},
			{kind: tokensession.KindRefreshToken, signature: "refresh-b2", requestID: "req-b", sessionID: browser1, active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-a", requestID: "req-a", sessionID: browser1},
			// Another browser session, and records without one.
			{kind: tokensession.KindRefreshToken, signature: "refresh-c", requestID: "req-c", sessionID: browser2, active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-d", requestID: "req-d", sessionID: "", active: true},
			{kind: tokensession.KindRefreshToken, signature: "refresh-e", requestID: "req-e", sessionID: ""},
		}
		for _, r := range records {
			g := grant(r.kind, r.signature, r.requestID)
			g.SessionID, g.Active = r.sessionID, r.active
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name      string
			sessionID string
			want      []string
		}{
			{name: "distinct and sorted, inactive included", sessionID: browser1, want: []string{"req-a", "req-b"}},
			{name: "another session", sessionID: browser2, want: []string{"req-c"}},
			{name: "unknown session", sessionID: sessionID("browser-unknown"), want: nil},
			// A prefix of a stored id names nothing.
			{name: "prefix of a session", sessionID: browser1[:32], want: nil},
		}
		for _, tc := range tests {
			got, err := s.RequestIDsForSession(t.Context(), tc.sessionID)
			if err != nil {
				t.Fatalf("%s: RequestIDsForSession = %v", tc.name, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: RequestIDsForSession = %v, want %v", tc.name, got, tc.want)
			}
		}
		// "" means "no browser session": it names no authorization.
		if got, err := s.RequestIDsForSession(t.Context(), ""); err == nil {
			t.Errorf("RequestIDsForSession(\"\") = %v, want an error", got)
		}
		// Revoking one of the session's requests leaves it listed: its
		// records stay, inactive, until they expire.
		if _, err := s.RevokeRequest(t.Context(), "req-b"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.RequestIDsForSession(t.Context(), browser1); err != nil || !slices.Equal(got, []string{"req-a", "req-b"}) {
			t.Errorf("RequestIDsForSession after RevokeRequest = %v, %v; want [req-a req-b]", got, err)
		}
	})
	t.Run("DeleteExpiredGrants", func(t *testing.T) {
		t.Parallel()
		s := withReportingJob(t)
		now := time.Now().UTC().Truncate(time.Microsecond)
		expired, live := now.Add(-time.Minute), now.Add(time.Minute)
		grants := []tokensession.Grant{
			grant(tokensession.KindAuthorizeCode, "expired-code", "req-1"),
			grant(tokensession.KindRefreshToken, "expired-refresh", "req-1"),
			grant(tokensession.KindRefreshToken, "live-refresh", "req-1"),
			grant(tokensession.KindRefreshToken, "boundary-refresh", "req-1"),
		}
		grants[0].ExpiresAt = expired
		grants[1].ExpiresAt, grants[1].Active = expired, false
		grants[2].ExpiresAt = live
		grants[3].ExpiresAt = now // expires at t: not before it, so kept
		for _, g := range grants {
			if err := s.CreateGrant(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		expiredSession := requestSession("expired-at", "jti-expired", "req-1")
		expiredSession.ExpiresAt = expired
		liveSession := requestSession("live-at", "jti-live", "req-1")
		liveSession.ExpiresAt = live
		for _, rec := range []tokensession.Record{expiredSession, liveSession} {
			if err := s.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.UseClientAssertion(t.Context(), "expired-jti", expired); err != nil {
			t.Fatal(err)
		}
		if err := s.UseClientAssertion(t.Context(), "live-jti", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}

		n, err := s.DeleteExpiredGrants(t.Context(), now)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Fatalf("DeleteExpiredGrants = %d, want 4 (2 grants, 1 session, 1 jti)", n)
		}
		for _, g := range grants {
			_, err := s.GetGrant(t.Context(), g.Kind, g.Signature)
			if gone := errors.Is(err, store.ErrNotFound); gone != g.ExpiresAt.Before(now) {
				t.Errorf("GetGrant(%s) after cleanup = %v", g.Signature, err)
			}
		}
		if _, err := s.GetTokenSession(t.Context(), expiredSession.Signature); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired session kept: %v", err)
		}
		if _, err := s.GetTokenSession(t.Context(), liveSession.Signature); err != nil {
			t.Errorf("live session deleted: %v", err)
		}
		if err := s.UseClientAssertion(t.Context(), "live-jti", now.Add(time.Hour)); !errors.Is(err, store.ErrConflict) {
			t.Errorf("live jti forgotten: UseClientAssertion = %v, want ErrConflict", err)
		}
		if n, err := s.DeleteExpiredGrants(t.Context(), now); err != nil || n != 0 {
			t.Fatalf("second DeleteExpiredGrants = %d, %v; want 0", n, err)
		}
	})
	t.Run("UseClientAssertion", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		now := time.Now()
		steps := []struct {
			name string
			jti  string
			exp  time.Time
			want error
		}{
			{name: "first use", jti: "jti-1", exp: now.Add(time.Hour), want: nil},
			{name: "replay", jti: "jti-1", exp: now.Add(time.Hour), want: store.ErrConflict},
			{name: "replay claiming a later expiry", jti: "jti-1", exp: now.Add(2 * time.Hour), want: store.ErrConflict},
			{name: "another jti", jti: "jti-2", exp: now.Add(time.Hour), want: nil},
			{name: "expired jti recorded", jti: "jti-old", exp: now.Add(-time.Minute), want: nil},
			{name: "expired jti reused", jti: "jti-old", exp: now.Add(time.Hour), want: nil},
			{name: "reused jti replayed", jti: "jti-old", exp: now.Add(time.Hour), want: store.ErrConflict},
			{name: "longest jti", jti: strings.Repeat("j", 256), exp: now.Add(time.Hour), want: nil},
			{name: "longest jti replayed", jti: strings.Repeat("j", 256), exp: now.Add(time.Hour), want: store.ErrConflict},
		}
		for _, st := range steps {
			if err := s.UseClientAssertion(t.Context(), st.jti, st.exp); !errors.Is(err, st.want) {
				t.Fatalf("%s: UseClientAssertion = %v, want %v", st.name, err, st.want)
			}
		}
	})
	t.Run("UseClientAssertionRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			jti  string
			exp  time.Time
		}{
			{name: "empty jti", jti: "", exp: time.Now().Add(time.Hour)},
			{name: "jti over 256 bytes", jti: strings.Repeat("j", 257), exp: time.Now().Add(time.Hour)},
			{name: "jti over 256 bytes in fewer runes", jti: strings.Repeat("é", 129), exp: time.Now().Add(time.Hour)},
			{name: "no expiry", jti: "jti-1", exp: time.Time{}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				err := s.UseClientAssertion(t.Context(), tc.jti, tc.exp)
				if err == nil || errors.Is(err, store.ErrConflict) {
					t.Fatalf("UseClientAssertion = %v, want a validation error", err)
				}
				// Nothing was recorded: a valid use of the jti passes
				// (where the jti itself is valid).
				if tc.jti != "" && len(tc.jti) <= 256 {
					if err := s.UseClientAssertion(t.Context(), tc.jti, time.Now().Add(time.Hour)); err != nil {
						t.Fatalf("UseClientAssertion after rejected use = %v", err)
					}
				}
			})
		}
	})
	t.Run("ConcurrentAssertionUsesOneWins", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			before func(t *testing.T, s GrantBackend)
		}{
			{name: "new jti", before: func(*testing.T, GrantBackend) {}},
			{name: "expired jti", before: func(t *testing.T, s GrantBackend) {
				t.Helper()
				if err := s.UseClientAssertion(t.Context(), "jti-1", time.Now().Add(-time.Minute)); err != nil {
					t.Fatal(err)
				}
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				tc.before(t, s)
				const n = 16
				errs := make([]error, n)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						<-start
						errs[i] = s.UseClientAssertion(t.Context(), "jti-1", time.Now().Add(time.Hour))
					})
				}
				close(start)
				wg.Wait()
				wins := 0
				for _, err := range errs {
					switch {
					case err == nil:
						wins++
					case !errors.Is(err, store.ErrConflict):
						t.Fatalf("UseClientAssertion = %v, want nil or ErrConflict", err)
					}
				}
				if wins != 1 {
					t.Fatalf("%d concurrent uses of one jti succeeded, want exactly 1", wins)
				}
			})
		}
	})
}

// seedRefreshes stores, for requestID, refreshes refresh tokens and one
// access token for a race round, and returns the namer of the round's
// records: name("refresh", i), name("at", i) (the seeded one is -1),
// name("jti", i).
// race runs revoke and refresh(0..refreshes-1) at once, each in its own
// goroutine released by one start signal, and waits for them all.
func race(refreshes int, revoke func(), refresh func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		<-start
		revoke()
	})
	for i := range refreshes {
		wg.Go(func() {
			<-start
			refresh(i)
		})
	}
	close(start)
	wg.Wait()
}

func seedRefreshes(t *testing.T, s GrantBackend, requestID string, refreshes int) func(what string, i int) string {
	t.Helper()
	name := func(what string, i int) string { return fmt.Sprintf("%s-%s-%d", requestID, what, i) }
	for i := range refreshes {
		if err := s.CreateGrant(t.Context(), grant(tokensession.KindRefreshToken, name("refresh", i), requestID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateTokenSession(t.Context(), requestSession(name("at", -1), name("jti", -1), requestID)); err != nil {
		t.Fatal(err)
	}
	return name
}

// grant returns a valid, active grant record for reporting-job whose
// Request holds bytes that are neither UTF-8 nor JSON (NUL, 0xff), so the
// round trip must be byte-exact.
func grant(kind tokensession.GrantKind, signature, requestID string) tokensession.Grant {
	// Fixed, so records built apart compare equal; in microseconds, the
	// precision Postgres keeps; far enough ahead that nothing has expired.
	requested := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	return tokensession.Grant{
		Kind:            kind,
		Signature:       signature,
		RequestID:       requestID,
		ClientID:        "reporting-job",
		Subject:         "alice",
		ConsentID:       "consent-1",
		SessionID:       sessionID("browser-1"),
		AccessSignature: "at-" + signature,
		Active:          true,
		RequestedAt:     requested,
		ExpiresAt:       requested.Add(time.Hour),
		Request:         append([]byte(`{"id":"`+requestID+`"} `), 0x00, 0xff, 0xfe, '\n', 0x00),
	}
}

// sessionID returns a browser login session id of the shape
// browsersession.Session.ID has: the lowercase hex SHA-256 of a cookie
// value, here of name.
func sessionID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

// requestSession returns a valid access token session of requestID.
func requestSession(signature, jti, requestID string) tokensession.Record {
	rec := session(signature, jti)
	rec.RequestID = requestID
	return rec
}

func assertGrant(t *testing.T, got, want tokensession.Grant) {
	t.Helper()
	if got.Kind != want.Kind || got.Signature != want.Signature || got.RequestID != want.RequestID ||
		got.ClientID != want.ClientID || got.Subject != want.Subject || got.ConsentID != want.ConsentID ||
		got.SessionID != want.SessionID || got.AccessSignature != want.AccessSignature || got.Active != want.Active ||
		!got.RequestedAt.Equal(want.RequestedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		!bytes.Equal(got.Request, want.Request) {
		t.Fatalf("grant = %+v,\nwant %+v", got, want)
	}
}
