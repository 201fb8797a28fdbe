package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/grpcbound"
	"github.com/floodgate-rl/floodgate/internal/runtimetune"
	"github.com/floodgate-rl/floodgate/internal/tlsfiles"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/storemetrics"
	"github.com/floodgate-rl/floodgate/policy"
	"github.com/floodgate-rl/floodgate/rls"
)

// Main is one floodgate server's life, from a parsed Config to its last log
// line: [Main.Start] wires store → limiter → authz and rls → gRPC, and the
// admin server and the console, and starts serving; [Main.Wait] serves
// until its context is done or a server fails, then shuts down gracefully
// and releases everything Start opened. The binary runs one through
// [Main.Run]; tests run them in their own process the same way.
//
// A Main serves once. Start, Wait and Run are for one goroutine; the
// address methods are safe for concurrent use once Start has returned nil.
type Main struct {
	// SkipRuntimeTuning leaves the Go runtime's memory limit and garbage
	// collector percent alone (see runtimetune) where the process is not
	// floodgate's alone: those knobs are process-wide, and the Mains of a
	// test process would set them all at once. The zero value tunes them,
	// as the binary does.
	SkipRuntimeTuning bool

	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	closers   []func() // what Start opened, released last first
	storeKind string   // "memcache" or "memory"
	creds     credentials.TransportCredentials

	grpcLn   *connLimitListener
	calls    *grpcbound.Calls
	maxConns int
	adminLn  net.Listener

	grpc     *grpc.Server
	health   *health.Server
	admin    *http.Server
	draining atomic.Bool
	errc     chan error // a server's failure
}

// NewMain returns the server of cfg, logging to logs in cfg's log format
// and level. It opens nothing until Start.
func NewMain(cfg Config, logs io.Writer) *Main {
	return &Main{cfg: cfg, log: newLogger(cfg, logs), errc: make(chan error, 2)}
}

// Run starts m and serves until ctx is done (floodgate's main cancels it on
// SIGTERM or SIGINT) or a server fails, then drains. It returns nil after a
// clean shutdown and an error when anything could not start or a server
// failed.
func (m *Main) Run(ctx context.Context) error {
	if err := m.Start(ctx); err != nil {
		return err
	}
	return m.Wait(ctx)
}

// Start opens the store, builds the strategies and the services, starts
// the policy and RLS reloaders, binds the gRPC and admin listeners, starts
// the console, and serves on the listeners in the background; it returns
// once the "floodgate serving" line is logged. The reloaders, the console
// and the store's background work run until ctx is done or Wait returns;
// pass Wait the same ctx. When Start fails it has released what it opened.
func (m *Main) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.release()
		}
	}()
	m.reg = newRegistry()
	if !m.SkipRuntimeTuning {
		m.onRelease(runtimetune.Start(ctx, runtimetune.Config{OffHeap: memory.OffHeapBytes}, m.log))
	}
	store, err := m.openStore()
	if err != nil {
		return err
	}
	con, err := newConsoleSetup(m.cfg, store, m.log)
	if err != nil {
		return err
	}
	if store, err = m.instrument(ctx, store); err != nil {
		return err
	}
	strategies, err := m.strategies(store)
	if err != nil {
		return err
	}
	if err := m.loadTLS(); err != nil {
		return err
	}
	az, rlsSrv, err := m.services(ctx, strategies, con)
	if err != nil {
		return err
	}
	if err := m.listen(); err != nil {
		return err
	}
	stopConsole, err := con.serve(ctx, consoleDeps{az: az, rls: rlsSrv, reg: m.reg, strategies: strategies, storeKind: m.storeKind})
	if err != nil {
		return err
	}
	m.onRelease(stopConsole)
	m.serve(az, rlsSrv)
	return nil
}

// GRPCAddr is the address the gRPC listener is bound to: --grpc-addr, with
// the port the system chose for port 0. Only after Start.
func (m *Main) GRPCAddr() net.Addr { return m.grpcLn.Addr() }

// AdminAddr is the address the admin listener is bound to, as GRPCAddr.
func (m *Main) AdminAddr() net.Addr { return m.adminLn.Addr() }

