-- +goose Up
-- invoices holds every tenant's invoices. Every query filters by tenant; the
-- (tenant, create_time, id) index serves keyset pagination. id uses the "C"
-- collation so it sorts by bytes, the same order the page tokens and the
-- memory store use.
CREATE TABLE invoices (
    id           text COLLATE "C" PRIMARY KEY,
    tenant       text        NOT NULL CHECK (tenant <> ''),
    customer     text        NOT NULL CHECK (customer <> ''),
    amount_cents bigint      NOT NULL CHECK (amount_cents > 0),
    currency     char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status       text        NOT NULL CHECK (status IN ('draft', 'approved')),
    created_by   text        NOT NULL CHECK (created_by <> ''),
    create_time  timestamptz NOT NULL
);

CREATE INDEX invoices_tenant_create_time_id ON invoices (tenant, create_time, id);

-- +goose Down
DROP TABLE invoices;
