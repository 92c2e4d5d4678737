-- +goose Up
-- TOTP secrets sealed at rest: AES-256-GCM under a key derived from the
-- issuer's key-encryption key, with the username as additional data (see
-- postgres.UserStore). The migration cannot seal the existing clear-text
-- secrets (it has no key): those rows keep totp_secret until the
-- application reseals them (UserStore.ResealLegacyTOTPSecrets, or the next
-- UpsertUser of the user); until then the application still reads them.
ALTER TABLE users
    ADD COLUMN totp_secret_sealed bytea,
    ADD CONSTRAINT users_totp_secret_one_form
        CHECK (totp_secret IS NULL OR totp_secret_sealed IS NULL);

-- +goose Down
-- Dropping the column would silently remove every sealed second factor
-- (the users would log in with a password alone): refuse while any exists.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM users WHERE totp_secret_sealed IS NOT NULL) THEN
        RAISE EXCEPTION 'users hold sealed TOTP secrets; remove their enrolment or unseal them before migrating down';
    END IF;
END
$$;
-- +goose StatementEnd
ALTER TABLE users
    DROP CONSTRAINT users_totp_secret_one_form,
    DROP COLUMN totp_secret_sealed;
