package rls

import (
	"slices"
	"strconv"
	"time"
)

// Entry is one key and value of an Envoy rate limit descriptor, as
// envoyproxy/ratelimit receives it. An empty Value is a value like any
// other: it matches a descriptor without value, or a wildcard that matches
// the empty string.
type Entry struct {
	Key, Value string
}

// Unit is the unit of a rule's requests_per_unit. Its values are those of
// Envoy's RateLimitResponse.RateLimit.Unit enum, so that a service converts
// it with a plain conversion; the zero value is no unit (an unlimited rule).
type Unit int32

// The units floodgate enforces.
const (
	UnitSecond Unit = 1
	UnitMinute Unit = 2
	UnitHour   Unit = 3
	UnitDay    Unit = 4
)

// Window returns the length of u: one second, minute, hour or day; 0 for no
// unit.
func (u Unit) Window() time.Duration {
	switch u {
	case UnitSecond:
		return time.Second
	case UnitMinute:
		return time.Minute
	case UnitHour:
		return time.Hour
	case UnitDay:
		return 24 * time.Hour
	}
	return 0
}

// String returns u as the configuration spells it: "second", "minute",
// "hour", "day", or "" for no unit.
func (u Unit) String() string {
	switch u {
	case UnitSecond:
		return "second"
	case UnitMinute:
		return "minute"
	case UnitHour:
		return "hour"
	case UnitDay:
		return "day"
	}
	return ""
}

// Limit is one rule: a descriptor with a rate_limit block. A Limit belongs
// to its Config and is shared by every request that matches it: it is
// read-only, safe for concurrent use, and must not be modified.
type Limit struct {
	// Domain is the domain of the rule's file.
	Domain string
	// Name is rate_limit.name, "" when not set.
	Name string
	// Unit is rate_limit.unit; zero when Unlimited.
	Unit Unit
	// RequestsPerUnit is rate_limit.requests_per_unit, from 0 (every
	// request denied) to policy.MaxLimit; 0 when Unlimited.
	RequestsPerUnit uint32
	// Unlimited is rate_limit.unlimited: the rule allows every request
	// and counts nothing.
	Unlimited bool
	// ShadowMode is the descriptor's shadow_mode: the rule decides and
	// counts, but its answer is always OK.
	ShadowMode bool
	// Replaces are the names in rate_limit.replaces, in file order.
	Replaces []string
	// DetailedMetric is the descriptor's detailed_metric (see MetricKey).
	DetailedMetric bool
	// Key is envoyproxy/ratelimit's name for the rule, its stats key by
	// default: the domain and each descriptor from the top, key or
	// key_value, joined with ".", as in "messaging.message_type_marketing.to_number".
	Key string
	// File and Line locate the descriptor in the configuration.
	File string
	Line int

	// levels are the descriptors from the top to this one: how each
	// entry of a matching descriptor was matched.
	levels []level
}

// level is how one entry reaches a rule: by exact value, by wildcard or by
// key alone, and the flags of that descriptor.
type level struct {
	key           string
	value         string // the configured value or wildcard; "" for key alone
	wildcard      bool
	shared        bool // share_threshold
	valueToMetric bool
}

// CounterKey returns the identity of the counter that a descriptor of
// entries, matched to l by Match, counts against, for the service to hash
// into a limiter request. Distinct descriptors have distinct keys, except
// that under share_threshold every value a wildcard matches gives the same
// key, as envoyproxy/ratelimit's cache key does. The format is
// unambiguous: the domain, then each entry's key and value (or shared
// wildcard), each length-prefixed.
func (l *Limit) CounterKey(entries []Entry) string {
	return string(l.AppendCounterKey(make([]byte, 0, 64), entries))
}

// AppendCounterKey appends CounterKey(entries) to dst and returns it, for a
// caller that hashes the key without keeping it.
func (l *Limit) AppendCounterKey(dst []byte, entries []Entry) []byte {
	dst = appendField(dst, 'd', l.Domain)
	for i, e := range entries {
		dst = appendField(dst, 'k', e.Key)
		if i < len(l.levels) && l.levels[i].shared {
			dst = appendField(dst, 's', l.levels[i].value)
		} else {
			dst = appendField(dst, 'v', e.Value)
		}
	}
	return dst
}

// CounterKey returns the counter identity of a descriptor that has no rule
// of the configuration but a limit of its own (Envoy's descriptor limit
// override): the domain and every entry, in CounterKey's format.
func CounterKey(domain string, entries []Entry) string {
	l := Limit{Domain: domain}
	return l.CounterKey(entries)
}

