package main

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/console"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// resolver returns the console's Resolver: the limit in force for a scope
// (the first enforcing policy rule of that scope, at its default tier, else
// the server's defaults) and the requestor as authz derives it, built by
// authz itself from a CheckRequest carrying what the operator typed, so the
// console never spells an identity differently from the server.
func (c *consoleSetup) resolver(az *authz.Server, strategies map[string]limiter.Strategy) console.Resolver {
	return func(scope, identity string) (console.Target, error) {
		if strings.HasPrefix(scope, "rls:") {
			return console.Target{}, fmt.Errorf("%w: scope %s: lookups of the rate limit service's counters are not offered yet (its top list is)", console.ErrBadLookup, scope)
		}
		t, key := c.inForce(az, scope)
		if t.Strategy != c.cfg.Strategy {
			return console.Target{}, fmt.Errorf("%w: scope %q is decided by strategy %s: the console looks up only --strategy %s", console.ErrBadLookup, scope, t.Strategy, c.cfg.Strategy)
		}
		id, err := c.identity(identity, key)
		if err != nil {
			return console.Target{}, fmt.Errorf("%w: %w", console.ErrBadLookup, err)
		}
		t.Request.Requestor = id
		return t, nil
	}
}

// inForce returns the limit, window and strategy of scope, and the key
// its requestors are identified by.
func (c *consoleSetup) inForce(az *authz.Server, scope string) (console.Target, authz.KeySpec) {
	t := console.Target{
		Request:  limiter.Request{Scope: scope, Limit: c.cfg.Limit, Window: c.cfg.Window},
		Strategy: c.cfg.Strategy,
		Source:   "server defaults (a route's floodgate.limit or floodgate.window is not known here: give limit= and limit_window=)",
	}
	key := c.cfg.Key
	p := az.Policy()
	if p == nil {
		return t, key
	}
	for _, r := range p.Rules {
		if r.Shadow || r.Scope != scope {
			continue
		}
		tier, l := r.LimitFor(policy.Input{Scope: scope})
		t.Request.Limit, t.Request.Window, t.Request.Burst = l.Limit, l.Window, l.Burst
		t.Source = "policy rule " + r.Name
		if tier != "" {
			t.Source += " (tier " + tier + ")"
		}
		if r.Strategy != "" {
			t.Strategy = r.Strategy
		}
		if r.Key != "" {
			if k, err := authz.ParseKey(r.Key, c.cfg.XFFTrustedHops); err == nil {
				key = k
			}
		}
		break
	}
	return t, key
}

// identity turns what an operator typed into the requestor authz derives:
// an address (bare or "ip:"), "header:<name>:<value>", the fallback
// identity, or a bare value when key takes a header.
func (c *consoleSetup) identity(typed string, key authz.KeySpec) (string, error) {
	if typed == authz.FallbackIdentity {
		return typed, nil
	}
	if addr, ok := strings.CutPrefix(typed, "ip:"); ok || isAddr(typed) {
		if !ok {
			addr = typed
		}
		if !isAddr(addr) {
			return "", fmt.Errorf("identity %.80q: not an IP address", typed)
		}
		return authz.KeySpec{}.Identity(withSource(addr)), nil
	}
	name, value, ok := strings.Cut(strings.TrimPrefix(typed, "header:"), ":")
	if !strings.HasPrefix(typed, "header:") || !ok {
		if !strings.HasPrefix(key.String(), "header:") {
			return "", fmt.Errorf("identity %.80q: not an address; scope keys on %s (give an address, or header:<name>:<value>)", typed, key)
		}
		name, value = strings.TrimPrefix(key.String(), "header:"), typed
	}
	if strings.HasPrefix(value, authz.FingerprintPrefix) {
		return "", fmt.Errorf("identity %.80q: a fingerprint cannot be looked up; give the header's value itself", typed)
	}
	k, err := authz.ParseKey("header:"+name, c.cfg.XFFTrustedHops)
	if err != nil {
		return "", fmt.Errorf("identity %.80q: %w", typed, err)
	}
	id := k.Identity(withHeader(strings.ToLower(name), value))
	if !strings.HasPrefix(id, "header:") {
		return "", fmt.Errorf("identity %.80q: the header's value is empty as floodgate reads it", typed)
	}
	return id, nil
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// withSource is a CheckRequest from addr.
func withSource(addr string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: addr}}}},
	}}
}

// withHeader is a CheckRequest carrying one header.
func withHeader(name, value string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{name: value},
		}},
	}}
}
