package authz

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/policy"
)

// FallbackIdentity is the requestor identity of a request that carries no
// usable identity: no attributes, no source address, a pipe or Envoy-internal
// address, or an address that does not parse as an IP. All such requests share
// one counter, so a misconfigured listener is limited as a single client
// rather than not at all. It cannot collide with a real identity, which always
// carries a kind prefix ("ip:", "header:", "principal:", "metadata:").
const FallbackIdentity = "unknown"

// keyKind is the form of a KeySpec.
type keyKind uint8

const (
	keySource keyKind = iota // the zero KeySpec keys on the source address
	keyHeader
	keyXFF
	keyPrincipal
	keyMetadata
)

// KeySpec says how the requestor identity is taken from a CheckRequest. Build
// one with [ParseKey]. The zero KeySpec is the "source" form with no trusted
// X-Forwarded-For hops.
//
// Identities carry their kind, so different forms never share a counter by
// accident: "ip:203.0.113.7" for an address (from the source or from
// X-Forwarded-For; the same client address is the same requestor either way),
// "header:x-api-key:abc" for a header value, "principal:spiffe://..." for
// the peer's verified identity,
// "metadata:envoy.filters.http.jwt_authn:payload.sub:ann" for a metadata
// value, and [FallbackIdentity] when there is nothing usable.
//
// A KeySpec is an immutable value, safe to copy and to use concurrently.
type KeySpec struct {
	kind keyKind
	// header is the lower-cased header name for the header form.
	header string
	// meta is the field of the metadata form.
	meta policy.MetadataField
	// prefix is the identity's kind, precomputed: "header:<name>:",
	// "principal:" or "metadata:<filter>:<path>:".
	prefix string
	// hops is the number of trusted X-Forwarded-For hops. It is kept for every
	// form so that a per-route "xff" override inherits the server's count.
	hops int
}

// ParseKey parses a key form, as [policy.ParseKey] checks it (the one
// grammar of --key, floodgate.key and a policy rule's key):
//
//   - "source": the downstream peer address
//     (attributes.source.address.socket_address.address), without its port,
//     normalised (IPv4-mapped IPv6 addresses are unmapped, zones dropped).
//   - "header:<name>": the value of request header <name> (matched
//     case-insensitively; Envoy sends lower-case keys), as the upstream
//     application acts on it (see [HeaderValue]). When the header is absent,
//     or that value is empty, the source address is used instead.
//   - "xff": the X-Forwarded-For entry that xffTrustedHops trusted proxies
//     vouch for. The header is split on ',' and entries trimmed; skipping
//     xffTrustedHops entries from the right, the next one (index
//     len-1-xffTrustedHops) is used. With too few entries, or an entry that is
//     empty or not an IP address (an optional port is allowed), the source
//     address is used instead.
//   - "principal": the downstream peer's verified identity,
//     attributes.source.principal: with mutual TLS terminated by Envoy, the
//     client certificate's first URI SAN (the SPIFFE ID under Istio), else
//     its first DNS SAN, else its subject. It is used exactly as Envoy sends
//     it. When it is empty (no client certificate, plain text), the source
//     address is used instead.
//   - "metadata:<filter>:<path>": a value that an Envoy filter before
//     ext_authz wrote to the request's dynamic metadata, as the CheckRequest
//     carries it in attributes.metadata_context.filter_metadata (see
//     [policy.MetadataField]; Envoy sends the namespaces its ext_authz
//     filter lists in metadata_context_namespaces), formatted as
//     [MetadataValue] does. When the field is missing, or is not a
//     non-empty string, a finite number or a boolean, the source address
//     is used instead.
//
// xffTrustedHops must not be negative; it is remembered by every form (see
// [KeySpec.TrustedHops]) because per-route "xff" overrides use the server's
// count. An error reads "parse key <form>: " and the grammar's reason.
func ParseKey(s string, xffTrustedHops int) (KeySpec, error) {
	if xffTrustedHops < 0 {
		return KeySpec{}, fmt.Errorf("parse key %q: xff trusted hops %d: must not be negative", s, xffTrustedHops)
	}
	form, err := policy.ParseKey(s)
	if err != nil {
		return KeySpec{}, fmt.Errorf("parse key %q: %w", s, err)
	}
	k := KeySpec{hops: xffTrustedHops}
	switch {
	case form == "source":
		k.kind = keySource
	case form == "xff":
		k.kind = keyXFF
	case form == "principal":
		k.kind, k.prefix = keyPrincipal, "principal:"
	case strings.HasPrefix(form, "metadata:"):
		// policy.ParseKey has checked the field.
		k.meta, _ = policy.ParseMetadataField(strings.TrimPrefix(form, "metadata:"))
		k.kind, k.prefix = keyMetadata, form+":"
	default:
		k.kind, k.header, k.prefix = keyHeader, strings.TrimPrefix(form, "header:"), form+":"
	}
	return k, nil
}

