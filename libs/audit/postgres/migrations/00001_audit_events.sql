-- +goose Up
-- The audit chain of libs/audit. Its versions are recorded in
-- audit_goose_db_version, apart from the host service's migrations.

-- The chain's head: the last event's seq and hash (0 and '' when empty).
-- Every append locks this one row FOR UPDATE, so appends from any number of
-- replicas take turns and never fork the chain.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL CHECK (seq >= 0),
    hash      text    NOT NULL
);
INSERT INTO audit_chain_head (seq, hash) VALUES (0, '');

-- One row per event; the columns are the fields of audit.Event, and hash
-- covers all of them but itself (docs/audit.md).
CREATE TABLE audit_events (
    seq            bigint      PRIMARY KEY CHECK (seq > 0),
    event_id       text        NOT NULL UNIQUE,
    occurred_at    timestamptz NOT NULL,
    type           text        NOT NULL,
    subject        text        NOT NULL,
    actor_chain    text[]      NOT NULL,
    client_id      text        NOT NULL,
    tenant         text        NOT NULL,
    action         text        NOT NULL,
    resource       text        NOT NULL,
    decision       text        NOT NULL,
    reason_code    text        NOT NULL,
    policy_version text        NOT NULL,
    shadow         jsonb,
    request_id     text        NOT NULL,
    trace_id       text        NOT NULL,
    latency_ns     bigint      NOT NULL,
    attributes     jsonb       NOT NULL,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL,
    hash_version   smallint    NOT NULL
);
CREATE INDEX audit_events_type_idx ON audit_events (type, seq);
CREATE INDEX audit_events_subject_idx ON audit_events (subject, seq);
CREATE INDEX audit_events_client_id_idx ON audit_events (client_id, seq);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant, seq);
CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);

-- Append-only: updates, deletes and truncation are refused. A superuser
-- can still get around this (the hash chain is what detects that).
-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE audit_chain_head;