// Wait serves until ctx is done or a server fails, then shuts down: it
// reports NOT_SERVING to health checks and 503 on /readyz, lets the
// in-flight RPCs finish within --shutdown-timeout, stops the admin server
// and releases what Start opened. It returns the server's failure, if one
// failed, and nil otherwise. Call it once, after Start returned nil.
func (m *Main) Wait(ctx context.Context) error {
	defer m.release()
	var serveErr error
	select {
	case <-ctx.Done():
		m.log.Info("shutting down", "cause", context.Cause(ctx).Error(), "timeout", m.cfg.ShutdownTimeout.String())
	case serveErr = <-m.errc:
		m.log.Error("server failed, shutting down", "err", serveErr)
	}
	m.drain()
	if serveErr != nil {
		return serveErr
	}
	m.log.Info("stopped")
	return nil
}

// onRelease adds fn to what release undoes.
func (m *Main) onRelease(fn func()) { m.closers = append(m.closers, fn) }

// release undoes what Start did, last first: the console, the listeners,
// the reloaders, the strategies, the store's metrics and then the store,
// the runtime tuning.
func (m *Main) release() {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	m.closers = nil
}

// newRegistry returns the registry of the process's metrics, with the Go
// runtime's, the process's and floodgate_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	return reg
}

// openStore opens the counter store the configuration asks for: memcached
// when servers are given, else the embedded in-memory store.
func (m *Main) openStore() (limiter.Store, error) {
	store, kind, closeStore, err := openStore(m.cfg, m.log)
	if err != nil {
		return nil, err
	}
	m.storeKind = kind
	m.onRelease(func() { closeAndLog(m.log, kind+" store", closeStore) })
	return store, nil
}

// instrument returns store wrapped in the store metrics; with memcached it
// also registers the pipeline's metrics and starts polling the servers'
// stats.
func (m *Main) instrument(ctx context.Context, store limiter.Store) (limiter.Store, error) {
	sm, err := storemetrics.New(m.reg)
	if err != nil {
		return nil, fmt.Errorf("store metrics: %w", err)
	}
	if mc, ok := store.(*memcache.Store); ok {
		if err := storemetrics.RegisterPipeline(m.reg, mc.PipelineStats()); err != nil {
			return nil, err
		}
		stopStats, err := startMemcacheStats(ctx, m.reg, mc, m.log)
		if err != nil {
			return nil, err
		}
		m.onRelease(stopStats)
	}
	return sm.Wrap(store), nil
}

// strategies returns every strategy, on the one store: --strategy is the
// default, routes and policy rules choose others. With memcached: a
// circuit breaker, and the per-replica fallback.
func (m *Main) strategies(store limiter.Store) (map[string]limiter.Strategy, error) {
	newStrategy := func(name string, st limiter.Store, private bool) (limiter.Strategy, error) {
		sc := limiter.StrategyConfig{MaxClockSkew: m.cfg.MaxClockSkew}
		if private {
			sc = sc.Private() // --memory, or the per-replica fallback's
		}
		return limiter.NewStrategy(name, st, sc)
	}
	strategies, closeStrategy, err := resilientStrategies(m.cfg, m.storeKind, store, limiter.Strategies(), newStrategy, m.reg, m.log)
	if err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	m.onRelease(func() { closeAndLog(m.log, "limiter", closeStrategy) }) // runs before the store's Close
	return strategies, nil
}

// loadTLS loads --tls-cert and --tls-key (and --tls-client-ca), which are then
// reloaded on rotation, into the gRPC server's credentials; without
// --tls-cert the server is plaintext.
func (m *Main) loadTLS() error {
	if m.cfg.TLSCert == "" {
		return nil
	}
	tf, err := tlsfiles.New(m.cfg.TLSCert, m.cfg.TLSKey, m.cfg.TLSClientCA, m.log)
	if err != nil {
		return err
	}
	if err := tf.Register(m.reg); err != nil {
		return fmt.Errorf("tls metrics: %w", err)
	}
	m.creds = tf.Credentials()
	return nil
}

