package exchange

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// Decider asks the PDP; *enforce.Client is one. An error means the PDP
// gave no usable answer (enforce.ErrPDPUnavailable): the exchange is
// refused with 503.
type Decider interface {
	Check(ctx context.Context, req *authzv1.CheckRequest) (enforce.Decision, error)
}

// The PDP input of an exchange: action token:exchange on a resource of
// type token.
const (
	// Action is the PDP action every exchange is decided under.
	Action = "token:exchange"
	// ResourceType is the PDP resource type of the new token.
	ResourceType = "token"
)

// Attribute names of the token resource.
const (
	attrMode             = "mode"
	attrClientID         = "client_id"
	attrAudience         = "audience"
	attrScope            = "scope"
	attrLifetimeSeconds  = "lifetime_seconds"
	attrSubjectExchanged = "subject_exchanged"
	attrActorSubject     = "actor_subject"
	attrActorClientID    = "actor_client_id"
	attrActorTenant      = "actor_tenant"
	attrTargetRoles      = "target_roles"
	attrTicketID         = "ticket_id"
	attrTicketAccess     = "ticket_access"
)

// decisionInput is what the PDP is asked about one exchange.
type decisionInput struct {
	requestID string
	now       time.Time
	sourceIP  string
	mode      string
	clientID  string
	// subject is the subject token's claims: the principal.
	subject *accesstoken.Claims
	// actor is the actor token's claims (delegation), else nil.
	actor *accesstoken.Claims
	// newSubject, newTenant and newRoles describe the token to issue.
	newSubject, newTenant  string
	newRoles               []string
	audience, scopes       []string
	lifetime               time.Duration
	ticketID, ticketAccess string
}

// checkRequest is the PDP's CheckRequest for in: the principal is the
// subject token's (for impersonation the agent, for delegation the user),
// the resource the token to issue, every attribute typed and present.
func checkRequest(in decisionInput) *authzv1.CheckRequest {
	str := func(s string) *authzv1.AttributeValue {
		return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: s}}
	}
	var actorSubject, actorClientID, actorTenant string
	if in.actor != nil {
		actorSubject, actorClientID, actorTenant = in.actor.Subject, in.actor.ClientID, in.actor.Tenant
	}
	return &authzv1.CheckRequest{
		Principal: enforce.Principal(in.subject),
		Action:    Action,
		Resource: &authzv1.Resource{
			Type:   ResourceType,
			Id:     in.newSubject,
			Tenant: in.newTenant,
			Attributes: map[string]*authzv1.AttributeValue{
				attrMode:             str(in.mode),
				attrClientID:         str(in.clientID),
				attrAudience:         str(joinSorted(in.audience)),
				attrScope:            str(joinSorted(in.scopes)),
				attrLifetimeSeconds:  {Kind: &authzv1.AttributeValue_IntValue{IntValue: int64(in.lifetime / time.Second)}},
				attrSubjectExchanged: {Kind: &authzv1.AttributeValue_BoolValue{BoolValue: in.subject.Actor != nil}},
				attrActorSubject:     str(actorSubject),
				attrActorClientID:    str(actorClientID),
				attrActorTenant:      str(actorTenant),
				attrTargetRoles:      str(joinSorted(in.newRoles)),
				attrTicketID:         str(in.ticketID),
				attrTicketAccess:     str(in.ticketAccess),
			},
		},
		Context: &authzv1.RequestContext{
			RequestId: in.requestID,
			Time:      timestamppb.New(in.now),
			SourceIp:  in.sourceIP,
		},
	}
}

// fromRequest returns the token request's id and the address it came
// from, as fosite's context carries the HTTP request: the caller's
// X-Request-Id when it is a valid one (so the exchange, its PDP decision
// and the caller's own events share one id), else fallbackID.
func fromRequest(ctx context.Context, fallbackID string) (requestID, sourceIP string) {
	r, ok := ctx.Value(fosite.RequestContextKey).(*http.Request)
	if !ok {
		return fallbackID, ""
	}
	requestID = fallbackID
	if id := r.Header.Get(enforce.HeaderRequestID); enforce.ValidRequestID(id) {
		requestID = id
	}
	return requestID, enforce.RemoteIP(r.RemoteAddr)
}

func joinSorted(values []string) string {
	s := slices.Clone(values)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), " ")
}
