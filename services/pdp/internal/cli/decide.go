package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// attrFlag collects repeated -attr key=value flags as typed attributes.
type attrFlag map[string]*authzv1.AttributeValue

func (a attrFlag) String() string {
	keys := slices.Sorted(maps.Keys(a))
	return strings.Join(keys, ",")
}

// Set adds one key=value; see typedValue for the type the value gets.
func (a attrFlag) Set(s string) error {
	key, value, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return errors.New("want key=value")
	}
	if _, dup := a[key]; dup {
		return fmt.Errorf("attribute %q given twice", key)
	}
	a[key] = typedValue(value)
	return nil
}

// typedValue types an attribute value written on the command line: a
// decimal integer (as strconv.FormatInt writes it: no sign but "-", no
// leading zeros) is an int_value, true and false are bool_value, anything
// else is a string_value.
func typedValue(v string) *authzv1.AttributeValue {
	if i, err := strconv.ParseInt(v, 10, 64); err == nil && strconv.FormatInt(i, 10) == v {
		return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: i}}
	}
	switch v {
	case "true":
		return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: true}}
	case "false":
		return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: false}}
	}
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: v}}
}

func decide(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	var (
		p              authzv1.Principal
		roles, scopes  string
		action         string
		resource       string
		resourceTenant string
		attrs          = attrFlag{}
	)
	fs.StringVar(&p.Subject, "subject", "", "principal's subject (required)")
	fs.StringVar(&p.Tenant, "tenant", "", "principal's tenant (required)")
	fs.StringVar(&roles, "roles", "", "principal's roles, comma-separated")
	fs.StringVar(&scopes, "scopes", "", `token scopes, space-separated ("invoice:read invoice:write")`)
	fs.StringVar(&p.ClientId, "client-id", "", "client the principal acts through")
	fs.StringVar(&p.Acr, "acr", "", "authentication context class of the principal's login")
	fs.StringVar(&action, "action", "", "<resource_type>:<verb>, e.g. invoice:read (required)")
	fs.StringVar(&resource, "resource", "", "TYPE or TYPE/ID, e.g. invoice/inv-1001 (required)")
	fs.StringVar(&resourceTenant, "resource-tenant", "", "tenant owning the resource (needed with an ID)")
	fs.Var(attrs, "attr", "resource attribute key=value, repeatable; integers and true/false are typed")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	for _, req := range []struct{ flag, value string }{
		{"subject", p.Subject}, {"tenant", p.Tenant}, {"action", action}, {"resource", resource},
	} {
		if req.value == "" {
			return cmd.usageErr("-%s is required", req.flag)
		}
	}
	resourceType, resourceID, _ := strings.Cut(resource, "/")
	if resourceType == "" {
		return cmd.usageErr("-resource must be TYPE or TYPE/ID")
	}
	p.Roles = splitList(roles, ",")
	p.Scopes = strings.Fields(scopes)
	req := &authzv1.CheckRequest{
		Principal: &p,
		Action:    action,
		Resource: &authzv1.Resource{
			Type: resourceType, Id: resourceID, Tenant: resourceTenant, Attributes: attrs,
		},
	}
	client, err := c.decisionClient()
	if err != nil {
		return err
	}
	res, err := call(ctx, c, "check", client.Check, req)
	if err != nil {
		return err
	}
	if err := c.writeDecision(res); err != nil {
		return err
	}
	if res.GetDecision() != authzv1.Decision_DECISION_ALLOW {
		return errNotAllowed
	}
	return nil
}

// writeDecision writes a CheckResponse as a two-column table.
func (c *cli) writeDecision(res *authzv1.CheckResponse) error {
	t := newTable()
	t.row("decision", strings.TrimPrefix(res.GetDecision().String(), "DECISION_"))
	t.row("reason_code", res.GetReasonCode())
	if res.GetMessage() != "" {
		t.row("message", res.GetMessage())
	}
	t.row("policy_version", res.GetPolicyVersion())
	t.row("decision_id", res.GetDecisionId())
	if len(res.GetObligations()) == 0 {
		t.row("obligations", "")
	}
	for _, o := range res.GetObligations() {
		cells := []string{o.GetType()}
		for _, k := range slices.Sorted(maps.Keys(o.GetParams())) {
			cells = append(cells, k+"="+o.GetParams()[k])
		}
		t.row("obligation", strings.Join(cells, " "))
	}
	t.row("required_scopes", strings.Join(res.GetRequiredScopes(), " "))
	return t.writeTo(c.stdout)
}

// splitList splits s at sep, trimming spaces and dropping empty items.
func splitList(s, sep string) []string {
	var out []string
	for item := range strings.SplitSeq(s, sep) {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