// String returns the form k was parsed from: "source", "header:<name>" (name
// lower-cased), "xff", "principal" or "metadata:<filter>:<path>". The hop
// count is not part of it.
func (k KeySpec) String() string {
	switch k.kind {
	case keyHeader:
		return "header:" + k.header
	case keyXFF:
		return "xff"
	case keyPrincipal:
		return "principal"
	case keyMetadata:
		return "metadata:" + k.meta.String()
	default:
		return "source"
	}
}

// TrustedHops returns the number of trusted X-Forwarded-For hops k was parsed
// with.
func (k KeySpec) TrustedHops() int { return k.hops }

// Identity returns the requestor identity of req under k, or [FallbackIdentity].
// req may be nil. A header's value is taken as [HeaderValue] returns it, a
// metadata value as [MetadataValue] does; of any size and content, they and
// a principal are otherwise used as they are.
func (k KeySpec) Identity(req *authv3.CheckRequest) string {
	attrs := req.GetAttributes()
	switch k.kind {
	case keyHeader:
		if v := HeaderValue(firstHeader(attrs, k.header)); v != "" {
			return k.prefix + v
		}
	case keyXFF:
		if addr, ok := xffAddr(requestHeader(attrs, "x-forwarded-for"), k.hops); ok {
			return ipIdentity(addr)
		}
	case keyPrincipal:
		if p := attrs.GetSource().GetPrincipal(); p != "" {
			return k.prefix + p
		}
	case keyMetadata:
		if v, ok := MetadataValue(attrs, k.meta); ok {
			return k.prefix + v
		}
	}
	return sourceIdentity(attrs)
}

// HeaderValue returns the value of a header, as Envoy sends it in a
// CheckRequest, that the "header:<name>" key form counts: the value the
// upstream application acts on. Envoy joins a header sent more than once
// with ',' ("key1,key2"), while the application usually reads the first
// one; so a repeated header must not be a new requestor, nor may a trailing
// comma or padding be. HeaderValue therefore returns the text before the
// first ',', with optional whitespace (spaces and tabs) and double quotes
// trimmed from both ends, so that an application that unquotes a quoted
// string sees the same requestor too. "" means no usable value: the header
// is absent, empty, or its first element is (",abc", " ,abc", `"",abc`),
// and the key falls back as for an absent header.
//
// Every transformation only merges values that an application might treat
// as one; none splits one value into several requestors. Values are
// compared exactly otherwise: API keys are case-sensitive secrets, so case
// is never folded. (Header names are case-insensitive: "X-API-Key" and
// "x-api-key" are the same header, repeated.) A value holding a comma of
// its own ("a,b", or the quoted string "\"a,b\"") is counted as its first
// part ("a").
func HeaderValue(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.Trim(v, " \t\"")
}

// maxExactInteger is 2^53: every integer up to it in magnitude is a
// float64 exactly, so it is formatted as an integer.
const maxExactInteger = 1 << 53

// MetadataValue returns the value of field f in the request's
// metadata_context (attrs may be nil) as the "metadata:" key form and a
// tier's metadata: read it, and whether there is a usable one. The field's
// namespace is looked up in filter_metadata, then each name of its path in
// the Struct found so far. Its value must be:
//
//   - a string: returned as it is, of any size and content; "" is not
//     usable;
//   - a number: an integer of magnitude up to 2^53 in decimal without an
//     exponent ("42", "-7", never "4.2e+01"), any other finite number as
//     strconv.FormatFloat(v, 'g', -1, 64) writes it ("0.5", "1e+21"); NaN
//     and infinities are not usable;
//   - a boolean: "true" or "false".
//
// A null, a list, a Struct, or a path that leaves the Structs (a name
// missing, or naming a value that is not a Struct before the last name) is
// not usable: the key then falls back to the source address, and a tier to
// its default.
func MetadataValue(attrs *authv3.AttributeContext, f policy.MetadataField) (string, bool) {
	s := attrs.GetMetadataContext().GetFilterMetadata()[f.Filter]
	if f.Path == "" {
		return "", false
	}
	for rest := f.Path; ; {
		name, more, nested := strings.Cut(rest, ".")
		v := s.GetFields()[name] // nil Structs have no fields
		if !nested {
			return scalarText(v)
		}
		s, rest = v.GetStructValue(), more
	}
}

