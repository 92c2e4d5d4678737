-- +goose Up
-- An approved invoice names who approved it and when; a draft has neither.
-- Approval is one-way: the service only ever updates a draft to approved.
ALTER TABLE invoices
    ADD COLUMN approved_by  text CHECK (approved_by <> ''),
    ADD COLUMN approve_time timestamptz,
    ADD CONSTRAINT invoices_approval_matches_status CHECK (
        (status = 'draft' AND approved_by IS NULL AND approve_time IS NULL)
        OR (status = 'approved' AND approved_by IS NOT NULL AND approve_time IS NOT NULL)
    );

-- +goose Down
ALTER TABLE invoices
    DROP CONSTRAINT invoices_approval_matches_status,
    DROP COLUMN approve_time,
    DROP COLUMN approved_by;
