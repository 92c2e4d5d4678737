package token

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"slices"

	"github.com/ory/fosite"
)

// readForm reads the bounded application/x-www-form-urlencoded body of r
// into r.PostForm. Every parameter must appear at most once (RFC 6749 §3.1,
// §3.2) except those named in repeatable. Query parameters are never read:
// a token in a URL ends up in access logs.
func readForm(w http.ResponseWriter, r *http.Request, repeatable ...string) error {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/x-www-form-urlencoded" {
		return fosite.ErrInvalidRequest.WithHint("The request body must be application/x-www-form-urlencoded.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return withStatus(fosite.ErrInvalidRequest.WithHintf("The request body exceeds %d bytes.", MaxBodyBytes), http.StatusRequestEntityTooLarge)
		}
		return fosite.ErrInvalidRequest.WithHint("The request body is not a valid form.").WithWrap(err).WithDebug(err.Error())
	}
	for name, values := range r.PostForm {
		if len(values) > 1 && !slices.Contains(repeatable, name) {
			return fosite.ErrInvalidRequest.WithHint("Request parameters must not be included more than once.").WithDebugf("repeated parameter %q", truncate(name))
		}
	}
	return nil
}

// writeRejection answers with err in RFC 6749 §5.2 form (status from err,
// Cache-Control: no-store, WWW-Authenticate on 401) and logs msg with the
// detail only operators may see (hint and debug). It never logs the token
// or a secret.
func writeRejection(ctx context.Context, w http.ResponseWriter, r *http.Request, provider fosite.OAuth2Provider, logger *slog.Logger, msg string, err error) {
	rfcErr, ok := errors.AsType[*fosite.RFC6749Error](err)
	if !ok {
		rfcErr = fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	level := slog.LevelInfo
	if rfcErr.CodeField >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	logger.Log(ctx, level, msg,
		slog.String("error", rfcErr.ErrorField),
		slog.Int("status", rfcErr.CodeField),
		slog.String("hint", rfcErr.HintField),
		slog.String("debug", rfcErr.DebugField),
		slog.String("client_id", presentedClientID(r, nil)),
	)
	if rfcErr.CodeField == http.StatusUnauthorized {
		// RFC 6749 §5.2 and RFC 9110 §11.6.1: a 401 names the scheme to use.
		w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
	}
	provider.WriteAccessError(ctx, w, nil, rfcErr)
}