// scalarText formats a string, number or boolean Struct value as
// MetadataValue describes.
func scalarText(v *structpb.Value) (string, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue, k.StringValue != ""
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue), true
	case *structpb.Value_NumberValue:
		n := k.NumberValue
		switch {
		case math.IsNaN(n), math.IsInf(n, 0):
			return "", false
		case n == math.Trunc(n) && math.Abs(n) <= maxExactInteger:
			return strconv.FormatInt(int64(n), 10), true
		}
		return strconv.FormatFloat(n, 'g', -1, 64), true
	}
	return "", false
}

// sourceIdentity returns the identity of the downstream peer address.
func sourceIdentity(attrs *authv3.AttributeContext) string {
	sa := attrs.GetSource().GetAddress().GetSocketAddress()
	if sa == nil {
		return FallbackIdentity
	}
	addr, ok := parseAddr(sa.GetAddress())
	if !ok {
		return FallbackIdentity
	}
	return ipIdentity(addr)
}

// xffAddr picks the entry of an X-Forwarded-For value that hops trusted
// proxies vouch for: index len-1-hops after splitting on ','.
func xffAddr(xff string, hops int) (netip.Addr, bool) {
	if xff == "" {
		return netip.Addr{}, false
	}
	// Walk from the right without allocating a slice of entries.
	end := len(xff)
	for i := 0; ; i++ {
		start := strings.LastIndexByte(xff[:end], ',') + 1
		if i == hops {
			return parseAddr(strings.TrimSpace(xff[start:end]))
		}
		if start == 0 {
			return netip.Addr{}, false // too few entries
		}
		end = start - 1
	}
}

// parseAddr parses an IP address, with or without a port ("1.2.3.4:80",
// "[::1]:80"), and normalises it: IPv4-mapped IPv6 addresses are unmapped and
// zones dropped.
func parseAddr(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		addr = ap.Addr()
	}
	return addr.Unmap().WithZone(""), true
}

// ipIdentity formats addr as "ip:<addr>" in a single allocation.
func ipIdentity(addr netip.Addr) string {
	var buf [3 + len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]byte
	b := append(buf[:0], "ip:"...)
	return string(addr.AppendTo(b))
}

// requestHeader returns the value of the request header name (lower-case), or "".
// Envoy sends headers in http.headers, or, with encode_raw_headers, in
// http.header_map, where repeated headers are separate entries; those are
// joined with "," as Envoy joins them in http.headers.
func requestHeader(attrs *authv3.AttributeContext, name string) string {
	v, _ := lookupHeader(attrs, name)
	return v
}

// firstHeader returns the value of the request header name (lower-case) as
// requestHeader does, except that of repeated headers in http.header_map
// only the first counts: HeaderValue would drop the others anyway, and they
// are not joined for nothing.
func firstHeader(attrs *authv3.AttributeContext, name string) string {
	http := attrs.GetRequest().GetHttp()
	if v, ok := http.GetHeaders()[name]; ok {
		return v
	}
	for _, h := range http.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(h.GetKey(), name) {
			if raw := h.GetRawValue(); len(raw) > 0 {
				return string(raw)
			}
			return h.GetValue()
		}
	}
	return ""
}

// lookupHeader is requestHeader that also reports whether the request has
// the header at all (possibly with an empty value).
func lookupHeader(attrs *authv3.AttributeContext, name string) (string, bool) {
	http := attrs.GetRequest().GetHttp()
	if v, ok := http.GetHeaders()[name]; ok {
		return v, true
	}
	// Joined in one buffer: appending string to string would copy the
	// value so far for every repetition.
	var joined []byte
	found := false
	for _, h := range http.GetHeaderMap().GetHeaders() {
		if !strings.EqualFold(h.GetKey(), name) {
			continue
		}
		if found {
			joined = append(joined, ',')
		}
		found = true
		if raw := h.GetRawValue(); len(raw) > 0 {
			joined = append(joined, raw...)
		} else {
			joined = append(joined, h.GetValue()...)
		}
	}
	return string(joined), found
}
