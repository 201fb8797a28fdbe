package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Identity kinds whose value DisplayIdentity fingerprints: "header:<name>:
// <value>" and "metadata:<filter>:<path>:<value>".
const (
	headerIdentityPrefix   = "header:"
	metadataIdentityPrefix = "metadata:"
)

// FingerprintPrefix marks a fingerprint in place of a header's value in
// the identities DisplayIdentity returns.
const FingerprintPrefix = "sha256:"

// fingerprintDigits is how many hexadecimal digits of the SHA-256 a
// fingerprint keeps: 48 bits, enough to tell apart the clients an
// operator looks at, too few to stand for the value.
const fingerprintDigits = 12

// maxShownIdentity bounds an identity shown in full (a header's value can
// be of any length).
const maxShownIdentity = 256

// DisplayIdentity returns a requestor identity (a limiter.Request's
// Requestor, as KeySpec.Identity builds it) as floodgate shows it to
// operators, in its logs: an address ("ip:203.0.113.7"), a verified
// principal or FallbackIdentity as it is, while the value of a header
// (usually a credential such as an API key) or of Envoy metadata (a token's
// claim, such as a user's e-mail) is replaced by its fingerprint unless
// show is set: "header:x-api-key:sha256:" and the first 12 hexadecimal
// digits of the SHA-256 of the value, so that whoever holds a key finds it
// with
//
//	printf %s "$KEY" | sha256sum | cut -c1-12
//
// The fingerprint does not depend on the replica or the process: every
// replica shows the same one for a client. With show, the identity is
// shown as it is, cut to 256 bytes.
func DisplayIdentity(identity string, show bool) string {
	if show {
		return truncate(identity, maxShownIdentity)
	}
	kind, value, ok := splitSecretIdentity(identity)
	if !ok {
		return truncate(identity, maxShownIdentity)
	}
	sum := sha256.Sum256([]byte(value))
	var b strings.Builder
	kind = truncate(kind, maxShownIdentity)
	b.Grow(len(kind) + len(FingerprintPrefix) + fingerprintDigits)
	b.WriteString(kind)
	b.WriteString(FingerprintPrefix)
	b.WriteString(hex.EncodeToString(sum[:fingerprintDigits/2]))
	return b.String()
}

// splitSecretIdentity splits a header or metadata identity into its kind
// ("header:<name>:", "metadata:<filter>:<path>:") and its value. A header
// name has no ':' but for the leading one of Envoy's pseudo-headers
// (":authority"), a metadata filter and path have none; the value may
// hold any.
func splitSecretIdentity(identity string) (kind, value string, ok bool) {
	var rest string
	fields := 0
	switch {
	case strings.HasPrefix(identity, headerIdentityPrefix):
		rest, fields = strings.TrimPrefix(identity[len(headerIdentityPrefix):], ":"), 1
	case strings.HasPrefix(identity, metadataIdentityPrefix):
		rest, fields = identity[len(metadataIdentityPrefix):], 2
	default:
		return "", "", false
	}
	for range fields {
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return "", "", false
		}
		rest = rest[i+1:]
	}
	return identity[:len(identity)-len(rest)], rest, true
}
