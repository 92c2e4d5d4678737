// Package adminrpc serves gatehouse.authz.v1.PolicyAdminService over
// Connect, gRPC and gRPC-Web: pushing signed policy bundles and moving the
// rollout state through shadow, canary, promotion and rollback. Every
// procedure needs a bearer access token with the policy:admin scope; every
// change is written compare-and-set on the rollout generation just read,
// and recorded as a policy.changed audit event.
package adminrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// Scope is the scope every PolicyAdminService procedure requires.
const Scope = "policy:admin"

// MaxRequestBytes is the read limit to mount the handler with
// (connect.WithReadMaxBytes): a PushBundle of the largest bundle the store
// takes, with room to spare, so that a slightly larger bundle is refused
// with bundle_too_large rather than a bare resource_exhausted.
const MaxRequestBytes = policystore.MaxBundleBytes + 1<<20

// Limits of the read procedures.
const (
	defaultSamplesPerGroup = 3
	defaultHistoryLimit    = 50
)

// convergeTimeout bounds how long a change waits for this replica to serve
// it before answering (see Deps.Local).
const convergeTimeout = 2 * time.Second

// Authenticator verifies a raw bearer access token;
// *accesstoken.Verifier implements it.
type Authenticator interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// BundleChecker verifies a pushed tarball's signature and compiles it, and
// returns it as a bundle to store (UploadedBy and UploadedAt unset). Its
// errors wrap bundle.ErrUnsigned, bundle.ErrSignature, bundle.ErrTooLarge
// or bundle.ErrInvalid; any other error is taken as an invalid bundle too.
type BundleChecker interface {
	Check(ctx context.Context, tarball []byte) (policystore.Bundle, error)
}

// LocalState is this replica's view of the rollout; *rollout.Manager
// implements it.
type LocalState interface {
	// Await returns once the replica serves generation or a later one.
	Await(ctx context.Context, generation int64) error
	// State is the rollout state the replica serves.
	State() policystore.Rollout
}

// Deps are a Handler's collaborators. Store, Check, Auth and Audit are
// required.
type Deps struct {
	Store policystore.Store
	Check BundleChecker
	Auth  Authenticator
	// Audit receives a policy.changed event for every change.
	Audit audit.Emitter
	// Local, when set, is waited for (up to two seconds) after a change,
	// so that a decision asked of this replica right after the answer is
	// made under the new state. Other replicas follow within a second.
	Local LocalState
	// Logger receives refused tokens, refused promotions and failures; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock of audit events; nil is time.Now.
	Now func() time.Time
}

// Handler implements authzv1connect.PolicyAdminServiceHandler.
type Handler struct {
	store policystore.Store
	check BundleChecker
	auth  Authenticator
	audit audit.Emitter
	local LocalState
	log   *slog.Logger
	now   func() time.Time
}

