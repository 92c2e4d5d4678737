package policy

import (
	"fmt"

	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// parseDecision checks the shape of the policy's answer (see the comment of
// package gatehouse.main) and converts it. Anything else is
// ErrUnexpectedResult; the error names the offending key, never its value,
// since it is only logged but may hold input.
func parseDecision(v any) (decision.Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return decision.Decision{}, fmt.Errorf("%w: not an object", ErrUnexpectedResult)
	}
	stateName, _ := obj["decision"].(string)
	state := policyState(stateName)
	if state == decision.Unspecified {
		return decision.Decision{}, fmt.Errorf("%w: decision is not allow, deny or not_applicable", ErrUnexpectedResult)
	}
	code, _ := obj["reason_code"].(string)
	if !isReasonCode(code) {
		return decision.Decision{}, fmt.Errorf("%w: reason_code is not a snake_case code", ErrUnexpectedResult)
	}
	d := decision.Decision{State: state, ReasonCode: code}
	if m, ok := obj["message"]; ok {
		if d.Message, ok = m.(string); !ok {
			return decision.Decision{}, fmt.Errorf("%w: message is not a string", ErrUnexpectedResult)
		}
	}
	if rs, ok := obj["required_scopes"]; ok {
		if d.RequiredScopes, ok = stringList(rs); !ok {
			return decision.Decision{}, fmt.Errorf("%w: required_scopes is not a list of strings", ErrUnexpectedResult)
		}
	}
	if obs, ok := obj["obligations"]; ok {
		if d.Obligations, ok = obligations(obs); !ok {
			return decision.Decision{}, fmt.Errorf("%w: obligations is not a list of {type, params} objects", ErrUnexpectedResult)
		}
	}
	return d, nil
}

// policyState returns the state a policy's "decision" names, or Unspecified:
// a policy may return allow, deny or not_applicable; INDETERMINATE is the
// PDP's alone.
func policyState(name string) decision.State {
	switch name {
	case "allow":
		return decision.Allow
	case "deny":
		return decision.Deny
	case "not_applicable":
		return decision.NotApplicable
	default:
		return decision.Unspecified
	}
}

// isReasonCode reports whether s is a non-empty snake_case code of at most
// 64 bytes.
func isReasonCode(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func stringList(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	if len(list) == 0 {
		return nil, true
	}
	out := make([]string, len(list))
	for i, e := range list {
		if out[i], ok = e.(string); !ok {
			return nil, false
		}
	}
	return out, true
}

func obligations(v any) ([]decision.Obligation, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	if len(list) == 0 {
		return nil, true
	}
	out := make([]decision.Obligation, len(list))
	for i, e := range list {
		obj, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		if out[i].Type, ok = obj["type"].(string); !ok || out[i].Type == "" {
			return nil, false
		}
		params, ok := obj["params"]
		if !ok {
			continue
		}
		pm, ok := params.(map[string]any)
		if !ok {
			return nil, false
		}
		out[i].Params = make(map[string]string, len(pm))
		for k, pv := range pm {
			if out[i].Params[k], ok = pv.(string); !ok {
				return nil, false
			}
		}
	}
	return out, true
}
