-- +goose Up
-- The revocation log's one row: its id (a new database is a new log, whose
-- cursors mean nothing to a subscriber of another) and its head, the cursor
-- of the newest event. An append increments head and inserts the event in
-- one transaction; the row lock serializes appends until commit, so cursors
-- become visible in order and a reader never moves past a cursor that a
-- slower transaction still fills in. head survives the deletion of old
-- events, so cursors are never reused.
CREATE TABLE revocation_log (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    log_id     text    NOT NULL DEFAULT gen_random_uuid()::text,
    head       bigint  NOT NULL DEFAULT 0 CHECK (head >= 0)
);
INSERT INTO revocation_log DEFAULT VALUES;

-- One row per revocation (package revocation's Event). Rows are deleted
-- once expires_at has passed; the bounds repeat the domain's validation.
CREATE TABLE revocation_events (
    cursor         bigint      PRIMARY KEY CHECK (cursor > 0),
    kind           text        NOT NULL CHECK (kind IN ('token', 'refresh_family', 'session', 'client', 'consent')),
    revoked_id     text        NOT NULL CHECK (revoked_id <> '' AND octet_length(revoked_id) <= 255),
    jtis           text[]      NOT NULL CHECK (cardinality(jtis) <= 1000),
    subject        text        NOT NULL CHECK (octet_length(subject) <= 255),
    client_id      text        NOT NULL CHECK (octet_length(client_id) <= 255),
    tenant         text        NOT NULL CHECK (octet_length(tenant) <= 255),
    issued_before  timestamptz,
    revoked_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL CHECK (expires_at >= revoked_at),
    reason         text        NOT NULL CHECK (octet_length(reason) <= 64)
);

CREATE INDEX revocation_events_expires_at ON revocation_events (expires_at);

-- +goose Down
DROP TABLE revocation_events;
DROP TABLE revocation_log;