var _ authzv1connect.PolicyAdminServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler with deps.
func NewHandler(deps Deps) (*Handler, error) {
	switch {
	case deps.Store == nil:
		return nil, errors.New("adminrpc: a policy store is required")
	case deps.Check == nil:
		return nil, errors.New("adminrpc: a bundle checker is required")
	case deps.Auth == nil:
		return nil, errors.New("adminrpc: an authenticator is required")
	case deps.Audit == nil:
		return nil, errors.New("adminrpc: an audit emitter is required")
	}
	h := &Handler{
		store: deps.Store, check: deps.Check, auth: deps.Auth, audit: deps.Audit,
		local: deps.Local, log: deps.Logger, now: deps.Now,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h, nil
}

// authorize verifies the request's bearer token and its policy:admin scope.
func (h *Handler) authorize(ctx context.Context, hdr http.Header) (*accesstoken.Claims, error) {
	raw, ok := enforce.BearerToken(hdr)
	if !ok {
		return nil, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	claims, err := h.auth.Verify(ctx, raw)
	if errors.Is(err, accesstoken.ErrKeysUnavailable) {
		h.log.ErrorContext(ctx, "cannot verify tokens: issuer keys unavailable", slog.Any("error", err))
		return nil, enforce.Unavailable(ctx, reason.IssuerUnavailable)
	}
	if err != nil {
		h.log.InfoContext(ctx, "policy admin: token rejected", slog.Any("error", err))
		return nil, enforce.Unauthenticated(ctx, reason.InvalidToken)
	}
	if !claims.HasScope(Scope) {
		h.log.InfoContext(ctx, "policy admin: token lacks the policy:admin scope",
			slog.String("subject", claims.Subject), slog.String("client_id", claims.ClientID))
		return nil, enforce.Denied(ctx, enforce.Decision{
			State:          authzv1.Decision_DECISION_DENY,
			ReasonCode:     reason.InsufficientScope,
			Message:        "the token lacks the " + Scope + " scope",
			RequiredScopes: []string{Scope},
		})
	}
	return claims, nil
}

// PushBundle verifies, compiles and stores a bundle without activating it.
func (h *Handler) PushBundle(ctx context.Context, req *connect.Request[authzv1.PushBundleRequest]) (*connect.Response[authzv1.PushBundleResponse], error) {
	claims, err := h.authorize(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	tarball := req.Msg.GetBundle()
	if len(tarball) > policystore.MaxBundleBytes {
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.BundleTooLarge,
			fmt.Sprintf("a bundle is at most %d bytes; this one has %d", policystore.MaxBundleBytes, len(tarball)))
	}
	b, err := h.check.Check(ctx, tarball)
	if err != nil {
		return nil, h.bundleError(ctx, err)
	}
	b.UploadedBy = claims.Subject
	created, err := h.store.PutBundle(ctx, b)
	if err != nil {
		return nil, h.storeError(ctx, "store bundle", err)
	}
	// Read it back: when it was stored before, its first upload is what
	// the answer describes.
	stored, err := h.store.Bundle(ctx, b.Revision)
	if err != nil {
		return nil, h.storeError(ctx, "read bundle", err)
	}
	if created {
		h.record(ctx, claims, "push", b.Revision, map[string]string{
			"to": b.Revision, "digest": b.Digest, "signing_key_id": b.SigningKeyID,
		})
	}
	info := policystore.BundleInfo{
		Revision: stored.Revision, Digest: stored.Digest, SizeBytes: int64(len(stored.Tarball)),
		SigningKeyID: stored.SigningKeyID, UploadedBy: stored.UploadedBy, UploadedAt: stored.UploadedAt,
	}
	return connect.NewResponse(&authzv1.PushBundleResponse{Bundle: toBundleInfo(info), Created: created}), nil
}

// ListBundles lists the stored bundles, newest first.
func (h *Handler) ListBundles(ctx context.Context, req *connect.Request[authzv1.ListBundlesRequest]) (*connect.Response[authzv1.ListBundlesResponse], error) {
	if _, err := h.authorize(ctx, req.Header()); err != nil {
		return nil, err
	}
	infos, err := h.store.ListBundles(ctx)
	if err != nil {
		return nil, h.storeError(ctx, "list bundles", err)
	}
	resp := &authzv1.ListBundlesResponse{Bundles: make([]*authzv1.BundleInfo, len(infos))}
	for i, info := range infos {
		resp.Bundles[i] = toBundleInfo(info)
	}
	return connect.NewResponse(resp), nil
}

// GetRollout returns the current rollout state.
func (h *Handler) GetRollout(ctx context.Context, req *connect.Request[authzv1.GetRolloutRequest]) (*connect.Response[authzv1.GetRolloutResponse], error) {
	if _, err := h.authorize(ctx, req.Header()); err != nil {
		return nil, err
	}
	st, err := h.store.Rollout(ctx)
	if err != nil {
		return nil, h.storeError(ctx, "read rollout", err)
	}
	resp := &authzv1.GetRolloutResponse{Rollout: toRollout(st)}
	if h.local != nil {
		resp.ServedGeneration = h.local.State().Generation
	}
	return connect.NewResponse(resp), nil
}

// StartShadow makes a stored bundle the candidate in shadow mode. Asking
// for the state that already holds is not a change: it answers with the
// state and records nothing.
func (h *Handler) StartShadow(ctx context.Context, req *connect.Request[authzv1.StartShadowRequest]) (*connect.Response[authzv1.StartShadowResponse], error) {
	claims, err := h.authorize(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	rev := req.Msg.GetRevision()
	if rev == "" {
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "revision is required")
	}
	st, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	if rev == st.Active {
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"that revision is the active one; shadow a different revision")
	}
	if st.Mode == policystore.ModeShadow && st.Candidate == rev {
		return connect.NewResponse(&authzv1.StartShadowResponse{Rollout: toRollout(st)}), nil
	}
	next := policystore.Rollout{Active: st.Active, Candidate: rev, Mode: policystore.ModeShadow, Previous: st.Previous}
	change := policystore.Change{Action: policystore.ActionShadow, Actor: claims.Subject, From: st.Active, To: rev}
	written, err := h.apply(ctx, claims, st, next, change, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authzv1.StartShadowResponse{Rollout: toRollout(written)}), nil
}

// StartCanary lets the candidate decide for a share of principals.
func (h *Handler) StartCanary(ctx context.Context, req *connect.Request[authzv1.StartCanaryRequest]) (*connect.Response[authzv1.StartCanaryResponse], error) {
	claims, err := h.authorize(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	percent := int(req.Msg.GetPercent())
	if percent < 1 || percent > 100 {
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "percent must be 1 to 100")
	}
	st, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	rev := req.Msg.GetRevision()
	if rev == "" {
		rev = st.Candidate
	}
	switch {
	case rev == "":
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"no candidate is staged; name a revision")
	case rev == st.Active:
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"that revision is the active one; canary a different revision")
	case st.Mode == policystore.ModeCanary && st.Candidate == rev && st.CanaryPercent == percent:
		return connect.NewResponse(&authzv1.StartCanaryResponse{Rollout: toRollout(st)}), nil
	}
	next := policystore.Rollout{
		Active: st.Active, Candidate: rev, Mode: policystore.ModeCanary, CanaryPercent: percent, Previous: st.Previous,
	}
	change := policystore.Change{Action: policystore.ActionCanary, Actor: claims.Subject, From: st.Active, To: rev, CanaryPercent: percent}
	written, err := h.apply(ctx, claims, st, next, change, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authzv1.StartCanaryResponse{Rollout: toRollout(written)}), nil
}

