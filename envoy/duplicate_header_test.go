package envoy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// TestDuplicateKeyHeader: on a route keyed with floodgate.key
// header:x-api-key, a client whose key is used up cannot get a fresh quota
// by repeating the header, which Envoy joins with "," in the CheckRequest
// while the app reads the first value, nor by a trailing comma, padding,
// quotes or another spelling of the header's name. A first value that is
// empty counts as no key at all: the request is limited as one without the
// header (by its address), as the app, which reads no key, treats it.
func TestDuplicateKeyHeader(t *testing.T) {
	setup(t)
	const limit = 5 // the /login route's floodgate.limit
	const key = "k-Alice-1"
	// The key's header joins allowed_headers, as front-proxy.yaml says to.
	config := rewriteConfig(t, "front-proxy.yaml",
		"                        floodgate.scope: login\n",
		"                        floodgate.scope: login\n                        floodgate.key: header:x-api-key\n",
		"                - exact: x-forwarded-for\n",
		"                - exact: x-forwarded-for\n                - exact: x-api-key\n")
	e := startEdge(t, config, testutil.StartFloodgate(t, "--limit", "100"))
	c, app, target := e.c, e.app, e.base+"/login"

	for i := 1; i <= limit; i++ {
		r := c.get(t, target, http.Header{"X-Api-Key": {key}})
		if r.status != http.StatusOK {
			t.Fatalf("request %d with the key: got %d %q, want 200", i, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "login", limit, 60, limit-i)
		if got := app.lastHeader("X-Api-Key"); got != key {
			t.Fatalf("the app got X-Api-Key %q, want %q", got, key)
		}
	}
	checkDenied(t, c.get(t, target, http.Header{"X-Api-Key": {key}}), "login", limit, 60)

	for _, tt := range []struct {
		name string
		h    http.Header
	}{
		{"a second header", http.Header{"X-Api-Key": {key, "fresh-1"}}},
		{"the key twice", http.Header{"X-Api-Key": {key, key}}},
		{"a second header, another case", http.Header{"X-Api-Key": {key}, "x-API-KEY": {"fresh-2"}}},
		{"a trailing comma", http.Header{"X-Api-Key": {key + ","}}},
		{"a list", http.Header{"X-Api-Key": {key + ", fresh-3"}}},
		{"many commas", http.Header{"X-Api-Key": {key + strings.Repeat(",", 1000)}}},
		{"padding", http.Header{"X-Api-Key": {" \t" + key + " \t"}}},
		{"quotes", http.Header{"X-Api-Key": {`"` + key + `"`}}},
		{"a quoted list", http.Header{"X-Api-Key": {`"` + key + `,fresh-4"`}}},
	} {
		r := c.get(t, target, tt.h)
		if r.status != http.StatusTooManyRequests {
			t.Errorf("%s (%q): got %d %q, want 429: a fresh quota for a used-up key", tt.name, tt.h, r.status, r.body)
			continue
		}
		checkDenied(t, r, "login", limit, 60)
	}
	app.checkCount(t, limit, "")

	// An empty first value is no key: counted under the client's address,
	// with requests that send no key, not as a new requestor per trick.
	for i, h := range []http.Header{
		{"X-Api-Key": {"", key}},
		{"X-Api-Key": {",fresh-5"}},
		nil,
	} {
		r := c.get(t, target, h)
		if r.status != http.StatusOK {
			t.Fatalf("keyless request %d (%q): got %d %q, want 200", i+1, h, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "login", limit, 60, limit-1-i)
	}
}