func appendField(dst []byte, tag byte, s string) []byte {
	dst = append(dst, tag)
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// MetricKey returns envoyproxy/ratelimit's stats key for a descriptor of
// entries matched to l: Key, except that a descriptor with detailed_metric
// names every entry as key_value; one with value_to_metric names its
// entry's value in place of its wildcard or alongside its key; and a
// share_threshold wildcard stays the wildcard. The service uses it to name
// per-rule metrics.
func (l *Limit) MetricKey(entries []Entry) string {
	if len(entries) != len(l.levels) {
		return l.Key
	}
	shared := false
	for i := range l.levels {
		shared = shared || l.levels[i].shared
	}
	b := make([]byte, 0, len(l.Key)+16)
	b = append(b, l.Domain...)
	for i, e := range entries {
		lv := &l.levels[i]
		b = append(b, '.')
		b = append(b, e.Key...)
		switch {
		case lv.shared:
			b = append(b, '_')
			b = append(b, lv.value...)
		case l.DetailedMetric && !shared:
			// The peer's detailed key writes "_" even before an empty value.
			b = append(b, '_')
			b = append(b, e.Value...)
		case l.DetailedMetric && e.Value != "":
			b = append(b, '_')
			b = append(b, e.Value...)
		case l.DetailedMetric:
		case lv.wildcard && !lv.valueToMetric:
			b = append(b, '_')
			b = append(b, lv.value...)
		case lv.value != "" || lv.valueToMetric:
			if e.Value != "" {
				b = append(b, '_')
				b = append(b, e.Value...)
			}
		}
	}
	return string(b)
}

// node is one descriptor of the tree, or a domain's root.
type node struct {
	exact    map[Entry]*node
	wildcard map[string][]*node // by key, in file order
	bare     map[string]*node
	limit    *Limit

	key   string
	value string
	glob  glob
	line  int // of the descriptor, for duplicate errors
}

// next returns the child that e reaches: the exact value, else the first
// matching wildcard, else the key alone; nil when none.
func (n *node) next(e Entry) *node {
	if c := n.exact[e]; c != nil {
		return c
	}
	for _, c := range n.wildcard[e.Key] {
		if c.glob.match(e.Value) {
			return c
		}
	}
	return n.bare[e.Key]
}

// Config is a loaded configuration: one descriptor tree per domain. It is
// immutable and safe for concurrent use.
type Config struct {
	domains map[string]*node
	names   []string
	limits  []*Limit
	// Digest is the SHA-256, in hex, of the files' names and contents in
	// the order read, to tell a changed configuration from a reloaded one.
	Digest string
}

// Match returns the rule for one descriptor of entries in domain, or nil
// when none applies (see the package documentation). It does not allocate.
func (c *Config) Match(domain string, entries []Entry) *Limit {
	n := c.domains[domain]
	if n == nil || len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if n = n.next(e); n == nil {
			return nil
		}
	}
	return n.limit
}

// ApplyReplaces drops from limits, the rules matched by one request's
// descriptors in order, every named rule that another of them replaces,
// setting it to nil, as envoyproxy/ratelimit does before it counts: only
// the replacing rule then applies to that request. Rules that are nil,
// unnamed or not replaced stay; an unlimited rule replaces too.
func ApplyReplaces(limits []*Limit) {
	if len(limits) > smallRequest {
		applyReplacesLarge(limits)
		return
	}
	var drop [smallRequest]bool
	for i, l := range limits {
		drop[i] = l != nil && l.Name != "" && replaced(limits, l.Name)
	}
	for i := range limits {
		if drop[i] {
			limits[i] = nil
		}
	}
}

// smallRequest is the most descriptors ApplyReplaces compares pairwise,
// without allocating.
const smallRequest = 16

// replaced reports whether any of limits replaces name.
func replaced(limits []*Limit, name string) bool {
	for _, l := range limits {
		if l != nil && slices.Contains(l.Replaces, name) {
			return true
		}
	}
	return false
}

// applyReplacesLarge is ApplyReplaces for many descriptors, in time linear
// in their rules' names.
func applyReplacesLarge(limits []*Limit) {
	names := map[string]bool{}
	for _, l := range limits {
		if l != nil {
			for _, r := range l.Replaces {
				names[r] = true
			}
		}
	}
	for i, l := range limits {
		if l != nil && l.Name != "" && names[l.Name] {
			limits[i] = nil
		}
	}
}

// Domains returns the configured domains, sorted.
func (c *Config) Domains() []string {
	return slices.Clone(c.names)
}

// Limits returns every rule, domain by domain in the order of Domains, and
// in file order within a domain.
func (c *Config) Limits() []*Limit {
	return slices.Clone(c.limits)
}
