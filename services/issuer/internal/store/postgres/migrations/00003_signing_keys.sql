-- +goose Up
-- The issuer's signing keys. The private key is stored only sealed under the
-- key-encryption key (AES-256-GCM, the kid as additional data); the public
-- key is in clear so it can be published even where it cannot be decrypted.
CREATE TABLE signing_keys (
    kid          text        PRIMARY KEY,
    alg          text        NOT NULL CHECK (alg = 'ES256'),
    public_jwk   jsonb       NOT NULL,
    sealed_key   bytea       NOT NULL,
    -- kid of the newest key when this one was created ('' for the first).
    -- UNIQUE: a key has at most one successor, so replicas rotating at the
    -- same time create exactly one new key; the losers get a unique
    -- violation and reload.
    predecessor  text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    activate_at  timestamptz NOT NULL,
    -- NULL until a successor is created.
    retire_at    timestamptz,
    expire_at    timestamptz,
    CONSTRAINT signing_keys_activate_after_create CHECK (activate_at >= created_at),
    CONSTRAINT signing_keys_retire_with_expire CHECK ((retire_at IS NULL) = (expire_at IS NULL) AND expire_at >= retire_at)
);

CREATE INDEX signing_keys_expire_at ON signing_keys (expire_at);

-- +goose Down
DROP TABLE signing_keys;
