package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/policy"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// version is the release printed by --version and logged at startup. The
// Makefile sets it with -ldflags "-X main.version=..."; when it is empty the
// module version from the build info is used, else "dev".
var version string

// Version returns floodgate's version string: the linker-set version, else
// the main module's version from the build info, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// envPrefix is prepended to a flag's upper-cased name, with '-' turned into
// '_', to form the environment variable that also sets it.
const envPrefix = "FLOODGATE_"

// Config is floodgate's effective configuration, read from the command line
// and the FLOODGATE_* environment by ParseConfig. Its zero value is not
// useful; DefaultConfig and ParseConfig return valid ones.
type Config struct {
	// GRPCAddr is the listen address of the gRPC server (Envoy's ext_authz
	// Authorization service and grpc.health.v1), host:port.
	GRPCAddr string
	// GRPCMaxConns bounds the open connections of the gRPC listener; ≥ 1.
	// Connections past it are closed as soon as they are accepted. serve
	// lowers it when RLIMIT_NOFILE leaves no room for it (see grpcConnBound).
	GRPCMaxConns int
	// GRPCMaxRecvBytes is the largest CheckRequest accepted, in bytes;
	// from 4 KiB to 64 MiB.
	GRPCMaxRecvBytes int
	// GRPCMaxCalls bounds the gRPC calls in flight on the whole server;
	// ≥ 1. Calls past it are refused with RESOURCE_EXHAUSTED.
	GRPCMaxCalls int
	// AdminAddr is the listen address of the HTTP admin server (/healthz,
	// /readyz, /metrics), host:port.
	AdminAddr string
	// PProf serves Go's profiler (net/http/pprof) under /debug/pprof/ on
	// AdminAddr.
	PProf bool
	// ConsoleAddr is the listen address of the console (package console:
	// the operator's page and API of who is limited), host:port; "" serves
	// none.
	ConsoleAddr string
	// ConsoleShowIdentities shows identities taken from a header (API
	// keys) in full on the console; otherwise as their fingerprint.
	ConsoleShowIdentities bool
	// MemcacheServers lists the memcached servers as host:port. Empty means
	// the embedded in-memory store.
	MemcacheServers []string
	// MemcacheTimeout bounds each memcached round trip; positive.
	MemcacheTimeout time.Duration
	// MemcacheMaxConns bounds the connections to each memcached server,
	// which carry every call to it, pipelined (memcache.Config.MaxConns);
	// ≥ 1.
	MemcacheMaxConns int
	// Limit is the number of requests a requestor may make per Window; ≥ 1.
	Limit int64
	// Window is the sliding window: whole seconds, from one second to
	// limiter.MaxWindow.
	Window time.Duration
	// Key says how authz identifies the requestor (--key: a form of
	// authz.ParseKey).
	Key authz.KeySpec
	// XFFTrustedHops is the number of trusted proxies at the right end of
	// X-Forwarded-For, used with --key xff; ≥ 0.
	XFFTrustedHops int
	// FailMode says what happens to a request when the store fails and
	// there is no local fallback, or the fallback fails too.
	FailMode authz.FailMode
	// LocalFallback (--fail-mode local) decides with a per-replica
	// in-memory limiter while memcached is unavailable; FailMode is then
	// FailOpen, for what even that cannot decide.
	LocalFallback bool
	// TLSCert and TLSKey are PEM files of the gRPC listener's certificate
	// chain and private key; both empty means plaintext.
	TLSCert, TLSKey string
	// TLSClientCA is a PEM bundle of the CAs that client certificates must
	// chain to; set, the gRPC listener requires one (mutual TLS).
	TLSClientCA string
	// Strategy is the default rate-limiting algorithm (--strategy), one of
	// limiter.Strategies(); routes (floodgate.strategy) and policy rules
	// may choose another.
	Strategy string
	// PolicyFile is the policy file (--policy); empty for none. Policy is
	// its content, loaded and validated by ParseConfig; the server reloads
	// the file when it changes.
	PolicyFile string
	Policy     *policy.Policy
	// RLSConfigPath is the rate limit service's configuration
	// (--rls-config), a file or a directory in envoyproxy/ratelimit's
	// format; empty for none. RLSConfig is its content, loaded and
	// validated by ParseConfig; the server reloads it when it changes.
	RLSConfigPath string
	RLSConfig     *rlsconf.Config
	// Headers turns the X-RateLimit-* headers on allowed responses on or off.
	Headers bool
	// DegradedHeaderToClient also sends X-Floodgate-Degraded to clients
	// (authz.Config.DegradedHeaderToClient); otherwise only the upstream
	// request carries it.
	DegradedHeaderToClient bool
	// LogFormat is "text" or "json".
	LogFormat string
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// MaxClockSkew is the most the clocks of the replicas may disagree by
	// (--max-clock-skew); the sliding window stays exact within it.
	MaxClockSkew time.Duration
	// ShutdownTimeout bounds the graceful drain of in-flight checks after
	// SIGTERM or SIGINT; positive.
	ShutdownTimeout time.Duration
	// Version asks for the version to be printed instead of serving. When it
	// is set, ParseConfig does not validate the other values.
	Version bool
}