// Promote makes the candidate active, unless its shadow report shows a
// divergence that allows what the active bundle does not and force is not
// set.
func (h *Handler) Promote(ctx context.Context, req *connect.Request[authzv1.PromoteRequest]) (*connect.Response[authzv1.PromoteResponse], error) {
	claims, err := h.authorize(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	st, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	if st.Candidate == "" {
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict, "no candidate is staged")
	}
	if want := req.Msg.GetExpectedCandidate(); want != "" && want != st.Candidate {
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"the staged candidate is not the expected one; read the rollout again")
	}
	rep, err := h.store.Report(ctx, st.Active, st.Candidate, 1)
	if err != nil {
		return nil, h.storeError(ctx, "read report", err)
	}
	var loosening int64
	for _, g := range rep.Groups {
		if g.Loosens() {
			loosening += g.Count
		}
	}
	if loosening > 0 && !req.Msg.GetForce() {
		// Not a change, so not audited; the log keeps the attempt.
		h.log.WarnContext(ctx, "policy promotion refused: the candidate allows requests the active bundle does not",
			slog.String("subject", claims.Subject), slog.String("active", st.Active),
			slog.String("candidate", st.Candidate), slog.Int64("loosening_divergences", loosening))
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.ShadowDivergence,
			fmt.Sprintf("the candidate allows %d compared requests the active bundle does not allow; read the report, then promote with force if that is intended", loosening))
	}
	// Forced is what overrode divergences, not the flag alone.
	next := policystore.Rollout{Active: st.Candidate, Previous: st.Active, Mode: policystore.ModeNone}
	change := policystore.Change{Action: policystore.ActionPromote, Actor: claims.Subject, From: st.Active, To: st.Candidate, Forced: loosening > 0}
	var extra map[string]string
	if change.Forced {
		extra = map[string]string{"loosening_divergences": strconv.FormatInt(loosening, 10)}
	}
	written, err := h.apply(ctx, claims, st, next, change, extra)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authzv1.PromoteResponse{Rollout: toRollout(written)}), nil
}

