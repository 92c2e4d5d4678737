-- +goose Up
-- The log is written thousands of times a second (every PDP decision) and
-- read rarely (an operator's `gatehouse audit list`, `audit verify`). Each
-- index is work on every append, so the log keeps only what appends and
-- verification need (the seq primary key, the unique event_id that refuses
-- duplicates) and one cheap BRIN index for time windows: appends are in
-- time order, so a block range summary finds them (docs/audit.md). A
-- filtered list (type, subject, client, tenant, actor) scans in seq order
-- within its time window; give it -since.
DROP INDEX audit_events_type_idx;
DROP INDEX audit_events_subject_idx;
DROP INDEX audit_events_client_id_idx;
DROP INDEX audit_events_tenant_idx;
DROP INDEX audit_events_occurred_at_idx;
CREATE INDEX audit_events_occurred_at_brin ON audit_events USING brin (occurred_at);

-- +goose Down
DROP INDEX audit_events_occurred_at_brin;
CREATE INDEX audit_events_type_idx ON audit_events (type, seq);
CREATE INDEX audit_events_subject_idx ON audit_events (subject, seq);
CREATE INDEX audit_events_client_id_idx ON audit_events (client_id, seq);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant, seq);
CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);
