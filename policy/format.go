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
	m := &r.Match
	n := b.Len()
	if m.Scope != nil {
		b.WriteString(" scope=")
		if *m.Scope == "" {
			b.WriteString(`""`)
		} else {
			b.WriteString(*m.Scope)
		}
	}
	if len(m.Methods) > 0 {
		b.WriteString(" methods=")
		b.WriteString(strings.Join(m.Methods, ","))
	}
	if m.PathPrefix != "" {
		b.WriteString(" path_prefix=")
		b.WriteString(strconv.Quote(m.PathPrefix))
	}
	for _, h := range m.Headers {
		b.WriteString(" header.")
		b.WriteString(h.Name)
		b.WriteByte('=')
		switch {
		case h.Exact != nil:
			b.WriteString(strconv.Quote(*h.Exact))
		case h.Present:
			b.WriteString("present")
		default:
			b.WriteString("absent")
		}
	}
	if b.Len() == n {
		b.WriteString(" any")
	}
	b.WriteString(" then key=")
	b.WriteString(orInherited(r.Key))
	b.WriteString(" strategy=")
	b.WriteString(orInherited(r.Strategy))
	if r.Tiers == nil {
		b.WriteString(" limit=")
		b.WriteString(rate(r.Limit))
		if r.Limit.Burst > 0 {
			b.WriteString(" burst=")
			b.WriteString(strconv.FormatInt(r.Limit.Burst, 10))
		}
	} else {
		t := r.Tiers
		if t.Header != "" {
			b.WriteString(" tier_header=")
			b.WriteString(t.Header)
		} else {
			b.WriteString(" tier_metadata=")
			b.WriteString(t.Metadata.String())
		}
		for _, name := range t.Names {
			l := t.Limits[name]
			b.WriteString(" tier.")
			b.WriteString(name)
			b.WriteByte('=')
			b.WriteString(rate(l))
			if l.Burst > 0 {
				b.WriteString(" tier.")
				b.WriteString(name)
				b.WriteString(".burst=")
				b.WriteString(strconv.FormatInt(l.Burst, 10))
			}
		}
		b.WriteString(" tier_default=")
		b.WriteString(t.Default)
	}
	b.WriteString(" scope=")
	b.WriteString(r.Scope)
	if r.Shadow {
		b.WriteString(" mode=shadow")
	} else {
		b.WriteString(" mode=enforce")
	}
	return b.String()
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
