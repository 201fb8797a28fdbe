package authz_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/authz"
)

// fingerprint is what `printf %s v | sha256sum | cut -c1-12` prints.
func fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])[:12]
}

func TestDisplayIdentity(t *testing.T) {
	long := strings.Repeat("k", 300)
	for _, tt := range []struct {
		identity string
		show     bool
		want     string
	}{
		{"ip:203.0.113.7", false, "ip:203.0.113.7"},
		{"ip:2001:db8::1", false, "ip:2001:db8::1"},
		{authz.FallbackIdentity, false, authz.FallbackIdentity},
		{"header:x-api-key:k-1", false, "header:x-api-key:sha256:" + fingerprint("k-1")},
		{"header:x-api-key:k-1", true, "header:x-api-key:k-1"},
		{"header:x-api-key:a:b:c", false, "header:x-api-key:sha256:" + fingerprint("a:b:c")},
		{"header::authority:api.example.com", false, "header::authority:sha256:" + fingerprint("api.example.com")},
		{"header:x-api-key:", false, "header:x-api-key:sha256:" + fingerprint("")},
		{"header:x-api-key:" + long, false, "header:x-api-key:sha256:" + fingerprint(long)},
		{"header:x-api-key:" + long, true, ("header:x-api-key:" + long)[:256] + "...(317 bytes)"},
		{"header:noseparator", false, "header:noseparator"},
		{"principal:spiffe://cluster.local/ns/shop/sa/web", false, "principal:spiffe://cluster.local/ns/shop/sa/web"},
		{"metadata:envoy.filters.http.jwt_authn:payload.sub:ann@example.com", false,
			"metadata:envoy.filters.http.jwt_authn:payload.sub:sha256:" + fingerprint("ann@example.com")},
		{"metadata:envoy.filters.http.jwt_authn:payload.sub:ann@example.com", true, "metadata:envoy.filters.http.jwt_authn:payload.sub:ann@example.com"},
		{"metadata:f:p:a:b", false, "metadata:f:p:sha256:" + fingerprint("a:b")},
		{"metadata:nopath", false, "metadata:nopath"},
	} {
		if got := authz.DisplayIdentity(tt.identity, tt.show); got != tt.want {
			t.Errorf("DisplayIdentity(%.40q, %v) = %q, want %q", tt.identity, tt.show, got, tt.want)
		}
	}
}