// Rollback withdraws the staged candidate, or else returns to the
// revision active before the last promotion.
func (h *Handler) Rollback(ctx context.Context, req *connect.Request[authzv1.RollbackRequest]) (*connect.Response[authzv1.RollbackResponse], error) {
	claims, err := h.authorize(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	st, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	var next policystore.Rollout
	change := policystore.Change{Action: policystore.ActionRollback, Actor: claims.Subject}
	switch {
	case st.Candidate != "":
		next = policystore.Rollout{Active: st.Active, Previous: st.Previous, Mode: policystore.ModeNone}
		change.From, change.To = st.Candidate, st.Active
	case st.Previous != "":
		next = policystore.Rollout{Active: st.Previous, Mode: policystore.ModeNone}
		change.From, change.To = st.Active, st.Previous
	default:
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"nothing to roll back: no candidate is staged and no earlier revision was active")
	}
	written, err := h.apply(ctx, claims, st, next, change, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authzv1.RollbackResponse{Rollout: toRollout(written)}), nil
}

// GetReport summarizes a candidate's comparison with the active bundle.
func (h *Handler) GetReport(ctx context.Context, req *connect.Request[authzv1.GetReportRequest]) (*connect.Response[authzv1.GetReportResponse], error) {
	if _, err := h.authorize(ctx, req.Header()); err != nil {
		return nil, err
	}
	samples := int(req.Msg.GetSamplesPerGroup())
	switch {
	case samples < 0:
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "samples_per_group must not be negative")
	case samples == 0:
		samples = defaultSamplesPerGroup
	case samples > policystore.MaxSamplesPerGroup:
		samples = policystore.MaxSamplesPerGroup
	}
	st, err := h.current(ctx)
	if err != nil {
		return nil, err
	}
	candidate := req.Msg.GetCandidate()
	if candidate == "" {
		candidate = st.Candidate
	}
	if candidate == "" {
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"no candidate is staged; name one")
	}
	rep, err := h.store.Report(ctx, st.Active, candidate, samples)
	if err != nil {
		return nil, h.storeError(ctx, "read report", err)
	}
	return connect.NewResponse(toReport(rep)), nil
}

// ListHistory lists rollout changes, newest first.
func (h *Handler) ListHistory(ctx context.Context, req *connect.Request[authzv1.ListHistoryRequest]) (*connect.Response[authzv1.ListHistoryResponse], error) {
	if _, err := h.authorize(ctx, req.Header()); err != nil {
		return nil, err
	}
	limit := int(req.Msg.GetLimit())
	switch {
	case limit < 0:
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "limit must not be negative")
	case limit == 0:
		limit = defaultHistoryLimit
	case limit > policystore.MaxHistoryLimit:
		limit = policystore.MaxHistoryLimit
	}
	entries, err := h.store.History(ctx, limit)
	if err != nil {
		return nil, h.storeError(ctx, "read history", err)
	}
	resp := &authzv1.ListHistoryResponse{Entries: make([]*authzv1.HistoryEntry, len(entries))}
	for i, e := range entries {
		resp.Entries[i] = &authzv1.HistoryEntry{
			Generation:    e.Generation,
			Action:        string(e.Action),
			FromRevision:  e.From,
			ToRevision:    e.To,
			Actor:         e.Actor,
			Forced:        e.Forced,
			Time:          timestamp(e.Time),
			CanaryPercent: int32(min(e.CanaryPercent, 100)), //nolint:gosec // 0..100 by the store's contract
		}
	}
	return connect.NewResponse(resp), nil
}

