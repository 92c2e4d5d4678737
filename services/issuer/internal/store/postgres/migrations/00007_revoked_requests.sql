-- +goose Up
-- Every revoked authorization (fosite request id), so that a grant record
-- or access token session created for it after the revocation is refused
-- (store.ErrRevoked): a refresh that rotated its refresh token just before
-- the revocation must not store live tokens after it. A revocation and
-- such a create serialize on pg_advisory_xact_lock(hashtextextended(
-- request_id, 0)). A row lasts until the latest expiry of the request's
-- records at revocation time, or store.RevocationRetention after it if that
-- is later; DeleteExpiredGrants then deletes it.
CREATE TABLE revoked_requests (
    request_id text        PRIMARY KEY CONSTRAINT revoked_requests_request_id_set CHECK (request_id <> ''),
    revoked_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CONSTRAINT revoked_requests_expiry_after_revocation CHECK (expires_at >= revoked_at)
);

CREATE INDEX revoked_requests_expires_at ON revoked_requests (expires_at);

-- +goose Down
DROP TABLE revoked_requests;
