// Package revocation is what a resource server needs to honour the
// issuer's revocations before the revoked access tokens expire: a Set that
// answers "is this access token revoked?" from the events of the issuer's
// revocation feed, and a Follower that keeps the Set current, resuming
// after disconnects, and says how stale it may be.
//
// Package feedclient is the resuming subscriber underneath; package
// revocationtest is a fake feed for tests. docs/revocation-feed.md
// ("Consuming the feed") describes the whole.
package revocation
