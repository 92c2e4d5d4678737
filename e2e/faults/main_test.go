// Package faults holds Gatehouse's end-to-end fault tests: the platform,
// under steady traffic, goes through something that must not fail a single
// request (a signing key rotation) or must fail in the promised way. It has
// a stack of its own, with the key rotation timeline shortened from minutes
// to seconds so that a rotation runs its whole course within a test, with
// the gateway's rate limits raised so the load is not throttled, and with
// a shorter revocation staleness limit so that a cut-off revocation feed
// fails sensitive routes closed within a test.
package faults

import (
	"os"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/e2e/stack"
)

// gh is the stack every test in this package runs against.
var gh *stack.Stack

// The rotation timeline of this package's stack (the defaults are 5m, 10s,
// 1m and 10m).
//
// Why these timings make TestSigningKeyRotationUnderLoad meaningful: a
// verifier (the gateway, and the invoice service behind it) uses a fetched
// key set for -jwks-max-age and refreshes it on the first lookup after that,
// which under load is at once. A token with a kid the set lacks triggers a
// refetch only if the last fetch is -jwks-min-refetch-interval old. Both are
// verifierKeyCacheAge here, so while a verifier's set is fresh, that refetch
// is always too soon and the token is refused (401 invalid_token): the
// refetch cannot rescue a rotation, only publish-then-use can. The issuer
// publishes a new key publishLead before it signs with it; its replicas see
// a rotation within issuerKeyRefresh. With publishLead > verifierKeyCacheAge
// + issuerKeyRefresh (6s > 2s + 1s, leaving 3s for a loaded two-core
// machine), every verifier has refreshed at least once after the key was
// published before the first token signed with it arrives, so no request
// fails. Were the lead shorter than the cache age (1s, or 0), a verifier
// whose set was fetched just before the key appeared would meet the new kid
// with that set for up to verifierKeyCacheAge and refuse every such request,
// and the test would fail.
const (
	// verifierKeyCacheAge is the gateway's and the invoice service's
	// -jwks-max-age and -jwks-min-refetch-interval.
	verifierKeyCacheAge = 2 * time.Second
	// issuerKeyRefresh is the issuer's -key-refresh-interval.
	issuerKeyRefresh = time.Second
	// publishLead is the issuer's -key-publish-lead.
	publishLead = 6 * time.Second
)

// revocationMaxStaleness is the gateway's -revocation-max-staleness (the
// default is 30s): how long the revocation feed may be silent before
// sensitive routes answer 503 revocation_feed_stale. Half the default keeps
// TestRevocationFeedCutFailsSensitiveRoutesClosed short while staying well
// above the issuer's heartbeat interval (10s, not configurable), so that a
// healthy feed never makes a sensitive route fail in any test of this
// package: between two heartbeats a healthy feed is at most 10s stale.
const revocationMaxStaleness = 15 * time.Second

func TestMain(m *testing.M) {
	os.Exit(stack.Main(m, &gh, stackOptions()...))
}

// stackOptions configures the services for the shortened timeline.
func stackOptions() []stack.Option {
	const unthrottled = "100000" // requests per second, and burst
	return []stack.Option{
		stack.WithEnv("issuer", map[string]string{
			"GATEHOUSE_ISSUER_KEY_PUBLISH_LEAD":     publishLead.String(),
			"GATEHOUSE_ISSUER_KEY_REFRESH_INTERVAL": issuerKeyRefresh.String(),
			// What the issuer tells clients they may cache the JWKS for:
			// the verifiers' cache age.
			"GATEHOUSE_ISSUER_DISCOVERY_MAX_AGE": verifierKeyCacheAge.String(),
		}),
		stack.WithEnv("invoice", map[string]string{
			"GATEHOUSE_INVOICE_JWKS_MAX_AGE":              verifierKeyCacheAge.String(),
			"GATEHOUSE_INVOICE_JWKS_MIN_REFETCH_INTERVAL": verifierKeyCacheAge.String(),
		}),
		stack.WithEnv("gateway", map[string]string{
			"GATEHOUSE_GATEWAY_JWKS_MAX_AGE":              verifierKeyCacheAge.String(),
			"GATEHOUSE_GATEWAY_JWKS_MIN_REFETCH_INTERVAL": verifierKeyCacheAge.String(),
			// Every request's token is verified against the key set, not
			// answered from the verified-token cache: a token reused across
			// the rotation is checked again after it, by the gateway too.
			"GATEHOUSE_GATEWAY_TOKEN_CACHE_SIZE":        "0",
			"GATEHOUSE_GATEWAY_RATE_LIMIT_SOURCE":       unthrottled,
			"GATEHOUSE_GATEWAY_RATE_LIMIT_SOURCE_BURST": unthrottled,
			"GATEHOUSE_GATEWAY_RATE_LIMIT_CLIENT":       unthrottled,
			"GATEHOUSE_GATEWAY_RATE_LIMIT_CLIENT_BURST": unthrottled,
			// Sensitive routes fail closed after revocationMaxStaleness
			// without word from the revocation feed, not 30s: see there.
			"GATEHOUSE_GATEWAY_REVOCATION_MAX_STALENESS": revocationMaxStaleness.String(),
		}),
	}
}
