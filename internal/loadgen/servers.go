package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// bindAttempts is how often a server is started on new free ports when
// another process took the port first.
const bindAttempts = 5

// addrInUse reports whether a process's output says it could not bind.
func addrInUse(out string) bool {
	return strings.Contains(out, "address already in use") || strings.Contains(out, "Address already in use")
}

// retryBind calls start until it succeeds or fails for another reason than
// a port taken meanwhile.
func retryBind[T any](start func() (T, *Proc, error)) (T, error) {
	var zero T
	var last error
	for range bindAttempts {
		v, p, err := start()
		if err == nil {
			return v, nil
		}
		last = err
		if p == nil || !addrInUse(p.Output()) {
			break
		}
	}
	return zero, last
}

// Memcached is a memcached the benchmark started on a loopback port.
type Memcached struct {
	*Proc
	Addr string
}

// FindMemcached returns the memcached binary in PATH, /usr/bin or
// /usr/local/bin, or "".
func FindMemcached() string {
	if p, err := exec.LookPath("memcached"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// StartMemcached starts memcached (bin) on a free 127.0.0.1 port with
// memMB megabytes of memory and threads worker threads, and waits until it
// answers.
func StartMemcached(bin string, memMB, threads int) (*Memcached, error) {
	return retryBind(func() (*Memcached, *Proc, error) {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0",
			"-m", strconv.Itoa(memMB), "-t", strconv.Itoa(threads), "-c", "4096"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root") // memcached refuses root otherwise
		}
		p, err := startProc("memcached", nil, bin, args...)
		if err != nil {
			return nil, nil, err
		}
		m := &Memcached{Proc: p, Addr: loopback(port)}
		if err := waitTCP(p, m.Addr); err != nil {
			p.Stop()
			return nil, p, err
		}
		if _, err := m.Stats(); err != nil {
			p.Stop()
			return nil, p, err
		}
		return m, p, nil
	})
}

// Stats returns memcached's general statistics ("stats"): name to value.
func (m *Memcached) Stats() (map[string]string, error) {
	c, err := net.DialTimeout("tcp", m.Addr, time.Second)
	if err != nil {
		return nil, fmt.Errorf("memcached stats: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "stats\r\n"); err != nil {
		return nil, fmt.Errorf("memcached stats: %w", err)
	}
	return parseStats(bufio.NewReader(c))
}

// parseStats reads "STAT name value" lines up to "END".
func parseStats(r *bufio.Reader) (map[string]string, error) {
	out := make(map[string]string)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("memcached stats: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			return out, nil
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("memcached stats: unexpected line %q", line)
		}
		out[f[1]] = f[2]
	}
}

// RoundTrips returns the number of read system calls memcached has made
// (syscr of /proc/PID/io). memcached reads once per batch of commands that
// arrives on a connection, so this counts round trips: one for a command
// sent alone, one for several pipelined in one write. Unlike its command
// statistics, it is the same measure whatever the client sends.
func (m *Memcached) RoundTrips() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(m.Pid()) + "/io")
	if err != nil {
		return 0, fmt.Errorf("memcached round trips: %w", err)
	}
	return parseSyscr(b)
}

// parseSyscr finds "syscr: N" in a /proc/PID/io.
func parseSyscr(io []byte) (int64, error) {
	for _, line := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no syscr in /proc/PID/io")
}

// Floodgate is a floodgate process the benchmark started.
type Floodgate struct {
	*Proc
	GRPCAddr  string
	AdminAddr string
}

// StartFloodgate runs the floodgate binary bin on free loopback ports with
// args after --grpc-addr and --admin-addr, with GOMAXPROCS=procs when procs
// is positive and no FLOODGATE_* variables from the benchmark's
// environment, and waits until /readyz answers.
func StartFloodgate(bin string, procs int, args ...string) (*Floodgate, error) {
	env := serverEnv(procs)
	return retryBind(func() (*Floodgate, *Proc, error) {
		gp, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		ap, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		f := &Floodgate{GRPCAddr: loopback(gp), AdminAddr: loopback(ap)}
		all := append([]string{"--grpc-addr", f.GRPCAddr, "--admin-addr", f.AdminAddr, "--log-level", "warn"}, args...)
		p, err := startProc("floodgate", env, bin, all...)
		if err != nil {
			return nil, nil, err
		}
		f.Proc = p
		if err := waitHTTP(p, "http://"+f.AdminAddr+"/readyz"); err != nil {
			p.Stop()
			return nil, p, err
		}
		return f, p, nil
	})
}

