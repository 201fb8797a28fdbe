package authz_test

import (
	"math"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/policy"
)

// jwtNS is the metadata namespace Envoy's jwt_authn filter writes.
const jwtNS = "envoy.filters.http.jwt_authn"

// withPrincipal sets the peer's verified identity, as Envoy does when it
// terminates mutual TLS.
func withPrincipal(req *authv3.CheckRequest, principal string) *authv3.CheckRequest {
	if req.Attributes.Source == nil {
		req.Attributes.Source = &authv3.AttributeContext_Peer{}
	}
	req.Attributes.Source.Principal = principal
	return req
}

// withMetadata sets metadata_context.filter_metadata[ns] to fields, as
// Envoy does for the namespaces of metadata_context_namespaces.
func withMetadata(t testing.TB, req *authv3.CheckRequest, ns string, fields map[string]any) *authv3.CheckRequest {
	t.Helper()
	s, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	if req.Attributes.MetadataContext == nil {
		req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	}
	req.Attributes.MetadataContext.FilterMetadata[ns] = s
	return req
}

// jwtPayload is jwt_authn's metadata with payload_in_metadata: payload.
func jwtPayload(claims map[string]any) map[string]any { return map[string]any{"payload": claims} }

func TestVerifiedIdentity(t *testing.T) {
	t.Parallel()
	const spiffe = "spiffe://cluster.local/ns/shop/sa/web"
	big := strings.Repeat("p\x00é", 20<<10)
	src := socket("192.0.2.10", 5000)
	req := func() *authv3.CheckRequest { return checkReq(src, map[string]string{"x-api-key": "k"}, nil) }
	const sub = "metadata:" + jwtNS + ":payload.sub"
	tests := []struct {
		name string
		key  string
		req  *authv3.CheckRequest
		want string
	}{
		{"principal", "principal", withPrincipal(req(), spiffe), "principal:" + spiffe},
		{"principal, a subject as Envoy writes one", "principal", withPrincipal(req(), "CN=ann,O=Example"), "principal:CN=ann,O=Example"},
		{"principal kept exactly: no trimming, no case folding", "principal", withPrincipal(req(), " Spiffe://X,y "), "principal: Spiffe://X,y "},
		{"principal of any size and bytes", "principal", withPrincipal(req(), big), "principal:" + big},
		{"principal empty: the source address", "principal", withPrincipal(req(), ""), "ip:192.0.2.10"},
		{"principal, no source at all", "principal", withPrincipal(checkReq(nil, nil, nil), ""), authz.FallbackIdentity},
		{"principal, no attributes", "principal", &authv3.CheckRequest{}, authz.FallbackIdentity},
		{"principal looking like an address stays a principal", "principal", withPrincipal(req(), "192.0.2.10"), "principal:192.0.2.10"},
		{"principal ignores a header of that name", "principal", checkReq(src, map[string]string{"principal": spiffe, "x-forwarded-client-cert": "URI=" + spiffe}, nil), "ip:192.0.2.10"},

		{"metadata string", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": "ann"})), sub + ":ann"},
		{"metadata string kept exactly", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": " Ann,b "})), sub + ": Ann,b "},
		{"metadata number", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": 12345678})), sub + ":12345678"},
		{"metadata boolean", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": true})), sub + ":true"},
		{"metadata empty string: the source address", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": ""})), "ip:192.0.2.10"},
		{"metadata missing claim", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"iss": "x"})), "ip:192.0.2.10"},
		{"metadata other namespace only", sub, withMetadata(t, req(), "envoy.filters.http.lua", jwtPayload(map[string]any{"sub": "ann"})), "ip:192.0.2.10"},
		{"metadata none", sub, req(), "ip:192.0.2.10"},
		{"metadata list", sub, withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": []any{"a"}})), "ip:192.0.2.10"},
		{"metadata, no source", sub, withMetadata(t, checkReq(nil, nil, nil), jwtNS, jwtPayload(map[string]any{})), authz.FallbackIdentity},
		{"metadata ignores headers", sub, checkReq(src, map[string]string{"sub": "ann", "payload.sub": "ann"}, nil), "ip:192.0.2.10"},
		{"metadata paths are distinct requestors", "metadata:" + jwtNS + ":payload.email",
			withMetadata(t, req(), jwtNS, jwtPayload(map[string]any{"sub": "ann", "email": "ann"})), "metadata:" + jwtNS + ":payload.email:ann"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := authz.ParseKey(tt.key, 0)
			if err != nil {
				t.Fatalf("ParseKey(%q): %v", tt.key, err)
			}
			if key.String() != tt.key {
				t.Errorf("String() = %q, want %q", key.String(), tt.key)
			}
			if got := key.Identity(tt.req); got != tt.want {
				t.Errorf("Identity = %.80q, want %.80q", got, tt.want)
			}
			if got := requestorOverGRPC(t, key, tt.req); got != tt.want {
				t.Errorf("Requestor over gRPC = %.80q, want %.80q", got, tt.want)
			}
		})
	}
}

func TestMetadataValue(t *testing.T) {
	t.Parallel()
	str := func(fields map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	num := func(v float64) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewNumberValue(v)}}
	}
	tests := []struct {
		name   string
		ns     *structpb.Struct // filter_metadata["f"]
		path   string
		want   string
		usable bool
	}{
		{"string", str(map[string]any{"v": "ann"}), "v", "ann", true},
		{"empty string", str(map[string]any{"v": ""}), "v", "", false},
		{"true", str(map[string]any{"v": true}), "v", "true", true},
		{"false", str(map[string]any{"v": false}), "v", "false", true},
		{"integer", num(42), "v", "42", true},
		{"negative integer", num(-7), "v", "-7", true},
		{"zero", num(0), "v", "0", true},
		{"negative zero is zero", num(math.Copysign(0, -1)), "v", "0", true},
		{"seven digits, no exponent", num(1234567), "v", "1234567", true},
		{"2^53", num(1 << 53), "v", "9007199254740992", true},
		{"-2^53", num(-(1 << 53)), "v", "-9007199254740992", true},
		{"beyond 2^53", num(1 << 60), "v", "1.152921504606847e+18", true},
		{"fraction", num(0.5), "v", "0.5", true},
		{"1e21", num(1e21), "v", "1e+21", true},
		{"NaN", num(math.NaN()), "v", "", false},
		{"+Inf", num(math.Inf(1)), "v", "", false},
		{"-Inf", num(math.Inf(-1)), "v", "", false},
		{"null", str(map[string]any{"v": nil}), "v", "", false},
		{"list", str(map[string]any{"v": []any{"a", "b"}}), "v", "", false},
		{"struct", str(map[string]any{"v": map[string]any{"a": "b"}}), "v", "", false},
		{"unset kind", &structpb.Struct{Fields: map[string]*structpb.Value{"v": {}}}, "v", "", false},
		{"nil value", &structpb.Struct{Fields: map[string]*structpb.Value{"v": nil}}, "v", "", false},
		{"nested", str(map[string]any{"a": map[string]any{"b": map[string]any{"c": "deep"}}}), "a.b.c", "deep", true},
		{"nested missing", str(map[string]any{"a": map[string]any{"b": "x"}}), "a.c", "", false},
		{"through a string", str(map[string]any{"a": "b"}), "a.b", "", false},
		{"through a list", str(map[string]any{"a": []any{map[string]any{"b": "x"}}}), "a.b", "", false},
		{"names are case-sensitive", str(map[string]any{"Sub": "ann"}), "sub", "", false},
		{"a dotted field name is not a path", str(map[string]any{"a.b": "x"}), "a.b", "", false},
		{"empty namespace", &structpb.Struct{}, "v", "", false},
		{"no namespace", nil, "v", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			attrs := &authv3.AttributeContext{MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"other": str(map[string]any{"v": "wrong namespace"}),
			}}}
			if tt.ns != nil {
				attrs.MetadataContext.FilterMetadata["f"] = tt.ns
			}
			f, err := policy.ParseMetadataField("f:" + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := authz.MetadataValue(attrs, f)
			if got != tt.want || ok != tt.usable {
				t.Errorf("MetadataValue(f:%s) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.usable)
			}
		})
	}
	for _, attrs := range []*authv3.AttributeContext{nil, {}, {MetadataContext: &corev3.Metadata{}}} {
		if got, ok := authz.MetadataValue(attrs, policy.MetadataField{Filter: "f", Path: "v"}); ok || got != "" {
			t.Errorf("MetadataValue of %v = %q, %v; want nothing", attrs, got, ok)
		}
	}
	if got, ok := authz.MetadataValue(&authv3.AttributeContext{MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"f": str(map[string]any{"": "x"}),
	}}}, policy.MetadataField{Filter: "f"}); ok {
		t.Errorf("MetadataValue of the zero path = %q, want nothing", got)
	}
}

