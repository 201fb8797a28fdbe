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
func CheckScope(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("length %d: must be 1 to %d", len(s), MaxNameLen)
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

// ParseKey checks a requestor identity form, as --key, the floodgate.key
// extension and a rule's key write it: "source", "xff" or "header:<name>"
// (see [HeaderName]). It returns the form with the header name lower-cased.
// [github.com/floodgate-rl/floodgate/authz.ParseKey] builds its KeySpec on
// it.
func ParseKey(s string) (string, error) {
	switch {
	case s == "source", s == "xff":
		return s, nil
	case strings.HasPrefix(s, "header:"):
		name, err := HeaderName(strings.TrimPrefix(s, "header:"))
		if err != nil {
			return "", err
		}
		return "header:" + name, nil
	}
	return "", errors.New(`unknown form: want "source", "header:<name>" or "xff"`)
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
// "ip:<address>" (IPv4-mapped addresses unmapped, zones dropped) or
// "header:<name>:<value>" (name lower-cased, value non-empty).
func ParseIdentity(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "ip:"):
		a, err := netip.ParseAddr(strings.TrimPrefix(s, "ip:"))
		if err != nil {
			return "", errors.New("not an IP address after ip: (use cidrs for ranges)")
		}
		return "ip:" + a.Unmap().WithZone("").String(), nil
	case strings.HasPrefix(s, "header:"):
		rest := strings.TrimPrefix(s, "header:")
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
	return "", errors.New(`want "ip:<address>" or "header:<name>:<value>"`)
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
