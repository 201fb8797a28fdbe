package authz_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/authz"
)

func TestHeaderValue(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("k", 64<<10)
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", "abc"},
		{"empty", "", ""},
		{"repeated header, as Envoy joins it", "abc,xyz", "abc"},
		{"repeated header with space", "abc, xyz", "abc"},
		{"same key twice", "abc,abc", "abc"},
		{"trailing comma", "abc,", "abc"},
		{"many commas", "abc" + strings.Repeat(",", 10000), "abc"},
		{"leading space", "  abc", "abc"},
		{"trailing space", "abc  ", "abc"},
		{"tabs", "\tabc\t,x", "abc"},
		{"quoted", `"abc"`, "abc"},
		{"quoted with padding", ` " abc " `, "abc"},
		{"quoted string holding a comma", `"abc,def"`, "abc"},
		{"unbalanced quote", `"abc`, "abc"},
		{"doubled quotes", `""abc""`, "abc"},
		{"inner space kept", "ab c", "ab c"},
		{"case kept: keys are case-sensitive", "AbC", "AbC"},
		{"other whitespace kept", "\vabc\u00a0", "\vabc\u00a0"},
		{"empty first element", ",abc", ""},
		{"blank first element", " \t,abc", ""},
		{"empty quoted first element", `"",abc`, ""},
		{"only commas", ",,,", ""},
		{"only spaces", "   ", ""},
		{"huge value", huge, huge},
		{"huge value, then another", huge + ",x", huge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := authz.HeaderValue(tt.in); got != tt.want {
				t.Errorf("HeaderValue(%.40q) = %.40q, want %.40q", tt.in, got, tt.want)
			}
		})
	}
}

// TestHeaderKeyTricks tries, against a key whose quota would be spent, the
// variants a client can send to look like a new requestor: every one must
// be the same identity, or (when the first element is empty) the source
// address, as with no key at all. Header names are lower-cased by Envoy in
// http.headers; in http.header_map (encode_raw_headers) they keep the
// client's case and repeat as separate entries.
func TestHeaderKeyTricks(t *testing.T) {
	t.Parallel()
	const id = "header:x-api-key:Secret-1"
	const src = "ip:192.0.2.10"
	key, err := authz.ParseKey("header:x-api-key", 0)
	if err != nil {
		t.Fatal(err)
	}
	headers := func(v string) *authv3.CheckRequest {
		return checkReq(socket("192.0.2.10", 1), map[string]string{"x-api-key": v}, nil)
	}
	raw := func(hs ...*corev3.HeaderValue) *authv3.CheckRequest {
		r := checkReq(socket("192.0.2.10", 1), nil, nil)
		r.Attributes.Request = &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: hs},
		}}
		return r
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want string
	}{
		{"the key", headers("Secret-1"), id},
		{"a second header", headers("Secret-1,other"), id},
		{"the key twice", headers("Secret-1,Secret-1"), id},
		{"trailing comma", headers("Secret-1,"), id},
		{"padded", headers(" Secret-1\t"), id},
		{"quoted", headers(`"Secret-1"`), id},
		{"a hundred repetitions", headers(strings.Repeat("Secret-1,", 100)), id},
		{"other case is another key", headers("secret-1"), "header:x-api-key:secret-1"},
		{"empty first header", headers(",Secret-1"), src},
		{"raw: a second header", raw(
			&corev3.HeaderValue{Key: "X-Api-Key", RawValue: []byte("Secret-1")},
			&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte("other")},
		), id},
		{"raw: value in Value, not RawValue", raw(&corev3.HeaderValue{Key: "x-api-key", Value: "Secret-1,"}), id},
		{"raw: empty first header", raw(
			&corev3.HeaderValue{Key: "x-api-key", RawValue: nil},
			&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte("Secret-1")},
		), src},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := key.Identity(tt.req); got != tt.want {
				t.Errorf("Identity = %.80q, want %.80q", got, tt.want)
			}
		})
	}
}

// FuzzHeaderValue checks what a client can do to a key header without
// becoming a new requestor: append a repetition or a list (Envoy's join),
// or pad the value with spaces, tabs or quotes; and that the result is
// stable.
func FuzzHeaderValue(f *testing.F) {
	for _, s := range []string{"abc", "", ",abc", `"a,b"`, " \t", "k\x00\xff"} {
		f.Add(s, "other")
	}
	f.Fuzz(func(t *testing.T, v, more string) {
		got := authz.HeaderValue(v)
		for _, variant := range []string{v + "," + more, v + ",", " \t\"" + v, v + "\" \t"} {
			if g := authz.HeaderValue(variant); g != got {
				t.Errorf("HeaderValue(%q) = %q, but HeaderValue(%q) = %q", variant, g, v, got)
			}
		}
		if again := authz.HeaderValue(got); again != got {
			t.Errorf("HeaderValue(%q) = %q, not stable: then %q", v, got, again)
		}
	})
}
