package exchange

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// Request parameters of a token exchange (RFC 8693 §2.1) and Gatehouse's
// extensions.
const (
	paramSubjectToken       = "subject_token"
	paramSubjectTokenType   = "subject_token_type"
	paramActorToken         = "actor_token"
	paramActorTokenType     = "actor_token_type"
	paramRequestedTokenType = "requested_token_type"
	paramAudience           = "audience"
	paramResource           = "resource"
	// paramRequestedSubject names the user to impersonate (extension).
	paramRequestedSubject = "requested_subject"
	// paramSupportTicket is the support ticket the client states (extension).
	paramSupportTicket = "support_ticket"
	// paramTicketAccess is "read" or "write": what the ticket grants (extension).
	paramTicketAccess = "ticket_access"
	// paramRequestedLifetime is the wanted lifetime in seconds (extension).
	paramRequestedLifetime = "requested_lifetime"
)

// Values of ticket_access.
const (
	TicketAccessRead  = "read"
	TicketAccessWrite = "write"
)

// maxTicketIDLen bounds support_ticket, in bytes.
const maxTicketIDLen = 128

// maxRequestedLifetime bounds requested_lifetime before any other cap
// applies, so the number always fits a duration.
const maxRequestedLifetime = 1 << 31

// params is a token exchange request's parameters, syntactically checked.
type params struct {
	subjectToken string
	// actorToken is set for delegation.
	actorToken string
	// requestedSubject is set (normalized) for impersonation.
	requestedSubject string
	ticketID         string
	ticketAccess     string
	// target is the one audience or resource asked for; "" for the default.
	target string
	// lifetime is requested_lifetime; zero when not given.
	lifetime time.Duration
}

// mode returns ModeImpersonation or ModeDelegation.
func (p params) mode() string {
	if p.actorToken != "" {
		return ModeDelegation
	}
	return ModeImpersonation
}

// parseParams checks form as RFC 8693 §2.1 and the Gatehouse extensions
// require. Every error is an *fosite.RFC6749Error: invalid_request, or
// invalid_target for a malformed resource (RFC 8707 §2). The endpoint has
// already refused repeated parameters other than audience.
func parseParams(form url.Values) (params, error) {
	var p params
	p.subjectToken = form.Get(paramSubjectToken)
	if p.subjectToken == "" {
		return p, invalidRequest("subject_token is required.")
	}
	if err := checkTokenType(form, paramSubjectTokenType, true); err != nil {
		return p, err
	}
	p.actorToken = form.Get(paramActorToken)
	if p.actorToken != "" {
		if err := checkTokenType(form, paramActorTokenType, true); err != nil {
			return p, err
		}
	} else if form.Has(paramActorTokenType) {
		return p, invalidRequest("actor_token_type is only allowed with actor_token.")
	}
	if err := checkTokenType(form, paramRequestedTokenType, false); err != nil {
		return p, err
	}

	requested := form.Get(paramRequestedSubject)
	switch {
	case requested != "" && p.actorToken != "":
		return p, invalidRequest("Use either actor_token (delegation) or requested_subject (impersonation), not both.")
	case requested == "" && p.actorToken == "":
		return p, invalidRequest("Either actor_token (delegation) or requested_subject (impersonation) is required.")
	case requested != "":
		name, err := user.NormalizeUsername(requested)
		if err != nil {
			return p, invalidRequest("requested_subject is not a valid username.")
		}
		p.requestedSubject = name
	}
	if err := p.parseTicket(form); err != nil {
		return p, err
	}
	if err := p.parseTarget(form); err != nil {
		return p, err
	}
	if form.Has(paramRequestedLifetime) {
		raw := form.Get(paramRequestedLifetime)
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 1 || n > maxRequestedLifetime || strings.TrimLeft(raw, "0123456789") != "" {
			return p, invalidRequest("requested_lifetime must be a whole number of seconds, at least 1.")
		}
		p.lifetime = time.Duration(n) * time.Second
	}
	return p, nil
}

// checkTokenType checks that the parameter name, when present (required:
// always), names an access token: the only token type exchanged or issued.
func checkTokenType(form url.Values, name string, required bool) error {
	v := form.Get(name)
	switch {
	case v == "" && !required && !form.Has(name):
		return nil
	case v == "":
		return invalidRequest(name + " is required.")
	case v != TokenTypeAccessToken:
		return invalidRequest(name + " must be " + TokenTypeAccessToken + ": only access tokens are exchanged and issued.")
	}
	return nil
}

// parseTicket reads support_ticket and ticket_access, which only an
// impersonation request may carry.
func (p *params) parseTicket(form url.Values) error {
	p.ticketID, p.ticketAccess = form.Get(paramSupportTicket), form.Get(paramTicketAccess)
	if (p.ticketID != "" || p.ticketAccess != "") && p.requestedSubject == "" {
		return invalidRequest("support_ticket and ticket_access are only allowed with requested_subject.")
	}
	if p.ticketAccess != "" && p.ticketID == "" {
		return invalidRequest("ticket_access is only allowed with support_ticket.")
	}
	if len(p.ticketID) > maxTicketIDLen || strings.ContainsFunc(p.ticketID, func(r rune) bool { return r <= 0x20 || r >= 0x7f }) {
		return invalidRequest("support_ticket must be 1 to 128 visible ASCII characters.")
	}
	switch p.ticketAccess {
	case "", TicketAccessRead, TicketAccessWrite:
	default:
		return invalidRequest("ticket_access must be read or write.")
	}
	return nil
}

// parseTarget reads audience and resource: one target at most, which both
// may name; resource must be an absolute URI without a fragment (RFC 8707
// §2).
func (p *params) parseTarget(form url.Values) error {
	audiences := form[paramAudience]
	if len(audiences) > 1 || strings.ContainsAny(form.Get(paramAudience), " \t") {
		return invalidRequest("At most one audience may be requested.")
	}
	audience, resource := form.Get(paramAudience), form.Get(paramResource)
	if resource != "" {
		u, err := url.Parse(resource)
		if err != nil || !u.IsAbs() || u.Fragment != "" || u.Host == "" {
			return invalidTarget("resource must be an absolute URI without a fragment.")
		}
	}
	if audience != "" && resource != "" && audience != resource {
		return invalidTarget("audience and resource must name the same target: a token is issued for one.")
	}
	p.target = audience
	if p.target == "" {
		p.target = resource
	}
	return nil
}

// invalidRequest is RFC 6749's invalid_request with description d.
func invalidRequest(d string) *fosite.RFC6749Error {
	return fosite.ErrInvalidRequest.WithDescription(d).WithHint("")
}

// invalidTarget is RFC 8693 §2.2.2's invalid_target with description d.
func invalidTarget(d string) *fosite.RFC6749Error {
	return &fosite.RFC6749Error{ErrorField: "invalid_target", DescriptionField: d, CodeField: 400}
}
