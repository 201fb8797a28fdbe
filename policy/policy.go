package policy

import (
	"net/netip"
	"strings"
	"time"
)

// Policy is a parsed and validated policy file. Build one with [Parse] or
// [Load]. A Policy is immutable once built, and so safe for concurrent use;
// hot reload replaces the whole Policy rather than changing one.
type Policy struct {
	// Rules are matched in order; see [Policy.Match].
	Rules []*Rule
	// Allowlist names requestors that are never limited.
	Allowlist List
	// Blocklist names requestors that are always denied. It is checked
	// before Allowlist: a requestor on both is blocked.
	Blocklist List
	// Digest is the hex SHA-256 of the file the Policy was parsed from, to
	// tell versions apart in logs.
	Digest string
}

// Rule is one entry of a policy's rules: when a request [Rule.Matches] it, the
// rule's Key, Strategy and limit decide how the request is counted.
type Rule struct {
	// Name identifies the rule: 1 to 64 of [A-Za-z0-9_.-], unique within
	// the policy. It labels metrics, and is the default Scope.
	Name string
	// Line is the line of the rule in the policy file.
	Line int
	// Match says which requests the rule applies to; the zero Match
	// applies to every request.
	Match Match
	// Key is the requestor identity form, as [ParseKey] returns it:
	// "source", "xff", "principal", "header:<name>" (name lower-cased) or
	// "metadata:<filter>:<path>". "" inherits the route's floodgate.key,
	// else the server's --key.
	Key string
	// Strategy is the algorithm, one of [limiter.Strategies]. "" inherits
	// the route's floodgate.strategy, else the server's --strategy.
	Strategy string
	// Limit is the rule's limit when Tiers is nil; the zero [Limit]
	// otherwise.
	Limit Limit
	// Tiers, when not nil, chooses the limit by a request header or a
	// metadata value.
	Tiers *Tiers
	// Scope is the counter family of the rule ([limiter.Request].Scope) and
	// the policy name in the RateLimit headers. It is Name unless the file
	// sets it, so counters of different rules never mix unless the rules
	// share a scope explicitly.
	Scope string
	// Shadow makes the rule decide and count without ever denying: see
	// Match.
	Shadow bool
}

// Limit is a number of requests per window.
type Limit struct {
	// Limit is the number of requests per Window, from 1 to [MaxLimit].
	Limit int64
	// Window is a whole number of seconds from 1s to [limiter.MaxWindow]
	// (see [ParseWindow]).
	Window time.Duration
	// Burst is the token-bucket burst, from 1 to [MaxLimit]; 0 means Limit.
	// Only rules with strategy token-bucket may set it.
	Burst int64
}

// Tiers chooses a rule's limit by the value of a request header, such as a
// plan ("x-plan: free" or "x-plan: pro") set by an authentication layer in
// front of floodgate, or by a value in the request's metadata, such as a
// claim of a token that Envoy's jwt_authn filter verified.
type Tiers struct {
	// Header is the lower-cased name of the request header; "" when
	// Metadata names the tier.
	Header string
	// Metadata is the metadata field that names the tier when Header is
	// ""; the zero MetadataField otherwise.
	Metadata MetadataField
	// Names lists the tiers in file order.
	Names []string
	// Limits holds the limit of each tier in Names.
	Limits map[string]Limit
	// Default is the tier of requests whose header (or metadata value) is
	// absent or names no tier; one of Names.
	Default string
}

// Select returns the tier of the request in and its limit: the tier named
// exactly by the value of the header (Input.Header) or of the metadata
// field (Input.Metadata), else Default.
func (t *Tiers) Select(in Input) (string, Limit) {
	v, ok := "", false
	if t.Header != "" {
		v, ok = in.header(t.Header)
	} else if in.Metadata != nil {
		v, ok = in.Metadata(t.Metadata)
	}
	if ok {
		if l, ok := t.Limits[v]; ok {
			return v, l
		}
	}
	return t.Default, t.Limits[t.Default]
}

// Match is the condition of a rule. Every condition that is set must hold;
// an unset one holds for every request.
type Match struct {
	// Scope, when not nil, must equal the route's floodgate.scope context
	// extension; a pointer to "" matches routes that set no scope.
	Scope *string
	// Methods, when not empty, must contain the request method (upper
	// case; compared exactly).
	Methods []string
	// PathPrefix, when not empty, must be a prefix of the request path as
	// Envoy sends it (after its normalisation, including any query string).
	PathPrefix string
	// Headers must all hold.
	Headers []HeaderMatch
}

