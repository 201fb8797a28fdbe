package envoy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"sigs.k8s.io/yaml"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// shippedConfigs are the Envoy bootstraps of envoy/ that ask floodgate.
var shippedConfigs = []string{"front-proxy.yaml", "sidecar.yaml", "egress.yaml", "ratelimit-filter.yaml", "mtls-principal.yaml", "jwt.yaml"}

// TestEveryShippedConfigIsListed fails when an Envoy bootstrap of envoy/ is
// missing from shippedConfigs, and so from TestShippedFloodgateClusters.
func TestEveryShippedConfigIsListed(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\nstatic_resources:") && !slices.Contains(shippedConfigs, f) {
			t.Errorf("envoy/%s is an Envoy bootstrap missing from shippedConfigs", f)
		}
	}
}

// TestShippedFloodgateClusters checks what every shipped config must have,
// read from the file: comments naming the Envoy versions it was validated
// with; a floodgate cluster (the one its ext_authz or ratelimit filter
// names) speaking HTTP/2, with gRPC health checking and circuit breakers
// sized on purpose (Envoy's defaults of 1,024 turn a burst into checks
// failed open); and an ext_authz filter that keeps Authorization and Cookie
// from floodgate.
func TestShippedFloodgateClusters(t *testing.T) {
	validated := regexp.MustCompile(`(?i)validated with envoy 1\.\d+`)
	for _, name := range shippedConfigs {
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if !validated.Match(src) {
				t.Errorf("no comment says which Envoy versions the config was validated with (\"Validated with Envoy 1.N\")")
			}
			var boot map[string]any
			if err := yaml.Unmarshal(src, &boot); err != nil {
				t.Fatal(err)
			}
			clusters := floodgateClusters(t, boot)
			if len(clusters) == 0 {
				t.Fatal("no ext_authz or ratelimit filter names a cluster")
			}
			for _, c := range clusters {
				checkFloodgateCluster(t, c)
			}
			for _, f := range filtersNamed(boot, "envoy.filters.http.ext_authz") {
				checkHeadersToFloodgate(t, f)
			}
		})
	}
}

// walk calls fn on every map in v, depth first.
func walk(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v)
		for _, e := range v {
			walk(e, fn)
		}
	case []any:
		for _, e := range v {
			walk(e, fn)
		}
	}
}

// filtersNamed returns the typed_config of every filter called name.
func filtersNamed(boot map[string]any, name string) []map[string]any {
	var out []map[string]any
	walk(boot, func(m map[string]any) {
		if m["name"] == name {
			if tc, ok := m["typed_config"].(map[string]any); ok {
				out = append(out, tc)
			}
		}
	})
	return out
}

// floodgateClusters returns the clusters that the ext_authz and ratelimit
// filters of boot call.
func floodgateClusters(t *testing.T, boot map[string]any) []map[string]any {
	t.Helper()
	names := make(map[string]bool)
	for _, f := range append(filtersNamed(boot, "envoy.filters.http.ext_authz"), filtersNamed(boot, "envoy.filters.http.ratelimit")...) {
		walk(f, func(m map[string]any) {
			if n, ok := m["cluster_name"].(string); ok {
				names[n] = true
			}
		})
	}
	var out []map[string]any
	sr, _ := boot["static_resources"].(map[string]any)
	clusters, _ := sr["clusters"].([]any)
	for _, c := range clusters {
		if c, ok := c.(map[string]any); ok && names[fmt.Sprint(c["name"])] {
			out = append(out, c)
			delete(names, fmt.Sprint(c["name"]))
		}
	}
	for n := range names {
		t.Errorf("a filter names cluster %q, which the config does not define", n)
	}
	return out
}

// checkFloodgateCluster checks one floodgate cluster.
func checkFloodgateCluster(t *testing.T, c map[string]any) {
	t.Helper()
	name := c["name"]
	h2 := false
	walk(c["typed_extension_protocol_options"], func(m map[string]any) { _, ok := m["http2_protocol_options"]; h2 = h2 || ok })
	if !h2 {
		t.Errorf("cluster %s: no explicit http2_protocol_options: gRPC needs HTTP/2", name)
	}
	grpcHC := false
	walk(c["health_checks"], func(m map[string]any) { _, ok := m["grpc_health_check"]; grpcHC = grpcHC || ok })
	if !grpcHC {
		t.Errorf("cluster %s: no gRPC health check: a floodgate that stops answering stays in the rotation", name)
	}
	cb, _ := c["circuit_breakers"].(map[string]any)
	th, _ := cb["thresholds"].([]any)
	if len(th) == 0 {
		t.Fatalf("cluster %s: no circuit_breakers thresholds: Envoy's defaults (1,024) fail a burst open", name)
	}
	first, _ := th[0].(map[string]any)
	for _, k := range []string{"max_connections", "max_requests", "max_pending_requests"} {
		if _, ok := first[k]; !ok {
			t.Errorf("cluster %s: circuit breaker %s not set: Envoy's default of 1,024 applies", name, k)
		}
	}
}

