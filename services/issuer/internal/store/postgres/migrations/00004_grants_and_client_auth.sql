-- +goose Up
-- How a client authenticates at the token endpoint, its public keys for
-- private_key_jwt, its refresh-token lifetime and the name the consent page
-- shows.
ALTER TABLE clients
    -- NULL: the issuer's default lifetime.
    ADD COLUMN refresh_token_lifespan interval,
    -- '': the default for the client's type (none if public, else client_secret_basic).
    ADD COLUMN auth_method text NOT NULL DEFAULT ''
        CONSTRAINT clients_auth_method_known
        CHECK (auth_method IN ('', 'client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')),
    -- JWK Set of public keys; only for private_key_jwt clients.
    ADD COLUMN jwks jsonb,
    ADD COLUMN display_name text NOT NULL DEFAULT '';

-- A private_key_jwt client is confidential without a secret, so the secret
-- now follows the auth method rather than the client type.
ALTER TABLE clients DROP CONSTRAINT clients_secret_iff_confidential;
ALTER TABLE clients ADD CONSTRAINT clients_credentials_match_auth_method CHECK (
    CASE
        WHEN public THEN secret_hash IS NULL AND jwks IS NULL AND auth_method IN ('', 'none')
        WHEN auth_method = 'private_key_jwt' THEN secret_hash IS NULL AND jwks IS NOT NULL
        ELSE secret_hash IS NOT NULL AND jwks IS NULL
             AND auth_method IN ('', 'client_secret_basic', 'client_secret_post')
    END);

-- Authorization codes, their PKCE and OIDC requests, and refresh tokens,
-- keyed by fosite's signature of the credential (never the credential).
-- Used and revoked records stay, inactive, until they expire so that reuse
-- is detected.
CREATE TABLE grant_records (
    kind             text        NOT NULL
                                 CONSTRAINT grant_records_kind_known
                                 CHECK (kind IN ('authorize_code', 'pkce', 'oidc', 'refresh_token')),
    signature        text        NOT NULL CONSTRAINT grant_records_signature_set CHECK (signature <> ''),
    request_id       text        NOT NULL CONSTRAINT grant_records_request_id_set CHECK (request_id <> ''),
    client_id        text        NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subject          text        NOT NULL,
    -- '': the authorization rests on no consent record.
    consent_id       text        NOT NULL,
    access_signature text        NOT NULL,
    active           boolean     NOT NULL,
    requested_at     timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    -- The encoded fosite request, byte for byte.
    request          bytea       NOT NULL CONSTRAINT grant_records_request_set CHECK (octet_length(request) > 0),
    PRIMARY KEY (kind, signature)
);

CREATE INDEX grant_records_request_id ON grant_records (request_id);
CREATE INDEX grant_records_consent_id ON grant_records (consent_id) WHERE consent_id <> '';
CREATE INDEX grant_records_client_id ON grant_records (client_id);
CREATE INDEX grant_records_expires_at ON grant_records (expires_at);

-- The jti of every accepted client assertion (RFC 7523) until it expires.
CREATE TABLE client_assertion_jtis (
    jti        text        PRIMARY KEY
                           CONSTRAINT client_assertion_jtis_jti_length CHECK (octet_length(jti) BETWEEN 1 AND 256),
    expires_at timestamptz NOT NULL
);

CREATE INDEX client_assertion_jtis_expires_at ON client_assertion_jtis (expires_at);

-- +goose Down
-- Fails while a private_key_jwt client exists: the old rule requires every
-- confidential client to have a secret.
DROP TABLE client_assertion_jtis;
DROP TABLE grant_records;
ALTER TABLE clients DROP CONSTRAINT clients_credentials_match_auth_method;
ALTER TABLE clients
    DROP COLUMN display_name,
    DROP COLUMN jwks,
    DROP COLUMN auth_method,
    DROP COLUMN refresh_token_lifespan;
ALTER TABLE clients ADD CONSTRAINT clients_secret_iff_confidential CHECK (public = (secret_hash IS NULL));
