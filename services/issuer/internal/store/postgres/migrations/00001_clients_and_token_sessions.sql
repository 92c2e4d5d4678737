-- +goose Up
CREATE TABLE clients (
    id                    text        PRIMARY KEY,
    -- Keyed hash (HMAC-SHA256) of the secret; NULL for public clients.
    secret_hash           bytea,
    tenant                text        NOT NULL DEFAULT '',
    public                boolean     NOT NULL,
    grant_types           text[]      NOT NULL,
    response_types        text[]      NOT NULL,
    scopes                text[]      NOT NULL,
    audiences             text[]      NOT NULL,
    redirect_uris         text[]      NOT NULL,
    -- NULL: the issuer's default lifetime.
    access_token_lifespan interval,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clients_secret_iff_confidential CHECK (public = (secret_hash IS NULL))
);

-- One row per issued access token, keyed by the token's JWS signature.
CREATE TABLE access_token_sessions (
    signature    text        PRIMARY KEY,
    jti          text        NOT NULL UNIQUE,
    request_id   text        NOT NULL,
    client_id    text        NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subject      text        NOT NULL,
    scopes       text[]      NOT NULL,
    audiences    text[]      NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    session      jsonb       NOT NULL
);

CREATE INDEX access_token_sessions_request_id ON access_token_sessions (request_id);
CREATE INDEX access_token_sessions_client_id ON access_token_sessions (client_id);
CREATE INDEX access_token_sessions_expires_at ON access_token_sessions (expires_at);

-- +goose Down
DROP TABLE access_token_sessions;
DROP TABLE clients;