// checkHeadersToFloodgate checks that an ext_authz filter keeps
// Authorization and Cookie from floodgate: an allowed_headers list without
// them, or a disallowed_headers list with both.
func checkHeadersToFloodgate(t *testing.T, f map[string]any) {
	t.Helper()
	exact := func(key string) []string {
		var out []string
		lm, _ := f[key].(map[string]any)
		pats, _ := lm["patterns"].([]any)
		for _, p := range pats {
			if p, ok := p.(map[string]any); ok {
				out = append(out, strings.ToLower(fmt.Sprint(p["exact"])))
			}
		}
		return out
	}
	allowed, disallowed := exact("allowed_headers"), exact("disallowed_headers")
	for _, h := range []string{"authorization", "cookie"} {
		switch {
		case len(allowed) > 0 && slices.Contains(allowed, h) && !slices.Contains(disallowed, h):
			t.Errorf("ext_authz allowed_headers sends %s to floodgate", h)
		case len(allowed) == 0 && !slices.Contains(disallowed, h):
			t.Errorf("ext_authz sends %s to floodgate (no allowed_headers, and disallowed_headers lacks it)", h)
		}
	}
}

// TestFrontProxyLoginSpellings: once a client has used up its 5 logins,
// every spelling of /login that an application may take for it is denied
// in the login scope, while /loginfoo is an ordinary route.
func TestFrontProxyLoginSpellings(t *testing.T) {
	setup(t)
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--limit", "100", "--window", "1h"))

	e.c.useQuota(t, e.base+"/login", nil, "login", 5, 60)
	for _, path := range []string{
		"/LOGIN", "/Login", "/%4C%4F%47%49%4E", "/%6c%6f%67%69%6e",
		"/login;x", "/login;jsessionid=0123", "/login%3Bx", "/login%3bx",
		"/login%20", "/login.json", "/LOGIN.JSON", "/login/", "/Login/Reset",
		"/login?next=/", "//login", "/x/../login", "/login%2F",
	} {
		t.Run(path, func(t *testing.T) {
			checkDenied(t, e.get(t, path, nil), "login", 5, 60)
		})
	}
	for _, path := range []string{"/loginfoo", "/logi", "/api/login"} {
		r := e.get(t, path, nil)
		if r.status != http.StatusOK {
			t.Errorf("%s: got %d %q, want 200 outside the login scope", path, r.status, r.body)
			continue
		}
		checkHeader(t, r, "RateLimit-Policy", `"default";q=100;w=3600`)
	}
	e.app.checkCount(t, 5+3, "denied logins must not reach it")
}

// TestFrontProxyHeadersToFloodgate shows which request headers reach
// floodgate through front-proxy.yaml's allowed_headers: the route is keyed
// on a header (floodgate.key "header:<name>"), two requests with one value
// use up a limit of 2, and a third with another value gets a quota of its
// own only if floodgate saw the header; otherwise floodgate keys on the
// client's address and denies it. Authorization and Cookie do not reach
// floodgate, nor :authority; each does once added to allowed_headers.
func TestFrontProxyHeadersToFloodgate(t *testing.T) {
	setup(t)
	cases := []struct {
		header string
		allow  bool // added to allowed_headers
	}{
		{"authorization", false},
		{"cookie", false},
		{":authority", false},
		{"authorization", true},
		{"cookie", true},
		{":authority", true},
		{"x-forwarded-for", false}, // in allowed_headers as shipped
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/allowed=%v", tc.header, tc.allow), func(t *testing.T) {
			t.Parallel()
			rewrites := []string{"floodgate.key: xff\n", fmt.Sprintf("floodgate.key: \"header:%s\"\n", tc.header)}
			if tc.allow {
				rewrites = append(rewrites, "                - exact: x-forwarded-for\n", "                - exact: x-forwarded-for\n                - exact: \""+tc.header+"\"\n")
			}
			e := startEdge(t, rewriteConfig(t, "front-proxy.yaml", rewrites...), testutil.StartFloodgate(t, "--limit", "2"))
			send := func(value string) response {
				t.Helper()
				req := newRequest(t, http.MethodGet, e.base+"/", nil)
				switch tc.header {
				case ":authority":
					req.Host = value
				case "x-forwarded-for":
					req.Header.Set("X-Forwarded-For", value)
				default:
					req.Header.Set(tc.header, value)
				}
				return e.c.send(t, req)
			}
			for i := 1; i <= 2; i++ {
				if r := send("alice.example"); r.status != http.StatusOK {
					t.Fatalf("request %d: got %d %q, want 200", i, r.status, r.body)
				}
			}
			sees := tc.allow || tc.header == "x-forwarded-for"
			r := send("bob.example")
			switch {
			case sees && r.status != http.StatusOK:
				t.Errorf("another %s: got %d, want 200: floodgate should see the header and key on it", tc.header, r.status)
			case !sees && r.status != http.StatusTooManyRequests:
				t.Errorf("another %s: got %d, want 429: floodgate saw the header, which allowed_headers should keep from it", tc.header, r.status)
			}
		})
	}
}