// services builds the ext_authz and rate limit services on strategies, and
// starts reloading the policy and the RLS configuration into them.
func (m *Main) services(ctx context.Context, strategies map[string]limiter.Strategy, con *consoleSetup) (*authz.Server, *rls.Server, error) {
	cfg := m.cfg
	az, err := authz.NewServer(strategies[cfg.Strategy], authz.Config{
		Limit:      cfg.Limit,
		Window:     cfg.Window,
		Key:        cfg.Key,
		Headers:    cfg.Headers,
		FailMode:   cfg.FailMode,
		Logger:     m.log,
		Registerer: m.reg,
		Now:        time.Now,
		Strategy:   cfg.Strategy,
		Strategies: strategies,
		OnDenied:   con.onDenied(),

		DegradedHeaderToClient: cfg.DegradedHeaderToClient,
		ShowIdentities:         cfg.ConsoleShowIdentities,
		DegradedReasons:        []string{degradedReason, overloadReason},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("authz server: %w", err)
	}
	stopPolicy, err := startPolicy(ctx, cfg, az, m.reg, con.reloadLog(m.log, "policy"))
	if err != nil {
		return nil, nil, err
	}
	m.onRelease(stopPolicy)
	rlsSrv, err := newRLSServer(cfg, strategies, con.onDenied(), m.reg, m.log)
	if err != nil {
		return nil, nil, err
	}
	stopRLS, err := startRLSConfig(ctx, cfg, rlsSrv, m.reg, con.reloadLog(m.log, "rls"))
	if err != nil {
		return nil, nil, err
	}
	m.onRelease(stopRLS)
	return az, rlsSrv, nil
}

// listen binds the gRPC listener, within its bounds on connections (lowered
// to fit the open-file limit) and on calls, and the admin listener.
func (m *Main) listen() error {
	ln, err := net.Listen("tcp", m.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	m.onRelease(func() { ln.Close() }) // for a failed Start; Serve owns it after that
	nofile, err := openFileLimit()
	if err != nil {
		return err
	}
	maxConns, lowered, err := grpcConnBound(m.cfg, nofile)
	if err != nil {
		return err
	}
	if lowered {
		m.log.Warn("--grpc-max-conns lowered to fit the open-file limit", "grpc_max_conns", m.cfg.GRPCMaxConns, "rlimit_nofile", nofile, "effective", maxConns)
	}
	m.maxConns = maxConns
	m.grpcLn = &connLimitListener{Listener: ln, max: int64(maxConns)}
	m.calls = grpcbound.NewCalls(int64(m.cfg.GRPCMaxCalls), errTooManyCalls)
	if err := registerGRPCLimitMetrics(m.reg, m.grpcLn, m.calls); err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", m.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("--admin-addr: %w", err)
	}
	m.onRelease(func() { adminLn.Close() })
	m.adminLn = adminLn
	return nil
}

// serve builds the gRPC server (ext_authz, the rate limit service and
// health) and the admin server, serves them on the listeners in the
// background, and logs the startup line.
func (m *Main) serve(az *authz.Server, rlsSrv *rls.Server) {
	m.grpc = grpc.NewServer(grpcServerOptions(m.cfg, m.creds, m.calls)...)
	az.Register(m.grpc)
	rlsSrv.Register(m.grpc)
	m.health = health.NewServer()
	healthpb.RegisterHealthServer(m.grpc, m.health)
	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName, rlsv3.RateLimitService_ServiceDesc.ServiceName} {
		m.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	m.admin = &http.Server{
		Handler:           withPProf(adminHandler(m.reg, &m.draining), m.cfg.PProf),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := m.grpc.Serve(m.grpcLn); err != nil {
			m.errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		if err := m.admin.Serve(m.adminLn); !errors.Is(err, http.ErrServerClosed) {
			m.errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	m.log.Info("floodgate serving", append(startupAttrs(m.cfg, m.storeKind, m.GRPCAddr(), m.AdminAddr()),
		"grpc_max_conns", m.maxConns, "grpc_max_calls", m.cfg.GRPCMaxCalls, "grpc_max_recv_bytes", m.cfg.GRPCMaxRecvBytes)...)
}

// drain tells load balancers and Envoy's health checks first, then lets
// the in-flight RPCs finish within --shutdown-timeout, then stops the admin
// server.
func (m *Main) drain() {
	m.draining.Store(true)
	m.health.Shutdown()
	deadline := time.Now().Add(m.cfg.ShutdownTimeout)
	if !stopGRPC(m.grpc, m.cfg.ShutdownTimeout) {
		m.log.Warn("shutdown timeout reached, closed remaining gRPC connections")
	}
	actx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
	defer cancel()
	if err := m.admin.Shutdown(actx); err != nil {
		m.admin.Close()
		m.log.Warn("admin server shutdown", "err", err)
	}
}

// newLogger returns the process logger: text or JSON on w, at cfg.LogLevel.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openStore returns the counter store cfg asks for: memcached when servers
// are given, else the embedded in-memory store. kind ("memcache" or
// "memory") names it in logs; closeFn releases it.
func openStore(cfg Config, log *slog.Logger) (store limiter.Store, kind string, closeFn func() error, err error) {
	if len(cfg.MemcacheServers) == 0 {
		mem := memory.New(time.Now)
		return mem, "memory", mem.Close, nil
	}
	mc, err := memcache.New(cfg.MemcacheServers, memcache.Config{Timeout: cfg.MemcacheTimeout, MaxConns: cfg.MemcacheMaxConns, Logger: log})
	if err != nil {
		return nil, "", nil, fmt.Errorf("open memcache store: %w", err)
	}
	return mc, "memcache", mc.Close, nil
}

// startupAttrs are the attributes of the startup log line: the listening
// addresses and the effective configuration.
func startupAttrs(cfg Config, storeKind string, grpcAddr, adminAddr net.Addr) []any {
	attrs := []any{
		"version", Version(),
		"grpc_addr", grpcAddr.String(),
		"admin_addr", adminAddr.String(),
		"store", storeKind,
	}
	if storeKind == "memcache" {
		attrs = append(attrs,
			"memcache_servers", strings.Join(cfg.MemcacheServers, ","),
			"memcache_timeout", cfg.MemcacheTimeout.String(),
			"memcache_max_conns", cfg.MemcacheMaxConns,
			"max_clock_skew", maxClockSkew(cfg))
	}
	attrs = append(attrs,
		"limit", cfg.Limit,
		"window", policy.FormatDuration(cfg.Window),
		"key", cfg.Key.String(),
		"strategy", cfg.Strategy)
	if cfg.Policy != nil {
		attrs = append(attrs, "policy", cfg.PolicyFile, "policy_rules", len(cfg.Policy.Rules), "policy_sha256", shortDigest(cfg.Policy.Digest))
	}
	attrs = append(attrs, rlsAttrs(cfg)...)
	if cfg.Key.String() == "xff" {
		attrs = append(attrs, "xff_trusted_hops", cfg.XFFTrustedHops)
	}
	return append(attrs,
		"fail_mode", cfg.FailModeName(),
		"tls", tlsMode(cfg),
		"headers", cfg.Headers,
		"shutdown_timeout", cfg.ShutdownTimeout.String())
}

// tlsMode describes the gRPC listener's security for the startup line:
// "off", "on" or "mutual".
func tlsMode(cfg Config) string {
	switch {
	case cfg.TLSClientCA != "":
		return "mutual"
	case cfg.TLSCert != "":
		return "on"
	}
	return "off"
}

// stopGRPC stops gs gracefully, letting in-flight RPCs finish, and forcibly
// once timeout has passed. It reports whether the graceful stop finished in
// time.
func stopGRPC(gs *grpc.Server, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		gs.Stop()
		<-done
		return false
	}
}

// closeAndLog calls closeFn and logs its error, if any; for defers.
func closeAndLog(log *slog.Logger, what string, closeFn func() error) {
	if err := closeFn(); err != nil {
		log.Warn("close "+what, "err", err)
	}
}

// maxClockSkew is --max-clock-skew as given: Config keeps "none" as -1.
func maxClockSkew(cfg Config) string {
	return max(cfg.MaxClockSkew, 0).String()
}