// current reads the rollout state a change starts from.
func (h *Handler) current(ctx context.Context) (policystore.Rollout, error) {
	st, err := h.store.Rollout(ctx)
	if err != nil {
		return st, h.storeError(ctx, "read rollout", err)
	}
	if st.Generation == 0 {
		return st, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.RolloutConflict,
			"the rollout is not initialized yet; a PDP initializes it when it starts")
	}
	return st, nil
}

// apply writes next if the rollout is still at st's generation, audits the
// change (with extra attributes) and waits briefly for this replica to
// serve it.
func (h *Handler) apply(ctx context.Context, claims *accesstoken.Claims, st, next policystore.Rollout, change policystore.Change, extra map[string]string) (policystore.Rollout, error) {
	written, err := h.store.UpdateRollout(ctx, st.Generation, next, change)
	if err != nil {
		return written, h.storeError(ctx, "update rollout", err)
	}
	attrs := map[string]string{
		"from":       change.From,
		"to":         change.To,
		"generation": strconv.FormatInt(written.Generation, 10),
	}
	if change.Forced {
		attrs["forced"] = "true"
	}
	if change.CanaryPercent > 0 {
		attrs["canary_percent"] = strconv.Itoa(change.CanaryPercent)
	}
	maps.Copy(attrs, extra)
	h.record(ctx, claims, string(change.Action), change.To, attrs)
	h.log.InfoContext(ctx, "policy rollout changed",
		slog.String("action", string(change.Action)), slog.String("subject", claims.Subject),
		slog.String("from", change.From), slog.String("to", change.To),
		slog.Bool("forced", change.Forced), slog.Int64("generation", written.Generation))
	if h.local != nil {
		wctx, cancel := context.WithTimeout(ctx, convergeTimeout)
		defer cancel()
		if err := h.local.Await(wctx, written.Generation); err != nil {
			h.log.WarnContext(ctx, "this replica does not serve the new rollout yet",
				slog.Int64("generation", written.Generation), slog.Any("error", err))
		}
	}
	return written, nil
}

// record audits a change to revision. The change is already stored when
// this runs, so a failure to record cannot undo it and must not make the
// caller retry an operation that succeeded: it is logged (with what the
// event held) for the operator, and the answer stays a success.
func (h *Handler) record(ctx context.Context, claims *accesstoken.Claims, action, revision string, attrs map[string]string) {
	for k, v := range attrs {
		if v == "" {
			delete(attrs, k)
		}
	}
	e := audit.Event{
		Time:          h.now(),
		Type:          audit.TypePolicyChanged,
		Subject:       claims.Subject,
		ClientID:      claims.ClientID,
		Tenant:        claims.Tenant,
		Action:        "policy:" + action,
		Resource:      "policy/" + revision,
		PolicyVersion: revision,
		TraceID:       telemetry.TraceID(ctx),
		Attributes:    attrs,
	}
	if err := h.audit.Record(ctx, e); err != nil {
		h.log.ErrorContext(ctx, "policy change not recorded in the audit log",
			slog.String("action", e.Action), slog.String("resource", e.Resource),
			slog.String("subject", e.Subject), slog.Any("attributes", attrs), slog.Any("error", err))
	}
}

// bundleError maps a BundleChecker error to the client's error; the cause
// is logged, never echoed (it may quote the policy).
func (h *Handler) bundleError(ctx context.Context, err error) error {
	h.log.InfoContext(ctx, "policy bundle refused", slog.Any("error", err))
	switch {
	case errors.Is(err, bundle.ErrUnsigned):
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.BundleUnsigned,
			"the bundle is not signed; sign it with the policy signing key")
	case errors.Is(err, bundle.ErrSignature):
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.BundleSignatureInvalid,
			"the bundle's signature does not verify with the PDP's key")
	case errors.Is(err, bundle.ErrTooLarge):
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.BundleTooLarge,
			"the bundle is larger than the PDP accepts")
	default:
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.BundleInvalid,
			"the bundle is not a valid policy bundle; see the PDP log")
	}
}

