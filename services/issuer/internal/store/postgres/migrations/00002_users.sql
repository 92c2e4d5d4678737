-- +goose Up
-- End-user accounts. The username is the identity (the sub of the user's
-- tokens) and is unique across tenants; the issuer stores it normalized.
CREATE TABLE users (
    username        text        PRIMARY KEY
                                CONSTRAINT users_username_normalized CHECK (username ~ '^[a-z0-9._-]{1,64}$'),
    tenant          text        NOT NULL CONSTRAINT users_tenant_set CHECK (tenant <> ''),
    roles           text[]      NOT NULL,
    -- argon2id in PHC string format; never the password.
    password_hash   text        NOT NULL CONSTRAINT users_password_hash_argon2id CHECK (password_hash LIKE '$argon2id$%'),
    -- Base32 RFC 6238 secret; NULL when the user has no second factor.
    totp_secret     text,
    -- Time step of the last accepted TOTP code (replay protection); 0: none yet.
    totp_last_step  bigint      NOT NULL DEFAULT 0 CONSTRAINT users_totp_last_step_nonnegative CHECK (totp_last_step >= 0),
    failed_attempts integer     NOT NULL DEFAULT 0 CONSTRAINT users_failed_attempts_nonnegative CHECK (failed_attempts >= 0),
    -- End of the current lockout; NULL when never locked or reset.
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX users_tenant ON users (tenant);

-- +goose Down
DROP TABLE users;
