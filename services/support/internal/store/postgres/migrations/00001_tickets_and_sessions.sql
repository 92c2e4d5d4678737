-- +goose Up
-- tickets holds every tenant's support tickets. Every query filters by
-- tenant; the (tenant, create_time, id) and (tenant, customer, create_time,
-- id) indexes serve keyset pagination of an agent's and of a customer's
-- listing. id uses the "C" collation so it sorts by bytes, the same order
-- the page tokens and the memory store use. A ticket is open, then closed
-- for good, and a closed one says when and by whom.
CREATE TABLE tickets (
    id          text COLLATE "C" PRIMARY KEY,
    tenant      text        NOT NULL CHECK (tenant <> ''),
    customer    text        NOT NULL CHECK (customer <> ''),
    summary     text        NOT NULL CHECK (char_length(summary) BETWEEN 1 AND 500),
    status      text        NOT NULL CHECK (status IN ('open', 'closed')),
    access      text        NOT NULL CHECK (access IN ('read', 'write')),
    create_time timestamptz NOT NULL,
    close_time  timestamptz,
    closed_by   text CHECK (closed_by <> ''),
    -- The target of impersonation_sessions' foreign key: a session's
    -- tenant is its ticket's.
    UNIQUE (id, tenant),
    CONSTRAINT tickets_close_matches_status CHECK (
        (status = 'open' AND close_time IS NULL AND closed_by IS NULL)
        OR (status = 'closed' AND close_time IS NOT NULL AND closed_by IS NOT NULL)
    )
);

CREATE INDEX tickets_tenant_create_time_id ON tickets (tenant, create_time, id);
CREATE INDEX tickets_tenant_customer_create_time_id ON tickets (tenant, customer, create_time, id);

-- impersonation_sessions holds every session in which an agent acted as a
-- ticket's customer. It holds the impersonation token's jti, never the
-- token. end_time is set when the session was ended before it expired.
CREATE TABLE impersonation_sessions (
    id          text COLLATE "C" PRIMARY KEY,
    ticket_id   text        NOT NULL,
    tenant      text        NOT NULL,
    customer    text        NOT NULL CHECK (customer <> ''),
    agent       text        NOT NULL CHECK (agent <> ''),
    jti         text        NOT NULL CHECK (jti <> ''),
    scopes      text[]      NOT NULL,
    start_time  timestamptz NOT NULL,
    expire_time timestamptz NOT NULL CHECK (expire_time > start_time),
    end_time    timestamptz CHECK (end_time >= start_time),
    FOREIGN KEY (ticket_id, tenant) REFERENCES tickets (id, tenant)
);

-- CloseTicket ends the active sessions of a ticket.
CREATE INDEX impersonation_sessions_open ON impersonation_sessions (tenant, ticket_id) WHERE end_time IS NULL;

-- +goose Down
DROP TABLE impersonation_sessions;
DROP TABLE tickets;