// option is one command-line flag with its environment variable. parse
// checks a raw value and stores it in the Config; its error is the reason
// only, without the value or the flag name, which ParseConfig adds.
type option struct {
	name   string // flag name without dashes
	arg    string // placeholder for the value in --help; "" for a bool flag
	def    string // default, as a command-line value
	usage  string
	isBool bool
	noEnv  bool // read from the command line only
	parse  func(c *Config, v string) error
}

// env is the environment variable that sets o.
func (o option) env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

// options lists every flag in the order --help shows them and ParseConfig
// validates them. --xff-trusted-hops comes before --key, whose check needs it.
var options = []option{
	{name: "grpc-addr", arg: "host:port", def: ":9001",
		usage: "gRPC listen address (Envoy ext_authz Check and grpc.health.v1)",
		parse: func(c *Config, v string) (err error) { c.GRPCAddr, err = parseAddr(v); return err }},
	{name: "grpc-max-conns", arg: "n", def: "4096",
		usage: "most open connections on --grpc-addr; more are closed as soon as they are accepted (lowered at start when the open-file limit leaves no room for it beside the admin server and memcached)",
		parse: func(c *Config, v string) (err error) { c.GRPCMaxConns, err = parseAtLeastOne(v); return err }},
	{name: "grpc-max-recv-bytes", arg: "bytes", def: "1048576",
		usage: "largest CheckRequest accepted, from 4096 to 67108864; larger ones get RESOURCE_EXHAUSTED",
		parse: parseMaxRecvBytes},
	{name: "grpc-max-calls", arg: "n", def: "1024",
		usage: "most gRPC calls in flight on the whole server; more get RESOURCE_EXHAUSTED. Request memory is at most this times --grpc-max-recv-bytes",
		parse: func(c *Config, v string) (err error) { c.GRPCMaxCalls, err = parseAtLeastOne(v); return err }},
	{name: "tls-cert", arg: "file", def: "",
		usage: "PEM certificate chain for TLS on the gRPC listener, with --tls-key; reloaded when the file changes",
		parse: func(c *Config, v string) error { c.TLSCert = v; return nil }},
	{name: "tls-key", arg: "file", def: "",
		usage: "PEM private key of --tls-cert",
		parse: func(c *Config, v string) error { c.TLSKey = v; return nil }},
	{name: "tls-client-ca", arg: "file", def: "",
		usage: "PEM CA bundle: require client certificates signed by these CAs on the gRPC listener (mutual TLS); needs --tls-cert",
		parse: func(c *Config, v string) error { c.TLSClientCA = v; return nil }},
	{name: "admin-addr", arg: "host:port", def: ":9090",
		usage: "HTTP admin listen address (/healthz, /readyz, /metrics)",
		parse: func(c *Config, v string) (err error) { c.AdminAddr, err = parseAddr(v); return err }},
	{name: "pprof", def: "false", isBool: true,
		usage: "serve Go's profiler (net/http/pprof) under /debug/pprof/ on --admin-addr; off by default, and only for an admin address no client can reach",
		parse: func(c *Config, v string) (err error) { c.PProf, err = parseBool(v); return err }},
	{name: "console-addr", arg: "host:port|off", def: "127.0.0.1:9091",
		usage: "listen address of the console, the operator's page and JSON API of who is limited (/, /api/v1/top, /api/v1/requestors): it shows client identities, so keep it on loopback and reach it through a tunnel such as kubectl port-forward; off serves none",
		parse: parseConsoleAddr},
	{name: "console-show-identities", def: "false", isBool: true,
		usage: "show identities taken from a header (API keys) in full on the console; off, they are shown as header:<name>:sha256:<12 hex digits of the value's SHA-256>. Addresses are always shown",
		parse: func(c *Config, v string) (err error) { c.ConsoleShowIdentities, err = parseBool(v); return err }},
	{name: "memcache-servers", arg: "host:port[,...]", def: "",
		usage: "memcached servers shared by all replicas: host:port, or dns+NAME:PORT for every address of NAME (e.g. a headless Service), looked up again every 10s; requestors are spread by consistent hashing; empty: embedded in-memory store",
		parse: parseServers},
	{name: "memcache-timeout", arg: "duration", def: "100ms",
		usage: "timeout of one memcached round trip; keep it well below Envoy's ext_authz timeout",
		parse: func(c *Config, v string) (err error) { c.MemcacheTimeout, err = parsePositiveDuration(v); return err }},
	{name: "memcache-max-conns", arg: "n", def: "2",
		usage: "most connections to each memcached server; every call to it (counters, and the token-bucket and sliding-log values) is pipelined over them: calls that find them all busy wait, up to --memcache-timeout, and go out together on the next one free, so more connections mean fewer calls per round trip, not more throughput. Replicas × (this + 1, for the stats read every 10s) per server must stay below memcached's connection limit (-c, 1024 by default)",
		parse: func(c *Config, v string) (err error) { c.MemcacheMaxConns, err = parseAtLeastOne(v); return err }},
	{name: "limit", arg: "n", def: "100",
		usage: "requests allowed per requestor per window",
		parse: parseLimit},
	{name: "window", arg: "duration", def: "1h",
		usage: "sliding window length, whole seconds from 1s to 24h (e.g. 1h, 90s)",
		parse: parseWindow},
	{name: "xff-trusted-hops", arg: "n", def: "0",
		usage: "with --key xff: trusted proxies at the right end of X-Forwarded-For",
		parse: parseHops},
	{name: "key", arg: "source|xff|header:<name>|principal|metadata:<filter>:<path>", def: "source",
		usage: "requestor identity: client address, X-Forwarded-For, a request header, the mTLS peer's verified identity (SPIFFE ID), or a value Envoy's filters wrote to metadata (a verified JWT claim)",
		parse: parseKey},
	{name: "strategy", arg: "sliding|fixed|token-bucket|sliding-log", def: "sliding",
		usage: "rate-limiting algorithm: sliding window, fixed window (reset at each boundary), token bucket (steady rate with bursts), or sliding log (exact, limits up to 1000); routes choose another with floodgate.strategy, policy rules with strategy",
		parse: parseStrategy},
	{name: "policy", arg: "file", def: "",
		usage: "YAML policy file: rules by route scope, method, path and headers with their own key, limit, window, strategy and tiers; an allowlist and a blocklist; shadow rules. Reloaded when it changes; check it with floodgate check-policy FILE",
		parse: parsePolicy},
	{name: "rls-config", arg: "path", def: "",
		usage: "configuration of the rate limit service (Envoy's ratelimit filter, served on --grpc-addr too): a YAML file or a directory of them, one domain each, in envoyproxy/ratelimit's format. Reloaded when it changes; check it with floodgate check-rls-config PATH",
		parse: parseRLSConfig},
	{name: "fail-mode", arg: "local|open|closed", def: "local",
		usage: "when memcached fails: local decides with a per-replica in-memory limiter (the limit then holds per replica), open allows the request, closed denies it with 503",
		parse: parseFailMode},
	{name: "headers", def: "true", isBool: true,
		usage: "add X-RateLimit-* headers to allowed responses",
		parse: func(c *Config, v string) (err error) { c.Headers, err = parseBool(v); return err }},
	{name: "degraded-header-to-client", def: "false", isBool: true,
		usage: "also send X-Floodgate-Degraded (set on the upstream request when the per-replica fallback decided) to clients, on allowed responses and 429s; off, it tells no attacker when the limit is weaker",
		parse: func(c *Config, v string) (err error) { c.DegradedHeaderToClient, err = parseBool(v); return err }},
	{name: "max-clock-skew", arg: "duration", def: "1s",
		usage: "most the clocks of the replicas sharing memcached may disagree by, from 0s to 30s; the sliding window stays exact within it (each decision reads about two more seconds per second of skew)",
		parse: parseMaxClockSkew},
	{name: "log-format", arg: "text|json", def: "text",
		usage: "log format (logs go to stderr)",
		parse: parseLogFormat},
	{name: "log-level", arg: "debug|info|warn|error", def: "info",
		usage: "minimum log level",
		parse: parseLogLevel},
	{name: "shutdown-timeout", arg: "duration", def: "15s",
		usage: "how long SIGTERM waits for in-flight checks before closing connections",
		parse: func(c *Config, v string) (err error) { c.ShutdownTimeout, err = parsePositiveDuration(v); return err }},
	{name: "version", def: "false", isBool: true, noEnv: true,
		usage: "print the version and exit"},
}