// verifiedPolicy keys partners on their token's subject with a tier from
// its plan claim, internal callers on their mesh identity, and blocks one
// of each.
const verifiedPolicy = `
blocklist:
  identities:
  - "principal:spiffe://cluster.local/ns/shop/sa/revoked"
  - "metadata:envoy.filters.http.jwt_authn:payload.sub:mallory"
rules:
- name: partners
  match: {path_prefix: /partner/}
  key: metadata:envoy.filters.http.jwt_authn:payload.sub
  tiers:
    metadata: envoy.filters.http.jwt_authn:payload.plan
    default: free
    limits:
      free: {limit: 1, window: 1h}
      pro: {limit: 3, window: 1h}
- name: internal
  match: {path_prefix: /internal/}
  key: principal
  limit: 2
  window: 1m
`

// TestPolicyVerifiedIdentity applies verifiedPolicy through a real gRPC
// server with real strategies: tiers come from the claim and never from a
// header, requestors from the claim or the principal, and the blocklist
// sees both.
func TestPolicyVerifiedIdentity(t *testing.T) {
	t.Parallel()
	r := newRig(t, baseConfig(), "")
	r.setPolicy(t, verifiedPolicy)
	const client = "203.0.113.7"
	partner := func(claims map[string]any, headers map[string]string) *authv3.CheckRequest {
		return withMetadata(t, httpReq(client, "GET", "/partner/x", headers, nil), jwtNS, jwtPayload(claims))
	}
	internal := func(principal string) *authv3.CheckRequest {
		return withPrincipal(httpReq(client, "GET", "/internal/x", nil, nil), principal)
	}

	t.Run("tier from the claim", func(t *testing.T) {
		for i := 2; i >= 0; i-- {
			expect(t, "pro", r.check(t, partner(map[string]any{"sub": "ann", "plan": "pro"}, nil)), okResp(okHeaders(3, i, reset(i, 3600), 3600, "partners")...))
		}
		expect(t, "pro, 4th", r.check(t, partner(map[string]any{"sub": "ann", "plan": "pro"}, nil)), deniedResp(3, 3600, 3600, "partners"))
		// Another subject has its own quota; without the claim, the default.
		expect(t, "free", r.check(t, partner(map[string]any{"sub": "bob"}, nil)), okResp(okHeaders(1, 0, 3600, 3600, "partners")...))
		expect(t, "free, 2nd", r.check(t, partner(map[string]any{"sub": "bob"}, nil)), deniedResp(1, 3600, 3600, "partners"))
	})
	t.Run("a header cannot choose the tier or the requestor", func(t *testing.T) {
		h := map[string]string{"x-plan": "pro", "plan": "pro", "payload.plan": "pro", "sub": "fresh"}
		expect(t, "free claims, pro headers", r.check(t, partner(map[string]any{"sub": "bob", "plan": "free"}, h)), deniedResp(1, 3600, 3600, "partners"))
	})
	t.Run("principal", func(t *testing.T) {
		const web = "spiffe://cluster.local/ns/shop/sa/web"
		expect(t, "web 1st", r.check(t, internal(web)), okResp(okHeaders(2, 1, 0, 60, "internal")...))
		expect(t, "web 2nd", r.check(t, internal(web)), okResp(okHeaders(2, 0, 60, 60, "internal")...))
		expect(t, "web 3rd", r.check(t, internal(web)), deniedResp(2, 60, 60, "internal"))
		// The same principal from another address: the same requestor.
		expect(t, "web elsewhere", r.check(t, withPrincipal(httpReq("198.51.100.9", "GET", "/internal/x", nil, nil), web)), deniedResp(2, 60, 60, "internal"))
		expect(t, "api 1st", r.check(t, internal("spiffe://cluster.local/ns/shop/sa/api")), okResp(okHeaders(2, 1, 0, 60, "internal")...))
	})
	t.Run("blocklist", func(t *testing.T) {
		expect(t, "principal", r.check(t, internal("spiffe://cluster.local/ns/shop/sa/revoked")), blockedResp())
		expect(t, "claim", r.check(t, partner(map[string]any{"sub": "mallory", "plan": "pro"}, nil)), blockedResp())
	})
}

// BenchmarkVerifiedIdentity is the key building of the principal and
// metadata forms.
func BenchmarkVerifiedIdentity(b *testing.B) {
	for _, tc := range []struct {
		key string
		req *authv3.CheckRequest
	}{
		{"principal", withPrincipal(fromIP(nil), "spiffe://cluster.local/ns/shop/sa/web")},
		{"metadata:" + jwtNS + ":payload.sub", withMetadata(b, fromIP(nil), jwtNS, jwtPayload(map[string]any{"sub": "ann", "plan": "pro", "iss": "https://issuer.example"}))},
	} {
		b.Run(tc.key, func(b *testing.B) {
			key, err := authz.ParseKey(tc.key, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if key.Identity(tc.req) == authz.FallbackIdentity {
						b.Fatal("no identity")
					}
				}
			})
		})
	}
}
