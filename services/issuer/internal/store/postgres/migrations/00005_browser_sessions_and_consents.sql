-- +goose Up
-- Signed-in browsers. The cookie holds a random secret; the row is keyed by
-- its SHA-256 (hex), so the table never holds a usable cookie.
CREATE TABLE browser_sessions (
    id              text        PRIMARY KEY CONSTRAINT browser_sessions_id_sha256 CHECK (id ~ '^[0-9a-f]{64}$'),
    subject         text        NOT NULL CONSTRAINT browser_sessions_subject_set CHECK (subject <> ''),
    tenant          text        NOT NULL,
    auth_time       timestamptz NOT NULL,
    amr             text[]      NOT NULL,
    acr             text        NOT NULL CONSTRAINT browser_sessions_acr_known CHECK (acr IN ('pwd', 'mfa')),
    -- Absolute end of the session, and the idle end that each use moves
    -- forward (never past expires_at).
    expires_at      timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    CONSTRAINT browser_sessions_idle_within_life CHECK (idle_expires_at <= expires_at)
);

CREATE INDEX browser_sessions_idle_expires_at ON browser_sessions (idle_expires_at);

-- Authorization requests parked while the user logs in and consents: the
-- request as the authorization endpoint validated it, the browser it is
-- bound to, and the outcome the pages record. Updates are compare-and-set
-- on version. Rows live minutes; expired ones are swept.
CREATE TABLE interactions (
    id                   text        PRIMARY KEY,
    version              bigint      NOT NULL,
    -- SHA-256 (hex) of the browser cookie the interaction is bound to.
    browser              text        NOT NULL CONSTRAINT interactions_browser_sha256 CHECK (browser ~ '^[0-9a-f]{64}$'),
    query                jsonb       NOT NULL,
    client_id            text        NOT NULL,
    redirect_uri         text        NOT NULL,
    scopes               text[]      NOT NULL,
    require_login        boolean     NOT NULL,
    require_mfa          boolean     NOT NULL,
    next                 text        NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    subject              text        NOT NULL,
    login_at             timestamptz,
    consent_granted      boolean     NOT NULL,
    consent_id           text        NOT NULL,
    consent_denied       boolean     NOT NULL,
    failure              text        NOT NULL,
    -- The login between its password and TOTP steps; '' / NULL otherwise.
    mfa_username         text        NOT NULL,
    password_verified_at timestamptz,
    CONSTRAINT interactions_client_xor_next CHECK ((client_id = '') <> (next = '')),
    CONSTRAINT interactions_one_consent_answer CHECK (NOT (consent_granted AND consent_denied))
);

CREATE INDEX interactions_expires_at ON interactions (expires_at);

-- Consents: which scopes a user granted to which client, when, until when,
-- and when withdrawn. Rows are never deleted (history); a new grant is a
-- new row. client_id has no foreign key so that a consent outlives a
-- client's re-registration and the memory store behaves the same.
CREATE TABLE consents (
    id           text        PRIMARY KEY,
    subject      text        NOT NULL CONSTRAINT consents_subject_set CHECK (subject <> ''),
    tenant       text        NOT NULL,
    client_id    text        NOT NULL CONSTRAINT consents_client_set CHECK (client_id <> ''),
    scopes       text[]      NOT NULL,
    granted_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    withdrawn_at timestamptz,
    CONSTRAINT consents_expire_after_grant CHECK (expires_at > granted_at)
);

CREATE INDEX consents_subject_granted_at ON consents (subject, granted_at DESC, id DESC);

-- +goose Down
DROP TABLE consents;
DROP TABLE interactions;
DROP TABLE browser_sessions;
