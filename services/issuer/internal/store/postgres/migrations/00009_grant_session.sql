-- +goose Up
-- The browser login session (browsersession.Session.ID, a hex SHA-256)
-- that authorized each grant record, so that signing out can revoke every
-- authorization of the session (store.GrantStore.RequestIDsForSession).
-- '': no browser login was involved, and the records that predate this
-- migration (they are never found by session, as before).
ALTER TABLE grant_records
    ADD COLUMN session_id text NOT NULL DEFAULT ''
        CONSTRAINT grant_records_session_id_length CHECK (octet_length(session_id) <= 128);

CREATE INDEX grant_records_session_id ON grant_records (session_id) WHERE session_id <> '';

-- +goose Down
DROP INDEX grant_records_session_id;
ALTER TABLE grant_records DROP COLUMN session_id;