// TestFrontProxyEdgeLimits checks the edge settings of front-proxy.yaml
// as a client meets them: a header with an underscore is refused before
// the app or floodgate; an HTTP/2 client is offered 100 streams, a 64 KiB
// stream window and a 1 MiB connection window; a client that never
// finishes its headers is cut off (request_headers_timeout, 10s); and the
// overload manager watches the heap.
func TestFrontProxyEdgeLimits(t *testing.T) {
	setup(t)
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--limit", "100"))
	envoy := e.envoy

	t.Run("underscores", func(t *testing.T) {
		r := e.get(t, "/", http.Header{"X-Api_Key": {"k"}})
		if r.status != http.StatusBadRequest {
			t.Errorf("X-Api_Key: got %d %q, want 400", r.status, r.body)
		}
		e.app.checkCount(t, 0, "")
	})

	t.Run("http2 settings", func(t *testing.T) {
		settings, connWindow := h2Settings(t, fmt.Sprintf("127.0.0.1:%d", envoy.Port(edgePort)))
		if got := settings[http2.SettingMaxConcurrentStreams]; got != 100 {
			t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 100", got)
		}
		if got := settings[http2.SettingInitialWindowSize]; got != 65536 {
			t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d, want 65536", got)
		}
		if connWindow != 1048576 {
			t.Errorf("connection window %d, want 1048576", connWindow)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", envoy.Port(edgePort)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Headers that never end; Envoy must give up on them by itself.
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n"); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("Envoy kept a connection with unfinished headers open for a minute")
		case err == nil && resp.StatusCode != http.StatusRequestTimeout:
			t.Errorf("unfinished headers: got %d, want 408 or a closed connection", resp.StatusCode)
		}
	})

	t.Run("overload manager", func(t *testing.T) {
		for _, g := range []string{
			"overload.envoy.resource_monitors.fixed_heap.pressure",
			"overload.envoy.overload_actions.stop_accepting_requests.active",
			"overload.envoy.overload_actions.shrink_heap.active",
		} {
			if !statExists(t, envoy, g) {
				t.Errorf("Envoy has no stat %s: the overload manager does not watch the heap", g)
			}
		}
	})
}

// h2Settings opens an HTTP/2 (prior knowledge) connection to addr and
// returns the server's SETTINGS and the connection window it grants.
func h2Settings(t *testing.T, addr string) (map[http2.SettingID]uint32, int64) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	settings := make(map[http2.SettingID]uint32)
	window := int64(65535) // RFC 9113's initial connection window
	gotSettings, gotUpdate := false, false
	for !gotSettings || !gotUpdate {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading Envoy's HTTP/2 frames: %v (settings %v)", err, settings)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			gotSettings = true
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				window += int64(f.Increment)
				gotUpdate = true
			}
		}
	}
	return settings, window
}

// statExists reports whether Envoy's admin /stats has the stat name.
func statExists(t *testing.T, envoy *testutil.Envoy, name string) bool {
	t.Helper()
	resp, err := http.Get(envoy.AdminURL() + "/stats?format=json&filter=" + url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Stats []struct {
			Name string `json:"name"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(out.Stats, func(s struct {
		Name string `json:"name"`
	}) bool {
		return s.Name == name
	})
}

// TestForgedDegradedHeader: with allowed_headers in place, an
// X-Floodgate-Degraded that the client sends itself still reaches floodgate,
// which removes it, so the app never sees a forged one (the header marks the
// requests floodgate allowed without memcached).
func TestForgedDegradedHeader(t *testing.T) {
	setup(t)
	for _, config := range []string{"front-proxy.yaml", "sidecar.yaml"} {
		t.Run(config, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, config, testutil.StartFloodgate(t, "--limit", "100"))
			r := e.get(t, "/", http.Header{"X-Floodgate-Degraded": {"memcached-unavailable"}})
			if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "100" {
				t.Fatalf("got %d, X-RateLimit-Limit %q, want 200 checked by floodgate", r.status, r.header.Get("X-RateLimit-Limit"))
			}
			if got := e.app.lastHeader("X-Floodgate-Degraded"); got != "" {
				t.Errorf("the app got the client's X-Floodgate-Degraded %q: floodgate must see the header to remove it", got)
			}
		})
	}
}
