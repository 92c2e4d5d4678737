package app

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

// Paths of the admin API.
const (
	// AdminKeysPath lists the signing keys (GET).
	AdminKeysPath = "/admin/keys"
	// AdminRotatePath creates a new signing key now (POST).
	AdminRotatePath = "/admin/keys/rotate"
)

// minAdminRotationInterval is the least time between two rotations through
// the admin API (per replica).
const minAdminRotationInterval = time.Minute

// ScopeKeysAdmin lets a confidential client list and rotate signing keys.
const ScopeKeysAdmin = "keys:admin"

type rotatedByKey struct{}

// rotatedBy names who asked for a rotation in the key.created audit event.
func rotatedBy(ctx context.Context, fallback string) string {
	if by, ok := ctx.Value(rotatedByKey{}).(string); ok {
		return by
	}
	return fallback
}

// adminKeys serves the admin API for signing keys. The caller is a
// confidential client authenticating with client_secret_basic that holds
// the keys:admin scope; every rotation is audited with its client id.
type adminKeys struct {
	app      *App
	provider *token.Provider
	logger   *slog.Logger

	mu sync.Mutex
	// lastRotation is when this replica last rotated on request.
	lastRotation time.Time
}

func (h *adminKeys) mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+AdminKeysPath, h.list)
	mux.HandleFunc("POST "+AdminRotatePath, h.rotate)
}

// keyView is one key of the admin API's answers.
type keyView struct {
	KID        string    `json:"kid"`
	State      string    `json:"state"`
	CreatedAt  time.Time `json:"created_at"`
	ActivateAt time.Time `json:"activate_at"`
	RetireAt   time.Time `json:"retire_at,omitzero"`
	ExpireAt   time.Time `json:"expire_at,omitzero"`
}

func (h *adminKeys) authorize(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, err := h.provider.AuthenticateBasic(r.Context(), r.Header, ScopeKeysAdmin)
	switch {
	case errors.Is(err, token.ErrClientUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
		writeAdminError(w, http.StatusUnauthorized, "invalid_client", "Authenticate with client_secret_basic.")
		return "", false
	case errors.Is(err, token.ErrClientForbidden):
		h.logger.WarnContext(r.Context(), "admin request refused", slog.String("client_id", id), slog.String("path", r.URL.Path))
		writeAdminError(w, http.StatusForbidden, "insufficient_scope", "The client lacks the keys:admin scope.")
		return "", false
	case err != nil:
		writeAdminError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "Try again later.")
		return "", false
	}
	return id, true
}

func (h *adminKeys) list(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.authorize(w, r); !ok {
		return
	}
	writeAdminJSON(w, http.StatusOK, map[string]any{"keys": h.views()})
}

func (h *adminKeys) rotate(w http.ResponseWriter, r *http.Request) {
	id, ok := h.authorize(w, r)
	if !ok {
		return
	}
	h.mu.Lock()
	wait := time.Until(h.lastRotation.Add(minAdminRotationInterval))
	if wait <= 0 {
		h.lastRotation = time.Now()
	}
	h.mu.Unlock()
	if wait > 0 {
		// Each rotation adds a key to the JWKS for hours: a burst of
		// requests must not balloon it.
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		writeAdminError(w, http.StatusTooManyRequests, "too_many_requests", "A key was rotated through this API less than a minute ago; try again later.")
		return
	}
	ctx := context.WithValue(r.Context(), rotatedByKey{}, "client:"+id)
	kid, err := h.app.RotateSigningKey(ctx)
	if err != nil {
		h.logger.ErrorContext(ctx, "admin key rotation failed", slog.String("client_id", id), slog.Any("error", err))
		writeAdminError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "The rotation failed; nothing changed. Try again later.")
		return
	}
	h.logger.InfoContext(ctx, "signing key rotated on request", slog.String("client_id", id), slog.String("kid", kid))
	writeAdminJSON(w, http.StatusOK, map[string]any{"rotated": kid, "keys": h.views()})
}

func (h *adminKeys) views() []keyView {
	now := time.Now()
	recs := h.app.keys.Records()
	out := make([]keyView, 0, len(recs))
	for _, rec := range recs {
		out = append(out, keyView{
			KID: rec.KID, State: string(rec.State(now)), CreatedAt: rec.CreatedAt,
			ActivateAt: rec.ActivateAt, RetireAt: rec.RetireAt, ExpireAt: rec.ExpireAt,
		})
	}
	return out
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeAdminError(w http.ResponseWriter, status int, code, description string) {
	writeAdminJSON(w, status, map[string]string{"error": code, "error_description": description})
}
