package policy

import (
	"strconv"
	"strings"
)

// Inherited is how [Policy.Lines] shows a key or strategy a rule leaves to the route
// (its floodgate.key or floodgate.strategy extension, else the server's
// flag).
const Inherited = "(route)"

// Lines describes p as `floodgate check-policy` prints it, in the order
// floodgate evaluates it: the blocklist and the allowlist (each only when
// not empty), one line per rule, and a summary:
//
//	blocklist: identity="ip:203.0.113.9" cidr=192.0.2.0/24
//	allowlist: cidr=10.0.0.0/8
//	rules[0] login: when scope=login methods=POST path_prefix="/login" then key=source strategy=sliding limit=5/1m scope=login mode=enforce
//	rules[1] api: when header.x-api-key=present then key=header:x-api-key strategy=token-bucket tier_header=x-plan tier.free=100/1h tier.free.burst=20 tier.pro=5000/1h tier_default=free scope=api mode=enforce
//	valid: rules=2 shadow=0 allowlist=1 blocklist=2 sha256=0123456789ab
//
// Each item is name=value. Free-form values (path prefixes, header values,
// identities) are Go-quoted strings; the others never need quoting. A rule
// without conditions reads "when any"; a header condition reads
// header.<name>="<value>", header.<name>=present or header.<name>=absent.
// A key or strategy left to the route reads (route). sha256 is the first
// 12 hex digits of Digest.
func (p *Policy) Lines() []string {
	var lines []string
	if p.Blocklist.Len() > 0 {
		lines = append(lines, "blocklist: "+p.Blocklist.String())
	}
	if p.Allowlist.Len() > 0 {
		lines = append(lines, "allowlist: "+p.Allowlist.String())
	}
	shadow := 0
	for i, r := range p.Rules {
		lines = append(lines, "rules["+strconv.Itoa(i)+"] "+r.String())
		if r.Shadow {
			shadow++
		}
	}
	digest := p.Digest
	if len(digest) > 12 {
		digest = digest[:12]
	}
	lines = append(lines, "valid: rules="+strconv.Itoa(len(p.Rules))+
		" shadow="+strconv.Itoa(shadow)+
		" allowlist="+strconv.Itoa(p.Allowlist.Len())+
		" blocklist="+strconv.Itoa(p.Blocklist.Len())+
		" sha256="+digest)
	return lines
}

// String describes r as one line of Lines, without the "rules[i] " prefix.
func (r *Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	b.WriteString(": when")
	writeMatch(&b, &r.Match)
	b.WriteString(" then")
	item(&b, "key", orInherited(r.Key))
	item(&b, "strategy", orInherited(r.Strategy))
	if r.Tiers == nil {
		item(&b, "limit", rate(r.Limit))
		if r.Limit.Burst > 0 {
			item(&b, "burst", strconv.FormatInt(r.Limit.Burst, 10))
		}
	} else {
		writeTiers(&b, r.Tiers)
	}
	item(&b, "scope", r.Scope)
	if r.Shadow {
		item(&b, "mode", "shadow")
	} else {
		item(&b, "mode", "enforce")
	}
	return b.String()
}

// writeMatch writes m's conditions to b as items, or " any" when it has
// none.
func writeMatch(b *strings.Builder, m *Match) {
	n := b.Len()
	if m.Scope != nil {
		scope := *m.Scope
		if scope == "" {
			scope = `""`
		}
		item(b, "scope", scope)
	}
	if len(m.Methods) > 0 {
		item(b, "methods", strings.Join(m.Methods, ","))
	}
	if m.PathPrefix != "" {
		item(b, "path_prefix", strconv.Quote(m.PathPrefix))
	}
	for _, h := range m.Headers {
		switch {
		case h.Exact != nil:
			item(b, "header."+h.Name, strconv.Quote(*h.Exact))
		case h.Present:
			item(b, "header."+h.Name, "present")
		default:
			item(b, "header."+h.Name, "absent")
		}
	}
	if b.Len() == n {
		b.WriteString(" any")
	}
}

// writeTiers writes t's items to b: where the tier is read, each tier's
// limit and burst, and the default tier.
func writeTiers(b *strings.Builder, t *Tiers) {
	if t.Header != "" {
		item(b, "tier_header", t.Header)
	} else {
		item(b, "tier_metadata", t.Metadata.String())
	}
	for _, name := range t.Names {
		l := t.Limits[name]
		item(b, "tier."+name, rate(l))
		if l.Burst > 0 {
			item(b, "tier."+name+".burst", strconv.FormatInt(l.Burst, 10))
		}
	}
	item(b, "tier_default", t.Default)
}

// item writes " name=value" to b.
func item(b *strings.Builder, name, value string) {
	b.WriteByte(' ')
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(value)
}

// String describes l as in [Policy.Lines]: identity="..." items, then cidr=...
// items.
func (l *List) String() string {
	var items []string
	for _, id := range l.Identities {
		items = append(items, "identity="+strconv.Quote(id))
	}
	for _, p := range l.Prefixes {
		items = append(items, "cidr="+p.String())
	}
	return strings.Join(items, " ")
}

// rate formats a limit as limit/window, e.g. 100/1h.
func rate(l Limit) string {
	return strconv.FormatInt(l.Limit, 10) + "/" + FormatDuration(l.Window)
}

func orInherited(s string) string {
	if s == "" {
		return Inherited
	}
	return s
}
