package main

import (
	"errors"
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/authz"
)

// envOf returns a getenv that reads m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func mustKey(t *testing.T, s string, hops int) authz.KeySpec {
	t.Helper()
	k, err := authz.ParseKey(s, hops)
	if err != nil {
		t.Fatalf("ParseKey(%q, %d): %v", s, hops, err)
	}
	return k
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	defaults := Config{
		GRPCAddr:         ":9001",
		GRPCMaxConns:     4096,
		GRPCMaxRecvBytes: 1 << 20,
		GRPCMaxCalls:     1024,
		AdminAddr:        ":9090",
		ConsoleAddr:      "127.0.0.1:9091",
		MemcacheTimeout:  100 * time.Millisecond,
		MemcacheMaxConns: 2,
		Limit:            100,
		Window:           time.Hour,
		Key:              mustKey(t, "source", 0),
		FailMode:         authz.FailOpen,
		LocalFallback:    true,
		Strategy:         "sliding",
		Headers:          true,
		LogFormat:        "text",
		LogLevel:         slog.LevelInfo,
		ShutdownTimeout:  15 * time.Second,
		MaxClockSkew:     time.Second,
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *Config) // applied to a copy of defaults
	}{
		{name: "defaults"},
		{name: "max-clock-skew", args: []string{"--max-clock-skew", "250ms"},
			want: func(c *Config) { c.MaxClockSkew = 250 * time.Millisecond }},
		{name: "max-clock-skew none", env: map[string]string{"FLOODGATE_MAX_CLOCK_SKEW": "0s"},
			want: func(c *Config) { c.MaxClockSkew = -1 }},
		{name: "grpc-addr", args: []string{"--grpc-addr", "127.0.0.1:7000"},
			want: func(c *Config) { c.GRPCAddr = "127.0.0.1:7000" }},
		{name: "grpc-addr single dash and equals", args: []string{"-grpc-addr=[::1]:7000"},
			want: func(c *Config) { c.GRPCAddr = "[::1]:7000" }},
		{name: "admin-addr", args: []string{"--admin-addr", ":0"},
			want: func(c *Config) { c.AdminAddr = ":0" }},
		{name: "memcache-servers", args: []string{"--memcache-servers", "10.0.0.1:11211, mc-2:11211"},
			want: func(c *Config) { c.MemcacheServers = []string{"10.0.0.1:11211", "mc-2:11211"} }},
		{name: "memcache-servers empty means memory", args: []string{"--memcache-servers", ""},
			want: func(c *Config) {}},
		{name: "memcache-timeout", args: []string{"--memcache-timeout", "25ms"},
			want: func(c *Config) { c.MemcacheTimeout = 25 * time.Millisecond }},
		{name: "limit", args: []string{"--limit", "1"},
			want: func(c *Config) { c.Limit = 1 }},
		{name: "window", args: []string{"--window", "90s"},
			want: func(c *Config) { c.Window = 90 * time.Second }},
		{name: "window at the maximum", args: []string{"--window", "24h"},
			want: func(c *Config) { c.Window = 24 * time.Hour }},
		{name: "key header", args: []string{"--key", "header:X-Api-Key"},
			want: func(c *Config) { c.Key = mustKey(t, "header:x-api-key", 0) }},
		{name: "key xff with hops", args: []string{"--key", "xff", "--xff-trusted-hops", "2"},
			want: func(c *Config) { c.Key, c.XFFTrustedHops = mustKey(t, "xff", 2), 2 }},
		{name: "hops before key order does not matter", args: []string{"--xff-trusted-hops", "1", "--key", "xff"},
			want: func(c *Config) { c.Key, c.XFFTrustedHops = mustKey(t, "xff", 1), 1 }},
		{name: "fail-mode closed", args: []string{"--fail-mode", "closed"},
			want: func(c *Config) { c.FailMode, c.LocalFallback = authz.FailClosed, false }},
		{name: "fail-mode open", args: []string{"--fail-mode", "open"},
			want: func(c *Config) { c.FailMode, c.LocalFallback = authz.FailOpen, false }},
		{name: "fail-mode local", args: []string{"--fail-mode", "local"},
			want: func(c *Config) {}},
		{name: "tls", args: []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"},
			want: func(c *Config) { c.TLSCert, c.TLSKey = "c.pem", "k.pem" }},
		{name: "mutual tls from the environment",
			env:  map[string]string{"FLOODGATE_TLS_CERT": "c.pem", "FLOODGATE_TLS_KEY": "k.pem", "FLOODGATE_TLS_CLIENT_CA": "ca.pem"},
			want: func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA = "c.pem", "k.pem", "ca.pem" }},
		{name: "headers=false", args: []string{"--headers=false"},
			want: func(c *Config) { c.Headers = false }},
		{name: "headers bare", args: []string{"--headers"},
			want: func(c *Config) {}},
		{name: "degraded-header-to-client", args: []string{"--degraded-header-to-client"},
			want: func(c *Config) { c.DegradedHeaderToClient = true }},
		{name: "degraded-header-to-client from the environment", env: map[string]string{"FLOODGATE_DEGRADED_HEADER_TO_CLIENT": "true"},
			want: func(c *Config) { c.DegradedHeaderToClient = true }},
		{name: "log-format json", args: []string{"--log-format", "json"},
			want: func(c *Config) { c.LogFormat = "json" }},
		{name: "log-level debug", args: []string{"--log-level", "debug"},
			want: func(c *Config) { c.LogLevel = slog.LevelDebug }},
		{name: "log-level WARN", args: []string{"--log-level", "WARN"},
			want: func(c *Config) { c.LogLevel = slog.LevelWarn }},
		{name: "log-level error", args: []string{"--log-level", "error"},
			want: func(c *Config) { c.LogLevel = slog.LevelError }},
		{name: "shutdown-timeout", args: []string{"--shutdown-timeout", "2s"},
			want: func(c *Config) { c.ShutdownTimeout = 2 * time.Second }},
		{name: "version", args: []string{"--version"},
			want: func(c *Config) { *c = Config{Version: true} }},
		{name: "version ignores other invalid values", args: []string{"--limit", "0", "--version"},
			env:  map[string]string{"FLOODGATE_WINDOW": "500ms"},
			want: func(c *Config) { *c = Config{Version: true} }},
		{name: "version=false serves", args: []string{"--version=false"},
			want: func(c *Config) {}},
		{name: "FLOODGATE_VERSION is not read", env: map[string]string{"FLOODGATE_VERSION": "v1.2.3"},
			want: func(c *Config) {}},
		{name: "unrelated FLOODGATE variables are ignored",
			env:  map[string]string{"FLOODGATE_PORT": "tcp://10.0.0.1:9001", "FLOODGATE_SERVICE_HOST": "10.0.0.1"},
			want: func(c *Config) {}},
		{name: "every flag from the environment",
			env: map[string]string{
				"FLOODGATE_GRPC_ADDR":           "127.0.0.1:7001",
				"FLOODGATE_ADMIN_ADDR":          "127.0.0.1:7002",
				"FLOODGATE_MEMCACHE_SERVERS":    "mc:11211",
				"FLOODGATE_MEMCACHE_TIMEOUT":    "50ms",
				"FLOODGATE_MEMCACHE_MAX_CONNS":  "8",
				"FLOODGATE_LIMIT":               "7",
				"FLOODGATE_WINDOW":              "10m",
				"FLOODGATE_KEY":                 "xff",
				"FLOODGATE_XFF_TRUSTED_HOPS":    "3",
				"FLOODGATE_FAIL_MODE":           "closed",
				"FLOODGATE_HEADERS":             "false",
				"FLOODGATE_LOG_FORMAT":          "json",
				"FLOODGATE_LOG_LEVEL":           "warn",
				"FLOODGATE_SHUTDOWN_TIMEOUT":    "3s",
				"FLOODGATE_MAX_CLOCK_SKEW":      "2s",
				"FLOODGATE_STRATEGY":            "fixed",
				"FLOODGATE_GRPC_MAX_CONNS":      "100",
				"FLOODGATE_GRPC_MAX_RECV_BYTES": "8192",
				"FLOODGATE_GRPC_MAX_CALLS":      "20",
			},
			want: func(c *Config) {
				*c = Config{
					GRPCAddr:         "127.0.0.1:7001",
					GRPCMaxConns:     100,
					GRPCMaxRecvBytes: 8192,
					GRPCMaxCalls:     20,
					AdminAddr:        "127.0.0.1:7002",
					ConsoleAddr:      "127.0.0.1:9091",
					MemcacheServers:  []string{"mc:11211"},
					MemcacheTimeout:  50 * time.Millisecond,
					MemcacheMaxConns: 8,
					Limit:            7,
					Window:           10 * time.Minute,
					Key:              mustKey(t, "xff", 3),
					XFFTrustedHops:   3,
					FailMode:         authz.FailClosed,
					Strategy:         "fixed",
					Headers:          false,
					LogFormat:        "json",
					LogLevel:         slog.LevelWarn,
					ShutdownTimeout:  3 * time.Second,
					MaxClockSkew:     2 * time.Second,
				}
			}},
		{name: "flag wins over environment",
			args: []string{"--limit", "5", "--window", "30s", "--headers=true", "--memcache-servers", "a:1"},
			env: map[string]string{
				"FLOODGATE_LIMIT":            "0", // invalid, but never read
				"FLOODGATE_WINDOW":           "1m",
				"FLOODGATE_HEADERS":          "false",
				"FLOODGATE_MEMCACHE_SERVERS": "bad",
			},
			want: func(c *Config) {
				c.Limit, c.Window, c.Headers, c.MemcacheServers = 5, 30*time.Second, true, []string{"a:1"}
			}},
		{name: "empty variable counts as unset", env: map[string]string{"FLOODGATE_LIMIT": ""},
			want: func(c *Config) {}},
		{name: "environment hops with flag key",
			args: []string{"--key", "xff"}, env: map[string]string{"FLOODGATE_XFF_TRUSTED_HOPS": "1"},
			want: func(c *Config) { c.Key, c.XFFTrustedHops = mustKey(t, "xff", 1), 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseConfig(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("ParseConfig(%q): %v", tt.args, err)
			}
			want := defaults
			if tt.want != nil {
				tt.want(&want)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseConfig(%q, %v)\n got %+v\nwant %+v", tt.args, tt.env, got, want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"grpc-addr without port", []string{"--grpc-addr", "localhost"}, nil,
			`invalid value "localhost" for flag --grpc-addr: want host:port, e.g. :9001 or 127.0.0.1:9001`},
		{"admin-addr empty", []string{"--admin-addr", ""}, nil,
			`invalid value "" for flag --admin-addr: want host:port, e.g. :9001 or 127.0.0.1:9001`},
		{"memcache-servers without port", []string{"--memcache-servers", "bad"}, nil,
			`invalid value "bad" for flag --memcache-servers: memcache server "bad": want host:port, with an IPv6 host in brackets as in [::1]:11211: address bad: missing port in address`},
		{"memcache-servers empty entry", []string{"--memcache-servers", "a:1,,b:2"}, nil,
			`invalid value "a:1,,b:2" for flag --memcache-servers: memcache servers "a:1,,b:2": entry 2 is empty`},
		{"memcache-servers bad port", []string{"--memcache-servers", "mc:0"}, nil,
			`invalid value "mc:0" for flag --memcache-servers: memcache server "mc:0": port "0": want a number from 1 to 65535`},
		{"max-clock-skew negative", []string{"--max-clock-skew", "-1s"}, nil,
			`invalid value "-1s" for flag --max-clock-skew: max clock skew -1s: must be from 0s to 30s`},
		{"max-clock-skew too large", nil, map[string]string{"FLOODGATE_MAX_CLOCK_SKEW": "1m"},
			`invalid value "1m" for FLOODGATE_MAX_CLOCK_SKEW: max clock skew 1m0s: must be from 0s to 30s`},
		{"memcache-timeout zero", []string{"--memcache-timeout", "0s"}, nil,
			`invalid value "0s" for flag --memcache-timeout: must be positive`},
		{"memcache-timeout no unit", []string{"--memcache-timeout", "100"}, nil,
			`invalid value "100" for flag --memcache-timeout: not a duration (use a number with a unit: 100ms, 15s, 1h)`},
		{"memcache-max-conns zero", []string{"--memcache-max-conns", "0"}, nil,
			`invalid value "0" for flag --memcache-max-conns: must be at least 1`},
		{"memcache-max-conns not a number", []string{"--memcache-max-conns", "many"}, nil,
			`invalid value "many" for flag --memcache-max-conns: not an integer`},
		{"limit zero", []string{"--limit", "0"}, nil,
			`invalid value "0" for flag --limit: must be at least 1`},
		{"limit negative", []string{"--limit=-5"}, nil,
			`invalid value "-5" for flag --limit: must be at least 1`},
		{"limit not a number", []string{"--limit", "lots"}, nil,
			`invalid value "lots" for flag --limit: not an integer`},
		{"window sub-second", []string{"--window", "500ms"}, nil,
			`invalid value "500ms" for flag --window: must be a whole number of seconds from 1s to 24h`},
		{"window fractional", []string{"--window", "1.5s"}, nil,
			`invalid value "1.5s" for flag --window: must be a whole number of seconds from 1s to 24h`},
		{"window zero", []string{"--window", "0"}, nil,
			`invalid value "0" for flag --window: must be a whole number of seconds from 1s to 24h`},
		{"window over the maximum", []string{"--window", "25h"}, nil,
			`invalid value "25h" for flag --window: must be a whole number of seconds from 1s to 24h`},
		{"window not a duration", []string{"--window", "hour"}, nil,
			`invalid value "hour" for flag --window: not a duration such as 60s or 1h`},
		{"key unknown form", []string{"--key", "bogus"}, nil,
			`invalid value "bogus" for flag --key: unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`},
		{"key empty header", []string{"--key", "header:"}, nil,
			`invalid value "header:" for flag --key: empty header name`},
		{"xff-trusted-hops negative", []string{"--xff-trusted-hops=-1"}, nil,
			`invalid value "-1" for flag --xff-trusted-hops: must be at least 0`},
		{"xff-trusted-hops not a number", []string{"--xff-trusted-hops", "two"}, nil,
			`invalid value "two" for flag --xff-trusted-hops: not an integer`},
		{"fail-mode", []string{"--fail-mode", "half"}, nil,
			`invalid value "half" for flag --fail-mode: want "local", "open" or "closed"`},
		{"tls-cert without key", []string{"--tls-cert", "c.pem"}, nil,
			`--tls-cert and --tls-key go together: set both or neither`},
		{"tls-key without cert", nil, map[string]string{"FLOODGATE_TLS_KEY": "k.pem"},
			`--tls-cert and --tls-key go together: set both or neither`},
		{"tls-client-ca without cert", []string{"--tls-client-ca", "ca.pem"}, nil,
			`--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS that also checks client certificates`},
		{"headers", []string{"--headers=maybe"}, nil,
			`invalid value "maybe" for flag --headers: want true or false`},
		{"log-format", []string{"--log-format", "xml"}, nil,
			`invalid value "xml" for flag --log-format: want text or json`},
		{"log-level", []string{"--log-level", "trace"}, nil,
			`invalid value "trace" for flag --log-level: want debug, info, warn or error`},
		{"shutdown-timeout negative", []string{"--shutdown-timeout", "-1s"}, nil,
			`invalid value "-1s" for flag --shutdown-timeout: must be positive`},
		{"version", []string{"--version=sure"}, nil,
			`invalid value "sure" for flag --version: want true or false`},
		{"unknown flag", []string{"--bogus"}, nil,
			`unknown flag --bogus (see --help)`},
		{"unknown flag with value", []string{"--limit", "5", "-rate=3"}, nil,
			`unknown flag --rate (see --help)`},
		{"unknown flag with a line break", []string{"-\n"}, nil,
			`unknown flag "--\n" (see --help)`},
		{"missing value", []string{"--limit"}, nil,
			`missing value for flag --limit`},
		{"positional argument", []string{"--limit", "5", "serve"}, nil,
			`unexpected argument "serve": floodgate takes only flags`},

		{"env limit", nil, map[string]string{"FLOODGATE_LIMIT": "0"},
			`invalid value "0" for FLOODGATE_LIMIT: must be at least 1`},
		{"env window", nil, map[string]string{"FLOODGATE_WINDOW": "500ms"},
			`invalid value "500ms" for FLOODGATE_WINDOW: must be a whole number of seconds from 1s to 24h`},
		{"env memcache servers", nil, map[string]string{"FLOODGATE_MEMCACHE_SERVERS": "a:1,"},
			`invalid value "a:1," for FLOODGATE_MEMCACHE_SERVERS: memcache servers "a:1,": entry 2 is empty`},
		{"env key", nil, map[string]string{"FLOODGATE_KEY": "ip"},
			`invalid value "ip" for FLOODGATE_KEY: unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`},
		{"env headers", nil, map[string]string{"FLOODGATE_HEADERS": "on"},
			`invalid value "on" for FLOODGATE_HEADERS: want true or false`},
		{"env degraded-header-to-client", nil, map[string]string{"FLOODGATE_DEGRADED_HEADER_TO_CLIENT": "yes"},
			`invalid value "yes" for FLOODGATE_DEGRADED_HEADER_TO_CLIENT: want true or false`},
		{"env bad, flag for another", []string{"--limit", "3"}, map[string]string{"FLOODGATE_FAIL_MODE": "OPEN"},
			`invalid value "OPEN" for FLOODGATE_FAIL_MODE: want "local", "open" or "closed"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig(tt.args, envOf(tt.env))
			if err == nil {
				t.Fatalf("ParseConfig(%q, %v) = nil error, want %q", tt.args, tt.env, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("ParseConfig(%q, %v) error\n got %s\nwant %s", tt.args, tt.env, got, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "-help"} {
		if _, err := ParseConfig([]string{arg}, envOf(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("ParseConfig(%q) error = %v, want flag.ErrHelp", arg, err)
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	if c.GRPCAddr != ":9001" || c.AdminAddr != ":9090" || c.Limit != 100 || c.Window != time.Hour {
		t.Errorf("DefaultConfig() = %+v", c)
	}
}

func TestUsageListsEveryFlag(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	Usage(&b)
	help := b.String()
	for _, o := range options {
		if !strings.Contains(help, "--"+o.name) {
			t.Errorf("usage lacks --%s", o.name)
		}
		if !o.noEnv && !strings.Contains(help, "env "+o.env()) {
			t.Errorf("usage lacks env %s", o.env())
		}
		def := o.def
		if def == "" {
			def = `""`
		}
		if !o.noEnv && !strings.Contains(help, "default "+def+",") {
			t.Errorf("usage lacks --%s's default %s", o.name, def)
		}
	}
}