// storeError maps a policystore error to the client's error.
func (h *Handler) storeError(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, policystore.ErrNotFound):
		return enforce.Error(ctx, connect.CodeNotFound, reason.UnknownRevision, "no stored bundle has that revision; push it first")
	case errors.Is(err, policystore.ErrRevisionConflict):
		return enforce.Error(ctx, connect.CodeAlreadyExists, reason.RevisionConflict,
			"that revision is stored with other content; revisions are immutable, so bump it")
	case errors.Is(err, policystore.ErrStaleGeneration):
		return enforce.Error(ctx, connect.CodeAborted, reason.RolloutConflict,
			"the rollout changed meanwhile; read it again and retry")
	case errors.Is(err, policystore.ErrInvalid):
		h.log.InfoContext(ctx, "policy store refused the request", slog.String("op", op), slog.Any("error", err))
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "the request was refused as invalid; see the PDP log")
	}
	h.log.ErrorContext(ctx, "policy store failed", slog.String("op", op), slog.Any("error", err))
	code := connect.CodeUnavailable
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	}
	return enforce.Error(ctx, code, reason.UpstreamUnavailable, "the policy store did not answer")
}

func toRollout(r policystore.Rollout) *authzv1.Rollout {
	return &authzv1.Rollout{
		Generation:    r.Generation,
		Active:        r.Active,
		Candidate:     r.Candidate,
		Mode:          toMode(r.Mode),
		CanaryPercent: int32(min(r.CanaryPercent, 100)), //nolint:gosec // 0..100 by the store's contract
		Previous:      r.Previous,
		UpdatedBy:     r.UpdatedBy,
		UpdatedAt:     timestamp(r.UpdatedAt),
	}
}

func toMode(m policystore.Mode) authzv1.RolloutMode {
	switch m {
	case policystore.ModeNone:
		return authzv1.RolloutMode_ROLLOUT_MODE_NONE
	case policystore.ModeShadow:
		return authzv1.RolloutMode_ROLLOUT_MODE_SHADOW
	case policystore.ModeCanary:
		return authzv1.RolloutMode_ROLLOUT_MODE_CANARY
	default:
		return authzv1.RolloutMode_ROLLOUT_MODE_UNSPECIFIED
	}
}

func toBundleInfo(b policystore.BundleInfo) *authzv1.BundleInfo {
	return &authzv1.BundleInfo{
		Revision:     b.Revision,
		Digest:       b.Digest,
		SizeBytes:    b.SizeBytes,
		UploadedBy:   b.UploadedBy,
		UploadedAt:   timestamp(b.UploadedAt),
		SigningKeyId: b.SigningKeyID,
	}
}

func toReport(r policystore.Report) *authzv1.GetReportResponse {
	rate := 1.0
	if r.Compared > 0 {
		rate = float64(r.Agreed) / float64(r.Compared)
	}
	resp := &authzv1.GetReportResponse{
		Active: r.Active, Candidate: r.Candidate,
		Compared: r.Compared, Agreed: r.Agreed, Dropped: r.Dropped,
		AgreementRate: rate,
		Groups:        make([]*authzv1.DivergenceGroup, len(r.Groups)),
	}
	for i, g := range r.Groups {
		pg := &authzv1.DivergenceGroup{
			Transition:          g.Transition,
			ActiveReasonCode:    g.ActiveReason,
			CandidateReasonCode: g.CandidateReason,
			Count:               g.Count,
			Samples:             make([]*authzv1.DivergenceSample, len(g.Samples)),
		}
		for j, s := range g.Samples {
			pg.Samples[j] = &authzv1.DivergenceSample{
				DecisionId: s.DecisionID, Subject: s.Subject, Tenant: s.Tenant,
				Action: s.Action, Resource: s.Resource, Time: timestamp(s.Time),
			}
		}
		resp.Groups[i] = pg
	}
	return resp
}

// timestamp converts t, leaving a zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
