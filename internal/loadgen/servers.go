package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
	"sigs.k8s.io/yaml"
)

// Proc is a server process the benchmark started: floodgate, memcached,
// Envoy, or this binary as the no-op server or the upstream. Stop kills it
// by its PID; it also dies with the benchmark, so an interrupted run leaves
// nothing running.
type Proc = supervisor.Process

// Memcached is a memcached the benchmark started on a loopback port.
type Memcached struct {
	*supervisor.Memcached
}

// StartMemcached starts memcached (bin) on a free 127.0.0.1 port with
// memMB megabytes of memory and threads worker threads, and waits until it
// answers.
func StartMemcached(bin string, memMB, threads int) (*Memcached, error) {
	m, err := supervisor.StartMemcached(bin, supervisor.MemcachedOptions{MemoryMB: memMB, Threads: threads, MaxConns: 4096})
	if err != nil {
		return nil, err
	}
	return &Memcached{m}, nil
}

// Stats returns memcached's general statistics ("stats"): name to value.
func (m *Memcached) Stats() (map[string]string, error) {
	c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
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
	*supervisor.Floodgate
}

// StartFloodgate runs the floodgate binary bin on free loopback ports with
// args after --grpc-addr, --admin-addr and --log-level warn, with
// GOMAXPROCS=procs when procs is positive and no FLOODGATE_* variables from
// the benchmark's environment, and waits until /readyz answers.
func StartFloodgate(bin string, procs int, args ...string) (*Floodgate, error) {
	f, err := supervisor.StartFloodgate(bin, serverEnv(procs), append([]string{"--log-level", "warn"}, args...)...)
	if err != nil {
		return nil, err
	}
	return &Floodgate{f}, nil
}

// Metrics returns floodgate's /metrics as sums per metric name.
func (f *Floodgate) Metrics() (Metrics, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(f.AdminURL() + "/metrics")
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
	env := supervisor.ServerEnv("GOMAXPROCS=")
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
	s, err := supervisor.RetryBind(func() (started, *Proc, error) {
		port, err := supervisor.FreePort()
		if err != nil {
			return started{}, nil, err
		}
		addr := supervisor.Loopback(port)
		p, err := supervisor.Start(mode, serverEnv(procs), self, mode, "--listen", addr)
		if err != nil {
			return started{}, nil, err
		}
		if err := supervisor.WaitTCP(p, addr); err != nil {
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
	*supervisor.Envoy
	URL string // the listener, http://127.0.0.1:PORT
}

// ExtAuthzFilter is the name of Envoy's ext_authz HTTP filter.
const ExtAuthzFilter = "envoy.filters.http.ext_authz"

// withoutFilter returns the Envoy config src with the HTTP filter name
// removed from every http_filters list and every typed_per_filter_config,
// so the same routes run without it. It fails when src has no such filter.
func withoutFilter(src []byte, name string) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("remove %s from the envoy config: %w", name, err)
	}
	if dropFilter(doc, name) == 0 {
		return nil, fmt.Errorf("remove %s from the envoy config: no such filter", name)
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("remove %s from the envoy config: %w", name, err)
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

// StartEnvoy runs Envoy (bin) with the config file at path, unless
// withAuthz without the ext_authz filter (withoutFilter), with ports for
// the clusters' ports (every other port gets a free one), with one worker
// thread, and waits until it is ready. dir holds the rendered copy.
func StartEnvoy(bin, path, dir string, ports map[int]int, withAuthz bool) (*Envoy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	name := "authz-" + filepath.Base(path)
	if !withAuthz {
		if src, err = withoutFilter(src, ExtAuthzFilter); err != nil {
			return nil, err
		}
		name = "no-authz-" + filepath.Base(path)
	}
	e, err := supervisor.StartEnvoy(bin, name, src, dir, ports)
	if err != nil {
		return nil, err
	}
	listener, ok := e.Port(envoyListener)
	if !ok {
		e.Stop()
		return nil, fmt.Errorf("envoy %s: no listener on port_value %d", path, envoyListener)
	}
	return &Envoy{Envoy: e, URL: "http://" + supervisor.Loopback(listener)}, nil
}

// envoyListener is the port of the listener in envoy/front-proxy.yaml.
const envoyListener = 10000