// rawValue is a flag.Value that only records what was given; ParseConfig
// validates it afterwards so that flag and environment errors read alike.
type rawValue struct {
	s      string
	isBool bool
}

func (v *rawValue) String() string     { return v.s }
func (v *rawValue) Set(s string) error { v.s = s; return nil }
func (v *rawValue) IsBoolFlag() bool   { return v.isBool }

// ParseConfig reads the configuration from args (the command line without
// the program name) and getenv (os.Getenv in production). Every flag --name
// but --version may also be given as the environment variable FLOODGATE_NAME
// (upper case, '-' as '_'); a flag on the command line wins over the
// environment, an empty variable counts as unset, and other FLOODGATE_*
// variables (such as those Kubernetes sets for a Service named floodgate) are
// ignored.
//
// Errors are one line that names the flag or variable at fault. For --help
// ParseConfig returns an error wrapping flag.ErrHelp; print Usage then.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	fs := flag.NewFlagSet("floodgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	raw := make([]rawValue, len(options))
	for i, o := range options {
		raw[i] = rawValue{s: o.def, isBool: o.isBool}
		fs.Var(&raw[i], o.name, o.usage)
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, flagError(err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: floodgate takes only flags", fs.Arg(0))
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// value returns the raw value of options[i] and where it came from.
	value := func(i int) (v, where string) {
		o := options[i]
		if !set[o.name] && !o.noEnv {
			if e := getenv(o.env()); e != "" {
				return e, o.env()
			}
		}
		return raw[i].s, "flag --" + o.name
	}

	// --version is an action, not configuration: it is read from the
	// command line only (a FLOODGATE_VERSION in a deployment's environment
	// more likely holds an image tag), and it works whatever else is wrong.
	if set["version"] {
		v := fs.Lookup("version").Value.String()
		on, err := parseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("invalid value %q for flag --version: %v", v, err)
		}
		if on {
			return Config{Version: true}, nil
		}
	}

	var c Config
	for i, o := range options {
		if o.name == "version" {
			continue
		}
		v, where := value(i)
		if err := o.parse(&c, v); err != nil {
			return Config{}, fmt.Errorf("invalid value %q for %s: %v", v, where, oneLine(err))
		}
	}
	if err := checkTLS(c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// DefaultConfig returns the configuration floodgate runs with when given no
// flags and no environment.
func DefaultConfig() Config {
	c, err := ParseConfig(nil, func(string) string { return "" })
	if err != nil {
		panic("floodgate: defaults do not parse: " + err.Error())
	}
	return c
}

// Usage writes the --help text: every flag with its default and
// environment variable.
func Usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: floodgate [flags]
       floodgate check-policy FILE
       floodgate check-rls-config PATH
       floodgate inspect --console ADDR [--scope S] IDENTITY

floodgate is a rate limiter for Envoy's ext_authz filter (envoy.service.auth.v3
gRPC). Each requestor may make --limit requests per sliding --window; further
requests get HTTP 429. It also serves Envoy's rate limit service API
(envoy.service.ratelimit.v3) with the limits of --rls-config, in
envoyproxy/ratelimit's format. Counters live in memcached
(--memcache-servers), so replicas share one limit, or in memory when no
servers are given.

Flags (each can also be set by the environment variable shown; a flag given on
the command line wins):
`)
	for _, o := range options {
		name := "--" + o.name
		if o.arg != "" {
			name += " " + o.arg
		}
		fmt.Fprintf(w, "  %s\n    \t%s\n", name, o.usage)
		if o.noEnv {
			continue
		}
		def := o.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "      default %s, env %s\n", def, o.env())
	}
	fmt.Fprintf(w, `
Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), --help or --version;
1 when serving fails (e.g. a port in use); 2 for invalid configuration.
`)
}

// flagError turns an error of the flag package into one line in floodgate's
// double-dash spelling.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag %s (see --help)", dashed(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("missing value for flag %s", dashed(name))
	}
	return errors.New(oneLine(err))
}

// dashed spells a flag name from the command line with two dashes, quoted
// when it holds anything but printable ASCII, so the error stays one
// readable line.
func dashed(name string) string {
	s := "--" + strings.TrimLeft(name, "-")
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return strconv.Quote(s)
		}
	}
	return s
}

// oneLine returns err's message with line breaks folded into spaces.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// trimPrefix drops prefix from err's message, for errors that repeat the
// value ParseConfig already quotes.
func trimPrefix(err error, prefix string) error {
	if msg, ok := strings.CutPrefix(err.Error(), prefix); ok {
		return errors.New(msg)
	}
	return err
}

func parseAddr(v string) (string, error) {
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return "", errors.New("want host:port, e.g. :9001 or 127.0.0.1:9001")
	}
	return v, nil
}

func parseServers(c *Config, v string) error {
	c.MemcacheServers = nil
	if strings.TrimSpace(v) == "" {
		return nil
	}
	servers, err := memcache.ParseServers(v)
	if err != nil {
		return err
	}
	c.MemcacheServers = servers
	return nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("not a duration (use a number with a unit: 100ms, 15s, 1h)")
	}
	return d, nil
}

func parsePositiveDuration(v string) (time.Duration, error) {
	d, err := parseDuration(v)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errors.New("must be positive")
	}
	return d, nil
}

func parseMaxClockSkew(c *Config, v string) error {
	d, err := parseDuration(v)
	if err != nil {
		return err
	}
	if err := limiter.ValidateClockSkew(d); err != nil {
		return err
	}
	// Zero in the limiter's config means its default: ask for none.
	c.MaxClockSkew = d
	if d == 0 {
		c.MaxClockSkew = -1
	}
	return nil
}

func parseLimit(c *Config, v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return errors.New("not an integer")
	}
	if n < 1 {
		return errors.New("must be at least 1")
	}
	c.Limit = n
	return nil
}

func parseWindow(c *Config, v string) error {
	d, err := policy.ParseWindow(v)
	if err != nil {
		return err
	}
	c.Window = d
	return nil
}

func parseAtLeastOne(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	if n < 1 {
		return 0, errors.New("must be at least 1")
	}
	return n, nil
}

// Bounds of --grpc-max-recv-bytes: a CheckRequest with one header is a few
// hundred bytes; 64 MiB is past any request Envoy sends (its headers stop at
// 8 MiB).
const (
	minGRPCRecvBytes = 4 << 10
	maxGRPCRecvBytes = 64 << 20
)

func parseMaxRecvBytes(c *Config, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not an integer (bytes)")
	}
	if n < minGRPCRecvBytes || n > maxGRPCRecvBytes {
		return fmt.Errorf("must be from %d to %d bytes", minGRPCRecvBytes, maxGRPCRecvBytes)
	}
	c.GRPCMaxRecvBytes = n
	return nil
}

func parseHops(c *Config, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not an integer")
	}
	if n < 0 {
		return errors.New("must be at least 0")
	}
	c.XFFTrustedHops = n
	return nil
}

func parseKey(c *Config, v string) error {
	k, err := authz.ParseKey(v, c.XFFTrustedHops)
	if err != nil {
		return trimPrefix(err, fmt.Sprintf("parse key %q: ", v))
	}
	c.Key = k
	return nil
}

func parseFailMode(c *Config, v string) error {
	if v == "local" {
		c.FailMode, c.LocalFallback = authz.FailOpen, true
		return nil
	}
	m, err := authz.ParseFailMode(v)
	if err != nil {
		return errors.New(`want "local", "open" or "closed"`)
	}
	c.FailMode, c.LocalFallback = m, false
	return nil
}

// FailModeName returns the --fail-mode value c was parsed from: "local",
// "open" or "closed".
func (c Config) FailModeName() string {
	if c.LocalFallback {
		return "local"
	}
	return c.FailMode.String()
}

// checkTLS checks that the TLS flags make sense together; it does not read
// the files (serve does, and fails with exit status 1 when they do not load).
func checkTLS(c Config) error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: set both or neither")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS that also checks client certificates")
	}
	return nil
}

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

func parseLogFormat(c *Config, v string) error {
	switch v {
	case "text", "json":
		c.LogFormat = v
		return nil
	}
	return errors.New("want text or json")
}

func parseLogLevel(c *Config, v string) error {
	switch strings.ToLower(v) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		return errors.New("want debug, info, warn or error")
	}
	return nil
}
