package envoy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// Ports written in mtls-principal.yaml (jwt.yaml listens on edgePort).
const mtlsPort = 10443

// tlsDir is where mtls-principal.yaml reads its certificates.
const tlsDir = "/etc/envoy/tls/"

// SPIFFE IDs of the test's clients, in the trust domain mtls-principal.yaml
// accepts.
const (
	webID = "spiffe://example.org/ns/shop/sa/web"
	apiID = "spiffe://example.org/ns/shop/sa/api"
)

// TestIdentityConfigsValidate runs `envoy --mode validate` on jwt.yaml as
// shipped, and on mtls-principal.yaml with its certificate files in place.
func TestIdentityConfigsValidate(t *testing.T) {
	t.Parallel()
	if err := testutil.ValidateEnvoyConfig(t, "jwt.yaml"); err != nil {
		t.Fatal(err)
	}
	cfg, _ := mtlsConfig(t)
	if err := testutil.ValidateEnvoyConfig(t, cfg); err != nil {
		t.Fatal(err)
	}
}

// TestMTLSPrincipal runs mtls-principal.yaml: Envoy terminates mutual TLS
// with certificates the test makes, and floodgate keys on the client
// certificate's SPIFFE ID (attributes.source.principal). Two identities have
// their own quotas, one identity shares its quota across source addresses,
// headers claiming an identity count for nothing, and a client without an
// acceptable certificate never gets a request in.
func TestMTLSPrincipal(t *testing.T) {
	setup(t)
	cfg, ca := mtlsConfig(t)
	fg := testutil.StartFloodgate(t, "--limit", "3")
	app := newUpstream(t)
	envoy := testutil.StartEnvoy(t, cfg, map[int]int{floodgatePort: fg.GRPCPort(), appPort: app.port()})
	target := fmt.Sprintf("https://127.0.0.1:%d/", envoy.Port(mtlsPort))

	webCert, webKey := ca.IssueClient(t, "web", []string{webID}, "web.shop.svc")
	apiCert, apiKey := ca.IssueClient(t, "api", []string{apiID})
	webA := mtlsClient(t, ca, webCert, webKey, "127.0.0.1")
	webB := mtlsClient(t, ca, webCert, webKey, "127.0.0.2") // the same identity, another address
	api := mtlsClient(t, ca, apiCert, apiKey, "127.0.0.1")  // another identity, web's first address

	for i, c := range []*client{webA, webA, webB} {
		r := c.get(t, target, nil)
		if r.status != http.StatusOK {
			t.Fatalf("web request %d: got %d %q, want 200", i+1, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "default", 3, 3600, 2-i)
	}
	checkDenied(t, webB.get(t, target, nil), "default", 3, 3600)
	checkDenied(t, webA.get(t, target, nil), "default", 3, 3600)

	// The api identity has its own quota from web's address, whatever
	// identity its headers claim.
	claims := http.Header{
		"X-Forwarded-Client-Cert": {"By=spiffe://example.org/ns/shop/sa/envoy;URI=spiffe://example.org/ns/shop/sa/fresh"},
		"X-Spiffe-Id":             {"spiffe://example.org/ns/shop/sa/fresh"},
	}
	api.useQuota(t, target, claims, "default", 3, 3600)
	// The app learns the verified identity, not the client's claim.
	if got := app.lastHeader("X-Forwarded-Client-Cert"); !strings.Contains(got, "URI="+apiID) || strings.Contains(got, "fresh") {
		t.Errorf("the app got x-forwarded-client-cert %q, want Envoy's, with URI=%s only", got, apiID)
	}

	refused := map[string]*client{"no client certificate": mtlsClient(t, ca, nil, nil, "127.0.0.1")}
	otherCert, otherKey := ca.IssueClient(t, "other", []string{"spiffe://other.org/ns/shop/sa/web"})
	refused["another trust domain, same CA"] = mtlsClient(t, ca, otherCert, otherKey, "127.0.0.1")
	dnsCert, dnsKey := ca.IssueClient(t, "dns-only", nil, "web.shop.svc")
	refused["no URI SAN"] = mtlsClient(t, ca, dnsCert, dnsKey, "127.0.0.1")
	forger := testutil.NewCA(t, "forger CA")
	forgedCert, forgedKey := forger.IssueClient(t, "web", []string{webID})
	refused["web's SPIFFE ID from another CA"] = mtlsClient(t, ca, forgedCert, forgedKey, "127.0.0.2")
	for name, c := range refused {
		if r, err := c.do(newRequest(t, http.MethodGet, target, nil)); err == nil {
			t.Errorf("%s: got %d %q, want the TLS handshake refused", name, r.status, r.body)
		}
	}
	app.checkCount(t, 6, "")
	// Every checked request was decided by floodgate; the refused ones were
	// never checked.
	ok, denied := stat(t, envoy, "http.mtls.ext_authz.ok"), stat(t, envoy, "http.mtls.ext_authz.denied")
	if ok != 6 || denied != 3 {
		t.Errorf("ext_authz ok %d, denied %d; want 6 and 3", ok, denied)
	}
}

// mtlsConfig makes a CA, Envoy's server certificate and the client CA file,
// and returns a copy of mtls-principal.yaml that reads them, with the CA.
func mtlsConfig(t *testing.T) (string, *testutil.CA) {
	t.Helper()
	dir := t.TempDir()
	ca := testutil.NewCA(t, "clients CA")
	srvCert, srvKey := ca.Issue(t, "envoy", true)
	testutil.WriteFile(t, dir, "server.crt", srvCert)
	testutil.WriteFile(t, dir, "server.key", srvKey)
	testutil.WriteFile(t, dir, "client-ca.crt", ca.PEM)
	return rewriteAll(t, "mtls-principal.yaml", tlsDir, dir+"/"), ca
}

// mtlsClient returns a client that trusts ca for Envoy's certificate,
// presents the client certificate certPEM (none when nil) and connects from
// the loopback address localIP.
func mtlsClient(t *testing.T, ca *testutil.CA, certPEM, keyPEM []byte, localIP string) *client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   conf,
		DialContext:       d.DialContext,
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// TestJWTClaims runs jwt.yaml with floodgate's jwt-policy.yaml (limits
// lowered to 2 and 4): Envoy's jwt_authn verifies tokens signed by a key the
// test makes (its JWKS inline, as the file ships), and floodgate keys on the
// verified subject and takes the tier from the verified plan claim. Every
// forged, altered or missing token is refused by jwt_authn (401) before the
// check, and no header chooses the tier.
func TestJWTClaims(t *testing.T) {
	setup(t)
	iss := newIssuer(t, "test-key")
	fg := testutil.StartFloodgate(t, "--limit", "100", "--policy", rewriteAll(t, "jwt-policy.yaml",
		"free: {limit: 100,", "free: {limit: 2,", "pro: {limit: 1000,", "pro: {limit: 4,"))
	e := startEdge(t, jwtConfig(t, iss.jwks()), fg)
	c, target := e.c, e.base+"/orders"
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

	ann := bearer(iss.token(t, claims("ann", nil)))                           // no plan: free
	bob := bearer(iss.token(t, claims("bob", map[string]any{"plan": "pro"}))) // pro
	c.useQuota(t, target, ann, "api", 2, 3600)
	// Headers choose nothing: not the tier, not the requestor.
	spoof := bearer(iss.token(t, claims("ann", nil)))
	for _, h := range []string{"X-Plan", "Plan", "Payload.plan", "X-Jwt-Payload", "Sub"} {
		spoof.Set(h, "pro")
	}
	checkDenied(t, c.get(t, target, spoof), "api", 2, 3600)
	// The pro tier comes from the plan claim.
	c.useQuota(t, target, bob, "api", 4, 3600)
	// An unknown plan is the default tier, counted for its own subject.
	r := c.get(t, target, bearer(iss.token(t, claims("carol", map[string]any{"plan": "platinum"}))))
	if r.status != http.StatusOK {
		t.Fatalf("carol: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "api", 2, 3600, 1)
	if got := e.app.lastHeader("Authorization"); got != "" {
		t.Errorf("the app got Authorization %q, want none (forward: false)", got)
	}

	checkForgedTokens(t, c, target, iss, claims("dave", map[string]any{"plan": "pro"}))
	if r := e.get(t, "/healthz", nil); r.status != http.StatusOK {
		t.Errorf("/healthz without a token: got %d %q, want 200", r.status, r.body)
	}
	e.app.checkCount(t, 2+4+1+1, "")
	// floodgate decided exactly the requests with valid tokens.
	ok, denied := stat(t, e.envoy, "http.jwt.ext_authz.ok"), stat(t, e.envoy, "http.jwt.ext_authz.denied")
	if ok != 7 || denied != 3 {
		t.Errorf("ext_authz ok %d, denied %d; want 7 and 3: forged tokens must never reach floodgate", ok, denied)
	}
}

// checkForgedTokens sends tokens for c (a fresh subject) that an attacker
// can make without the issuer's key, and genuine ones that are expired or
// meant for another issuer or audience: jwt_authn must refuse each (401,
// or 403 for another audience).
func checkForgedTokens(t *testing.T, cl *client, target string, iss *issuer, c map[string]any) {
	t.Helper()
	valid := iss.token(t, c)
	parts := strings.Split(valid, ".")
	other := newIssuer(t, iss.kid) // the same kid, another key
	b64 := base64.RawURLEncoding
	payload := func(m map[string]any) string {
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b64.EncodeToString(j)
	}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for key, val := range c {
			m[key] = val
		}
		m[k] = v
		return m
	}
	tokens := []struct {
		name, token string
		status      int // jwt_authn's: 403 for a verified token of another audience
	}{
		{"unsigned (alg none)", b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload(c) + ".", http.StatusUnauthorized},
		{"signed by another key with the issuer's kid", other.token(t, c), http.StatusUnauthorized},
		{"payload altered, signature kept", parts[0] + "." + payload(with("sub", "eve")) + "." + parts[2], http.StatusUnauthorized},
		{"plan raised, signature kept", parts[0] + "." + payload(with("plan", "enterprise")) + "." + parts[2], http.StatusUnauthorized},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(iss.token(t, with("sub", "x")), ".")[2], http.StatusUnauthorized},
		{"expired", iss.token(t, with("exp", time.Now().Add(-time.Hour).Unix())), http.StatusUnauthorized},
		{"another issuer", iss.token(t, with("iss", "https://evil.example.com")), http.StatusUnauthorized},
		{"another audience", iss.token(t, with("aud", "other.example.com")), http.StatusForbidden},
		{"not a JWT", "not-a-token", http.StatusUnauthorized},
	}
	for _, tt := range tokens {
		r := cl.get(t, target, http.Header{"Authorization": {"Bearer " + tt.token}})
		if r.status != tt.status {
			t.Errorf("%s: got %d %q, want %d from jwt_authn", tt.name, r.status, r.body, tt.status)
		}
	}
	if r := cl.get(t, target, nil); r.status != http.StatusUnauthorized {
		t.Errorf("no token: got %d %q, want 401", r.status, r.body)
	}
	// A claim in a header is no token.
	if r := cl.get(t, target, http.Header{"X-Jwt-Payload": {payload(c)}, "Sub": {"dave"}}); r.status != http.StatusUnauthorized {
		t.Errorf("claims in headers: got %d %q, want 401", r.status, r.body)
	}
}

// jwtConfig returns a copy of jwt.yaml that trusts the keys of jwks
// instead of its example key.
func jwtConfig(t *testing.T, jwks string) string {
	t.Helper()
	re := regexp.MustCompile(`inline_string: '[^']*'`)
	return editCopy(t, "jwt.yaml", func(src string) string {
		if n := len(re.FindAllStringIndex(src, -1)); n != 1 {
			t.Fatalf("jwt.yaml has %d inline_string JWKS, want 1; update the test", n)
		}
		return re.ReplaceAllLiteralString(src, "inline_string: '"+jwks+"'")
	})
}

// claims are the claims of a token jwt.yaml accepts, for subject sub, with
// extra claims added.
func claims(sub string, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": "https://issuer.example.com",
		"aud": "api.example.com",
		"sub": sub,
		"iat": time.Now().Unix(),
		"exp": time.Now().Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// issuer signs ES256 JWTs with a P-256 key it made.
type issuer struct {
	key *ecdsa.PrivateKey
	kid string
}

func newIssuer(t *testing.T, kid string) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{key: key, kid: kid}
}

// jwks returns the issuer's public key as a JSON Web Key Set.
func (iss *issuer) jwks() string {
	b64 := base64.RawURLEncoding
	pub, err := iss.key.PublicKey.Bytes() // uncompressed: 0x04, then X and Y, 32 bytes each
	if err != nil || len(pub) != 65 {
		panic(fmt.Sprintf("P-256 public key: %d bytes, %v", len(pub), err))
	}
	x, y := pub[1:33], pub[33:]
	return fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":%q,"x":%q,"y":%q}]}`,
		iss.kid, b64.EncodeToString(x), b64.EncodeToString(y))
}

// token returns a compact JWS of claims (RFC 7515, 7518 ES256: the
// signature is r || s, 32 bytes each).
func (iss *issuer) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	b64 := base64.RawURLEncoding
	header := b64.EncodeToString([]byte(fmt.Sprintf(`{"alg":"ES256","typ":"JWT","kid":%q}`, iss.kid)))
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := header + "." + b64.EncodeToString(body)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, iss.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return input + "." + b64.EncodeToString(sig)
}
