-- +goose Up
ALTER TABLE widgets ADD COLUMN color text NOT NULL DEFAULT 'blue';
-- A row that must exist exactly once, however many processes migrate at once.
INSERT INTO widgets (name) VALUES ('seed');

-- +goose Down
ALTER TABLE widgets DROP COLUMN color;
DELETE FROM widgets WHERE name = 'seed';