// Metrics returns floodgate's /metrics as sums per metric name.
func (f *Floodgate) Metrics() (Metrics, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + f.AdminAddr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("floodgate metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("floodgate metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// serverEnv is the environment of a server process: the benchmark's own
// without FLOODGATE_* and GOMAXPROCS, plus GOMAXPROCS=procs when positive.
func serverEnv(procs int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLOODGATE_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	if procs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	return env
}

// StartSelf runs this binary (self, from os.Executable) with mode and
// --listen on a free loopback port, with GOMAXPROCS=procs when positive,
// and waits until that port accepts connections. Modes are the no-op
// Authorization server and the upstream HTTP app (see cmd/floodgate-bench).
func StartSelf(self string, procs int, mode string) (*Proc, string, error) {
	type started struct {
		p    *Proc
		addr string
	}
	s, err := retryBind(func() (started, *Proc, error) {
		port, err := freePort()
		if err != nil {
			return started{}, nil, err
		}
		addr := loopback(port)
		p, err := startProc(mode, serverEnv(procs), self, mode, "--listen", addr)
		if err != nil {
			return started{}, nil, err
		}
		if err := waitTCP(p, addr); err != nil {
			p.Stop()
			return started{}, p, err
		}
		return started{p, addr}, p, nil
	})
	return s.p, s.addr, err
}

// ServeUpstream serves the upstream app behind Envoy on ln: 200 and
// "hello from upstream" for every request, as scripts/upstream.py does.
func ServeUpstream(ln net.Listener) error {
	body := []byte("hello from upstream\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return srv.Serve(ln)
}

// Envoy is an Envoy process the benchmark started.
type Envoy struct {
	*Proc
	URL string // the listener, http://127.0.0.1:PORT
}

var (
	portValue  = regexp.MustCompile(`(port_value:\s*)(\d+)`)
	anyAddress = regexp.MustCompile(`(address:\s*)0\.0\.0\.0\b`)
)

// ExtAuthzFilter is the name of Envoy's ext_authz HTTP filter.
const ExtAuthzFilter = "envoy.filters.http.ext_authz"

// RenderEnvoyConfig returns the Envoy config src with every port_value N
// replaced by ports[N] (every port must be given), 0.0.0.0 replaced by
// 127.0.0.1, and, unless withAuthz, the ext_authz filter removed: from every
// http_filters list and every typed_per_filter_config, so the same routes
// run without the check.
func RenderEnvoyConfig(src []byte, ports map[int]int, withAuthz bool) ([]byte, error) {
	var missing []int
	out := portValue.ReplaceAllFunc(src, func(m []byte) []byte {
		sub := portValue.FindSubmatch(m)
		n, _ := strconv.Atoi(string(sub[2]))
		p, ok := ports[n]
		if !ok {
			missing = append(missing, n)
			return m
		}
		return []byte(string(sub[1]) + strconv.Itoa(p))
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("render envoy config: no port given for port_value %v", missing)
	}
	out = anyAddress.ReplaceAll(out, []byte("${1}127.0.0.1"))
	if withAuthz {
		return out, nil
	}
	var doc any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("render envoy config: %w", err)
	}
	removed := dropFilter(doc, ExtAuthzFilter)
	if removed == 0 {
		return nil, fmt.Errorf("render envoy config: no %s filter to remove", ExtAuthzFilter)
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render envoy config: %w", err)
	}
	return b, nil
}

// dropFilter removes the HTTP filter name from every http_filters list in v
// and its entry from every typed_per_filter_config, and returns how many
// filters it removed from lists.
func dropFilter(v any, name string) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		if tp, ok := v["typed_per_filter_config"].(map[string]any); ok {
			delete(tp, name)
			if len(tp) == 0 {
				delete(v, "typed_per_filter_config")
			}
		}
		if fs, ok := v["http_filters"].([]any); ok {
			kept := fs[:0]
			for _, f := range fs {
				if m, ok := f.(map[string]any); ok && m["name"] == name {
					n++
					continue
				}
				kept = append(kept, f)
			}
			v["http_filters"] = kept
		}
		for _, c := range v {
			n += dropFilter(c, name)
		}
	case []any:
		for _, c := range v {
			n += dropFilter(c, name)
		}
	}
	return n
}

// StartEnvoy runs Envoy (bin) with the config file at path, rendered by
// RenderEnvoyConfig with ports (which must map the clusters' ports; the
// listener on 10000 and the admin port 9901 get free ports), with one
// worker thread, and waits until it is ready. dir holds the rendered copy.
func StartEnvoy(bin, path, dir string, ports map[int]int, withAuthz bool) (*Envoy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	attempt := 0
	return retryBind(func() (*Envoy, *Proc, error) {
		attempt++
		all := map[int]int{}
		for k, v := range ports {
			all[k] = v
		}
		for _, n := range []int{10000, 9901} {
			p, err := freePort()
			if err != nil {
				return nil, nil, err
			}
			all[n] = p
		}
		cfg, err := RenderEnvoyConfig(src, all, withAuthz)
		if err != nil {
			return nil, nil, err
		}
		name := fmt.Sprintf("envoy-%d-authz-%t.yaml", attempt, withAuthz)
		cfgPath := filepath.Join(dir, name)
		if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
			return nil, nil, err
		}
		p, err := startProc("envoy", nil, bin, "-c", cfgPath, "--concurrency", "1", "-l", "warning",
			"--disable-hot-restart", "--base-id", strconv.Itoa(os.Getpid()%10000*100+attempt))
		if err != nil {
			return nil, nil, err
		}
		e := &Envoy{Proc: p, URL: "http://" + loopback(all[10000])}
		if err := waitHTTP(p, "http://"+loopback(all[9901])+"/ready"); err != nil {
			p.Stop()
			return nil, p, err
		}
		if err := waitTCP(p, loopback(all[10000])); err != nil {
			p.Stop()
			return nil, p, err
		}
		return e, p, nil
	})
}

// FindEnvoy returns the Envoy binary: $FLOODGATE_ENVOY, else root's
// .tools/bin/envoy or .tools/venv/bin/envoy (where scripts/deps.sh installs
// it), else envoy in PATH; "" when there is none.
func FindEnvoy(root string) string {
	if p := os.Getenv("FLOODGATE_ENVOY"); p != "" {
		return p
	}
	for _, p := range []string{
		filepath.Join(root, ".tools", "bin", "envoy"),
		filepath.Join(root, ".tools", "venv", "bin", "envoy"),
	} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p
	}
	return ""
}
