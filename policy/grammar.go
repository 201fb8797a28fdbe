package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// The grammar of the values floodgate reads as text, wherever they come
// from: its flags and environment, the floodgate.* context extensions of a
// route (package [github.com/floodgate-rl/floodgate/authz]) and the policy
// file. Each rule is written here once; every reader calls it, so that they
// accept the same inputs and refuse the others in the same words. The
// errors say only what is wrong; each caller adds where the value came
// from (a flag, an extension, a line and field of the file).

// MaxNameLen is the longest scope, rule name or tier name.
const MaxNameLen = 64

// tokenChars are the characters of an RFC 9110 token besides letters and
// digits.
const tokenChars = "!#$%&'*+-.^_`|~"

// errNotToken ends the error of a character outside an RFC 9110 token.
const errNotToken = "want letters, digits and " + tokenChars

// CheckScope reports whether s is a valid scope: 1 to [MaxNameLen] of
// [A-Za-z0-9_.-]. Scopes name counter families ([limiter.Request].Scope):
// the floodgate.scope context extension, a rule's scope, and a rule's name,
// which is its scope unless it sets one.
func CheckScope(s string) error { return checkName(s, MaxNameLen) }

// checkName checks 1 to max of [A-Za-z0-9_.-].
func checkName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("length %d: must be 1 to %d", len(s), max)
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return fmt.Errorf("invalid character %q: want [A-Za-z0-9_.-]", c)
		}
	}
	return nil
}

// checkTier checks a tier name: 1 to MaxNameLen characters of an RFC 9110
// token.
func checkTier(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("length %d: must be 1 to %d", len(s), MaxNameLen)
	}
	return checkToken(s)
}

// checkToken reports whether s is an RFC 9110 token, naming the first
// character that is not. The empty string passes; callers check length.
func checkToken(s string) error {
	for _, c := range s {
		if c >= 0x80 || !isTokenChar(byte(c)) {
			return fmt.Errorf("invalid character %q: %s", c, errNotToken)
		}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token or empty.
func isToken(s string) bool { return checkToken(s) == nil }

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte(tokenChars, c) >= 0
}

// HeaderName checks an HTTP field name (an RFC 9110 token), optionally an
// Envoy pseudo-header such as ":authority", and returns it lower-cased, as
// Envoy spells header names in a CheckRequest.
func HeaderName(s string) (string, error) {
	token := strings.TrimPrefix(s, ":")
	if token == "" {
		return "", errors.New("empty header name")
	}
	if err := checkToken(token); err != nil {
		return "", fmt.Errorf("header name %q: %w", s, err)
	}
	return strings.ToLower(s), nil
}

// The limits of a metadata field ([ParseMetadataField]).
const (
	// MaxMetadataFilterLen is the longest filter namespace of a metadata
	// field.
	MaxMetadataFilterLen = 128
	// MaxMetadataDepth is the most names in a metadata field's path.
	MaxMetadataDepth = 8
)

// MetadataField names a value in the dynamic metadata that Envoy's HTTP
// filters wrote before ext_authz, as a CheckRequest carries it in
// attributes.metadata_context.filter_metadata: in the Struct of namespace
// Filter, the field named by the first name of Path, in that Struct the
// field named by the second, and so on. Envoy's jwt_authn filter with
// payload_in_metadata: payload writes the verified token's claims under
// Filter "envoy.filters.http.jwt_authn", so Path "payload.sub" is the
// subject. The zero MetadataField names nothing; [ParseMetadataField]
// builds valid ones. A MetadataField is a comparable value. Package
// [github.com/floodgate-rl/floodgate/authz] reads the value.
type MetadataField struct {
	// Filter is the metadata namespace: 1 to [MaxMetadataFilterLen] of
	// [A-Za-z0-9_.-], compared exactly.
	Filter string
	// Path is 1 to [MaxMetadataDepth] field names separated by '.', each
	// 1 to [MaxNameLen] characters of an RFC 9110 token other than '.',
	// compared exactly.
	Path string
}

// String returns the field as [ParseMetadataField] reads it:
// "<filter>:<path>".
func (m MetadataField) String() string { return m.Filter + ":" + m.Path }

// ParseMetadataField parses "<filter>:<path>", as the key form
// "metadata:<filter>:<path>" and a tier's metadata: write it: the
// namespace up to the first ':', then field names separated by '.' (see
// [MetadataField] for their characters and bounds), such as
// "envoy.filters.http.jwt_authn:payload.sub". Field names holding '.' or
// ':' (claims named by a URL) cannot be written.
func ParseMetadataField(s string) (MetadataField, error) {
	filter, path, ok := strings.Cut(s, ":")
	if !ok {
		return MetadataField{}, errors.New("want <filter>:<path>, as in envoy.filters.http.jwt_authn:payload.sub")
	}
	if err := checkName(filter, MaxMetadataFilterLen); err != nil {
		return MetadataField{}, fmt.Errorf("metadata filter %q: %w", filter, err)
	}
	if n := strings.Count(path, ".") + 1; n > MaxMetadataDepth {
		return MetadataField{}, fmt.Errorf("metadata path %q: %d names: must be at most %d", path, n, MaxMetadataDepth)
	}
	for name := range strings.SplitSeq(path, ".") {
		if name == "" || len(name) > MaxNameLen {
			return MetadataField{}, fmt.Errorf("metadata path %q: name of length %d: must be 1 to %d", path, len(name), MaxNameLen)
		}
		if err := checkToken(name); err != nil {
			return MetadataField{}, fmt.Errorf("metadata path %q: %w", path, err)
		}
	}
	return MetadataField{Filter: filter, Path: path}, nil
}

// errUnknownKey is the error of a key that is none of the forms.
var errUnknownKey = errors.New(`unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`)

// ParseKey checks a requestor identity form, as --key, the floodgate.key
// extension and a rule's key write it: "source", "xff", "principal",
// "header:<name>" (see [HeaderName]) or "metadata:<filter>:<path>" (see
// [ParseMetadataField]). It returns the form with the header name
// lower-cased; metadata fields are case-sensitive and kept as written.
// [github.com/floodgate-rl/floodgate/authz.ParseKey] builds its KeySpec on
// it.
func ParseKey(s string) (string, error) {
	switch {
	case s == "source", s == "xff", s == "principal":
		return s, nil
	case strings.HasPrefix(s, "header:"):
		name, err := HeaderName(strings.TrimPrefix(s, "header:"))
		if err != nil {
			return "", err
		}
		return "header:" + name, nil
	case strings.HasPrefix(s, "metadata:"):
		if _, err := ParseMetadataField(strings.TrimPrefix(s, "metadata:")); err != nil {
			return "", err
		}
		return s, nil
	}
	return "", errUnknownKey
}

// ParseWindow parses a window, as --window, the floodgate.window extension
// and a rule's window write it: a Go duration ("90s", "1h") that
// [limiter.Request.Validate] accepts, a whole number of seconds from 1s to
// [limiter.MaxWindow].
func ParseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration such as 60s or 1h")
	}
	if (limiter.Request{Limit: 1, Window: d}).Validate() != nil {
		return 0, fmt.Errorf("must be a whole number of seconds from 1s to %s", FormatDuration(limiter.MaxWindow))
	}
	return d, nil
}