// HeaderMatch is a condition on one request header.
type HeaderMatch struct {
	// Name is the lower-cased header name; Envoy's pseudo-headers
	// (":authority", ":method", ":path") are allowed.
	Name string
	// Present requires the header to be present (true) or absent (false)
	// when Exact is nil.
	Present bool
	// Exact, when not nil, requires the header to be present with exactly
	// this value (repeated headers are joined with ",", as Envoy sends
	// them).
	Exact *string
}

// Input is what a request is matched on. It carries no Envoy or gRPC type:
// the adapter (package authz) fills it in from a CheckRequest.
type Input struct {
	// Scope is the route's floodgate.scope context extension; "" when the
	// route sets none.
	Scope string
	// Method is the HTTP request method, such as "GET".
	Method string
	// Path is the request path, with any query string.
	Path string
	// Header returns the value of the request header name (lower case) and
	// whether the request has it. nil means a request without headers.
	Header func(name string) (string, bool)
	// Metadata returns the value of a metadata field of the request as
	// text, and whether the request has a usable one (package authz reads
	// strings, numbers and booleans). nil means a request without
	// metadata.
	Metadata func(f MetadataField) (string, bool)
}

func (in Input) header(name string) (string, bool) {
	if in.Header == nil {
		return "", false
	}
	return in.Header(name)
}

// Matches reports whether r applies to in.
func (r *Rule) Matches(in Input) bool {
	m := &r.Match
	if m.Scope != nil && *m.Scope != in.Scope {
		return false
	}
	if len(m.Methods) > 0 {
		found := false
		for _, meth := range m.Methods {
			if meth == in.Method {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if !strings.HasPrefix(in.Path, m.PathPrefix) {
		return false
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		v, ok := in.header(h.Name)
		switch {
		case h.Exact != nil:
			if !ok || v != *h.Exact {
				return false
			}
		case ok != h.Present:
			return false
		}
	}
	return true
}

// LimitFor returns the limit r sets for in, and the name of the tier it was
// chosen by ("" for a rule without tiers).
func (r *Rule) LimitFor(in Input) (tier string, l Limit) {
	if r.Tiers == nil {
		return "", r.Limit
	}
	return r.Tiers.Select(in)
}

// Match returns the rule that decides in: the first enforcing (not Shadow)
// rule that matches it, or nil when none does. shadows are the matching
// shadow rules before that rule (all matching shadow rules when rule is
// nil), in order: the rules that would have decided in, had they been
// enforcing. shadows is nil when there are none; it is the caller's.
func (p *Policy) Match(in Input) (rule *Rule, shadows []*Rule) {
	if p == nil {
		return nil, nil
	}
	for _, r := range p.Rules {
		if !r.Matches(in) {
			continue
		}
		if !r.Shadow {
			return r, shadows
		}
		shadows = append(shadows, r)
	}
	return nil, shadows
}

// Blocked reports whether the requestor with identity (as package authz
// forms it: "ip:203.0.113.7", "header:x-api-key:<value>",
// "principal:spiffe://...") or client address
// addr (the zero Addr when unknown) is on the blocklist.
func (p *Policy) Blocked(identity string, addr netip.Addr) bool {
	return p != nil && p.Blocklist.Contains(identity, addr)
}

// Allowed reports whether the requestor is on the allowlist (see Blocked).
func (p *Policy) Allowed(identity string, addr netip.Addr) bool {
	return p != nil && p.Allowlist.Contains(identity, addr)
}

// List is an allowlist or a blocklist: requestor identities and client
// address ranges. The zero List is empty.
type List struct {
	// Identities are requestor identities in the form package authz gives
	// them (see [ParseIdentity]): "ip:<address>" (normalised),
	// "header:<name>:<value>" (name lower-cased), "principal:<identity>" or
	// "metadata:<filter>:<path>:<value>", compared exactly.
	Identities []string
	// Prefixes are the address ranges (a single address is a /32 or /128);
	// IPv4-mapped IPv6 ranges are stored as IPv4.
	Prefixes []netip.Prefix

	ids map[string]struct{}
}

// Len returns the number of entries in l.
func (l *List) Len() int { return len(l.Identities) + len(l.Prefixes) }

// Contains reports whether identity is one of l's identities, or addr (an
// IPv4-mapped address counts as IPv4; the zero Addr never matches) lies in
// one of its ranges.
func (l *List) Contains(identity string, addr netip.Addr) bool {
	if _, ok := l.ids[identity]; ok && identity != "" {
		return true
	}
	if !addr.IsValid() || len(l.Prefixes) == 0 {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range l.Prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
