-- +goose Up
-- The PDP's policy store (services/pdp/internal/policystore). Its versions
-- are recorded in pdp_policy_goose_db_version.

-- Signed bundles, immutable once stored; seq orders them by upload.
CREATE TABLE policy_bundles (
    revision       text        PRIMARY KEY,
    seq            bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    digest         text        NOT NULL,
    tarball        bytea       NOT NULL,
    signing_key_id text        NOT NULL,
    uploaded_by    text        NOT NULL,
    uploaded_at    timestamptz NOT NULL DEFAULT now()
);

-- The rollout state: one row, generation 0 until the first change. Every
-- change is a compare-and-set on generation.
CREATE TABLE policy_rollout (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation     bigint  NOT NULL CHECK (generation >= 0),
    active         text    NOT NULL,
    candidate      text    NOT NULL,
    mode           text    NOT NULL,
    canary_percent integer NOT NULL,
    previous       text    NOT NULL,
    updated_by     text    NOT NULL,
    updated_at     timestamptz
);
INSERT INTO policy_rollout (generation, active, candidate, mode, canary_percent, previous, updated_by)
VALUES (0, '', '', '', 0, '', '');

-- One row per rollout change, keyed by the generation it produced.
CREATE TABLE policy_rollout_history (
    generation     bigint      PRIMARY KEY,
    action         text        NOT NULL,
    actor          text        NOT NULL,
    from_revision  text        NOT NULL,
    to_revision    text        NOT NULL,
    forced         boolean     NOT NULL,
    canary_percent integer     NOT NULL,
    changed_at     timestamptz NOT NULL
);

-- Shadow comparison counts per (active, candidate) pair.
CREATE TABLE policy_shadow_counts (
    active    text   NOT NULL,
    candidate text   NOT NULL,
    compared  bigint NOT NULL,
    agreed    bigint NOT NULL,
    dropped   bigint NOT NULL,
    PRIMARY KEY (active, candidate)
);

-- The comparisons that did not agree; the index serves the report, which
-- groups them by decisions and reasons and samples the newest.
CREATE TABLE policy_divergences (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    active             text        NOT NULL,
    candidate          text        NOT NULL,
    decision_id        text        NOT NULL,
    active_decision    text        NOT NULL,
    active_reason      text        NOT NULL,
    candidate_decision text        NOT NULL,
    candidate_reason   text        NOT NULL,
    subject            text        NOT NULL,
    tenant             text        NOT NULL,
    action             text        NOT NULL,
    resource           text        NOT NULL,
    occurred_at        timestamptz NOT NULL
);
CREATE INDEX policy_divergences_report_idx ON policy_divergences
    (active, candidate, active_decision, candidate_decision, active_reason, candidate_reason, occurred_at DESC, id DESC);

-- +goose Down
DROP TABLE policy_divergences;
DROP TABLE policy_shadow_counts;
DROP TABLE policy_rollout_history;
DROP TABLE policy_rollout;
DROP TABLE policy_bundles;