// ParseIdentity checks a requestor identity of an allowlist or blocklist
// and returns it normalised as package authz forms identities:
// "ip:<address>" (IPv4-mapped addresses unmapped, zones dropped),
// "header:<name>:<value>" (name lower-cased, value non-empty),
// "principal:<identity>" (such as a SPIFFE ID, non-empty, compared exactly)
// or "metadata:<filter>:<path>:<value>" (a field as [ParseMetadataField]
// reads it, value non-empty).
func ParseIdentity(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "ip:"):
		a, err := netip.ParseAddr(strings.TrimPrefix(s, "ip:"))
		if err != nil {
			return "", errors.New("not an IP address after ip: (use cidrs for ranges)")
		}
		return "ip:" + a.Unmap().WithZone("").String(), nil
	case strings.HasPrefix(s, "header:"):
		return headerIdentity(strings.TrimPrefix(s, "header:"))
	case strings.HasPrefix(s, "principal:"):
		if s == "principal:" {
			return "", errors.New("want principal:<identity>, as in principal:spiffe://cluster.local/ns/shop/sa/web")
		}
		return s, nil
	case strings.HasPrefix(s, "metadata:"):
		return metadataIdentity(strings.TrimPrefix(s, "metadata:"))
	}
	return "", errors.New(`want "ip:<address>", "header:<name>:<value>", "principal:<identity>" or "metadata:<filter>:<path>:<value>"`)
}

// headerIdentity is ParseIdentity of "header:" + rest.
func headerIdentity(rest string) (string, error) {
	pseudo := strings.HasPrefix(rest, ":") // ":authority"
	name, value, ok := strings.Cut(strings.TrimPrefix(rest, ":"), ":")
	if !ok || value == "" {
		return "", errors.New("want header:<name>:<value>")
	}
	if pseudo {
		name = ":" + name
	}
	name, err := HeaderName(name)
	if err != nil {
		return "", err
	}
	return "header:" + name + ":" + value, nil
}

// metadataIdentity is ParseIdentity of "metadata:" + rest. Neither the
// filter nor the path holds a ':', so the value starts after the second.
func metadataIdentity(rest string) (string, error) {
	const want = "want metadata:<filter>:<path>:<value>"
	filter, more, ok := strings.Cut(rest, ":")
	if !ok {
		return "", errors.New(want)
	}
	path, value, ok := strings.Cut(more, ":")
	if !ok || value == "" {
		return "", errors.New(want)
	}
	if _, err := ParseMetadataField(filter + ":" + path); err != nil {
		return "", err
	}
	return "metadata:" + rest, nil
}

// ParsePrefix parses an address range ("10.0.0.0/8", "2001:db8::/32") or a
// single address (a /32 or /128). The range is masked, and an IPv4-mapped
// IPv6 range of /96 or more becomes the IPv4 range, since floodgate
// compares addresses unmapped.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, errors.New("not an address range such as 10.0.0.0/8 or 2001:db8::/32")
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, errors.New("not an address or an address range such as 10.0.0.0/8")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, errors.New("an IPv4-mapped range must be /96 or longer")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// CeilSeconds rounds d up to whole seconds, 0 when d is not positive: a
// wait as floodgate writes it in seconds (Retry-After, RateLimit's reset,
// the console's retry_after).
func CeilSeconds(d time.Duration) int64 {
	n := int64(d / time.Second)
	if d%time.Second > 0 {
		n++
	}
	return max(n, 0)
}

// FormatDuration formats d like [time.Duration.String] without zero minutes
// and seconds after a whole hour or minute: "1h", "1h30m", "1m30s". Windows
// are written so in messages, logs and `floodgate check-policy`.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
