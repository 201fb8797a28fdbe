package main

import (
	"errors"
	"flag"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
)

// FuzzParseConfig feeds ParseConfig arbitrary command lines (arguments
// separated by NUL) and environments (NAME=value entries separated by NUL).
// It must never panic; an error must be one non-empty line and come with a
// zero Config; and a Config it accepts must be one floodgate can run with.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []struct{ args, env string }{
		{"", ""},
		{"--limit\x005\x00--window\x0090s", ""},
		{"--memcache-servers\x00a:1,[::1]:11211\x00--memcache-timeout=25ms", "FLOODGATE_LIMIT=0"},
		{"--key\x00xff\x00--xff-trusted-hops\x002", "FLOODGATE_KEY=header:x-api-key"},
		{"--fail-mode=local\x00--tls-cert\x00c.pem\x00--tls-key\x00k.pem\x00--tls-client-ca\x00ca.pem", ""},
		{"--tls-client-ca\x00ca.pem", "FLOODGATE_TLS_CERT=c.pem"},
		{"-h", ""},
		{"--version=false\x00--headers", "FLOODGATE_HEADERS=false"},
		{"--bogus\x00serve", "FLOODGATE_WINDOW=500ms"},
		{"--log-level\x00WARN\x00--log-format\x00json", "FLOODGATE_SHUTDOWN_TIMEOUT=-1s\x00FLOODGATE_MEMCACHE_MAX_CONNS=9"},
	} {
		f.Add(seed.args, seed.env)
	}
	f.Fuzz(func(t *testing.T, args, env string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\x00")
		}
		vars := make(map[string]string)
		for _, kv := range strings.Split(env, "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				vars[k] = v
			}
		}
		c, err := ParseConfig(argv, func(k string) string { return vars[k] })
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if err != nil {
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error %q: want one non-empty line", msg)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Fatalf("error %v with a non-zero Config %+v", err, c)
			}
			return
		}
		if c.Version {
			if !reflect.DeepEqual(c, Config{Version: true}) {
				t.Fatalf("--version with configuration %+v", c)
			}
			return
		}
		for _, addr := range []string{c.GRPCAddr, c.AdminAddr} {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				t.Fatalf("accepted address %q: %v", addr, err)
			}
		}
		if err := (limiter.Request{Limit: c.Limit, Window: c.Window}).Validate(); err != nil {
			t.Fatalf("accepted limit %d, window %v: %v", c.Limit, c.Window, err)
		}
		if c.MemcacheTimeout <= 0 || c.ShutdownTimeout <= 0 || c.MemcacheMaxConns < 1 || c.XFFTrustedHops < 0 {
			t.Fatalf("accepted memcache timeout %v, shutdown timeout %v, max conns %d, hops %d",
				c.MemcacheTimeout, c.ShutdownTimeout, c.MemcacheMaxConns, c.XFFTrustedHops)
		}
		if c.LogFormat != "text" && c.LogFormat != "json" {
			t.Fatalf("accepted log format %q", c.LogFormat)
		}
		if m := c.FailModeName(); m != "local" && m != "open" && m != "closed" {
			t.Fatalf("fail mode %q", m)
		}
		if c.LocalFallback && c.FailMode != authz.FailOpen {
			t.Fatalf("local fallback with fail mode %v", c.FailMode)
		}
		if (c.TLSCert == "") != (c.TLSKey == "") || (c.TLSClientCA != "" && c.TLSCert == "") {
			t.Fatalf("accepted TLS files cert %q, key %q, client CA %q", c.TLSCert, c.TLSKey, c.TLSClientCA)
		}
		if k, err := authz.ParseKey(c.Key.String(), c.XFFTrustedHops); err != nil || k != c.Key {
			t.Fatalf("key %v does not reparse: %v, %v", c.Key, k, err)
		}
		if checkDeadline(c) < time.Second {
			t.Fatalf("deadline cap %v below a second", checkDeadline(c))
		}
	})
}
