package telemetry

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// AccessLog returns a Connect interceptor that logs one line per unary call
// a server handles: procedure, Connect code and latency, with the call's
// trace id. It logs no request or response content, so no token or secret.
func AccessLog(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if req.Spec().IsClient {
				return next(ctx, req)
			}
			start := time.Now()
			resp, err := next(ctx, req)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			logger.InfoContext(ctx, "rpc", slog.String("procedure", req.Spec().Procedure),
				slog.String("code", code), slog.Duration("latency", time.Since(start)))
			return resp, err
		}
	}
}
