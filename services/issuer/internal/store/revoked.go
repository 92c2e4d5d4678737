package store

import (
	"errors"
	"time"
)

// ErrRevoked means the record's authorization (its request id) was revoked
// by GrantStore.RevokeRequest or MarkRequestRevoked: CreateGrant and
// CreateTokenSession refuse it and store nothing. A revocation is
// serialized against those creates, so once it has returned no later
// create for its request id
// succeeds, even that of a refresh which rotated its refresh token just
// before the revocation and stores the new tokens after it.
var ErrRevoked = errors.New("store: grant revoked")

// RevocationRetention is the least time a revoked request id is remembered:
// its revocation lasts until the latest expiry of the request's grant
// records and access token sessions at revocation time, or this long after
// the revocation if that is later. It is far longer than any token request
// takes, so an in-flight refresh or code exchange still meets the
// revocation however close to expiry its credential was.
// GrantStore.DeleteExpiredGrants forgets expired revocations and counts
// them with the rest.
const RevocationRetention = time.Hour
