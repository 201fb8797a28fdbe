// Command floodgate is a rate limiter for Envoy's ext_authz filter. It serves
// envoy.service.auth.v3.Authorization and grpc.health.v1 on --grpc-addr and
// /healthz, /readyz and /metrics on --admin-addr; run floodgate --help for
// its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // serving failed: a port in use, memcached misconfigured
	exitUsage  = 2 // invalid flags or environment
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		// After the first signal, restore the default handling so that a
		// second one ends a slow drain at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is floodgate's whole life: it parses the configuration, serves until
// ctx is cancelled (by SIGTERM or SIGINT in main), drains, and returns the
// process's exit status. Errors go to stderr as one "floodgate: ..." line.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check-policy" {
		return checkPolicy(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "check-rls-config" {
		return checkRLSConfig(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "inspect" {
		return inspect(ctx, args[1:], stdout, stderr)
	}
	cfg, err := ParseConfig(args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		Usage(stdout)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "floodgate: %v\n", err)
		return exitUsage
	case cfg.Version:
		fmt.Fprintf(stdout, "floodgate %s\n", Version())
		return exitOK
	}
	if err := serve(ctx, cfg, newLogger(cfg, stderr)); err != nil {
		fmt.Fprintf(stderr, "floodgate: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// newLogger returns the process logger: text or JSON on w, at cfg.LogLevel.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve wires store → limiter → authz → gRPC and the admin server, serves
// until ctx is done, then shuts down gracefully. It returns nil after a clean
// shutdown and an error when anything could not start or a server failed.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)

	stopTuning := runtimetune.Start(ctx, runtimetune.Config{OffHeap: memory.OffHeapBytes}, log)
	defer stopTuning()

	store, storeKind, closeStore, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer closeAndLog(log, storeKind+" store", closeStore)
	con, err := newConsoleSetup(cfg, store, log)
	if err != nil {
		return err
	}
	sm, err := storemetrics.New(reg)
	if err != nil {
		return fmt.Errorf("store metrics: %w", err)
	}
	if mc, ok := store.(*memcache.Store); ok {
		if err := storemetrics.RegisterPipeline(reg, mc.PipelineStats()); err != nil {
			return err
		}
		stopStats, err := startMemcacheStats(ctx, reg, mc, log)
		if err != nil {
			return err
		}
		defer stopStats()
	}
	store = sm.Wrap(store)

	newStrategy := func(name string, st limiter.Store) (limiter.Strategy, error) {
		sc := limiter.StrategyConfig{MaxClockSkew: cfg.MaxClockSkew}
		if _, private := st.(*memory.Store); private {
			sc = sc.Private() // --memory, or the per-replica fallback's
		}
		return limiter.NewStrategy(name, st, sc)
	}
	// Every strategy, on the one store: --strategy is the default, routes
	// and policy rules choose others. With memcached: a circuit breaker, and
	// the per-replica fallback.
	strategies, closeStrategy, err := resilientStrategies(cfg, storeKind, store, limiter.Strategies(), newStrategy, reg, log)
	if err != nil {
		return fmt.Errorf("limiter: %w", err)
	}
	defer closeAndLog(log, "limiter", closeStrategy) // runs before the store's Close

	var creds credentials.TransportCredentials
	if cfg.TLSCert != "" {
		tf, err := tlsfiles.New(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA, log)
		if err != nil {
			return err
		}
		if err := tf.Register(reg); err != nil {
			return fmt.Errorf("tls metrics: %w", err)
		}
		creds = tf.Credentials()
	}

	az, err := authz.NewServer(strategies[cfg.Strategy], authz.Config{
		Limit:      cfg.Limit,
		Window:     cfg.Window,
		Key:        cfg.Key,
		Headers:    cfg.Headers,
		FailMode:   cfg.FailMode,
		Logger:     log,
		Registerer: reg,
		Now:        time.Now,
		Strategy:   cfg.Strategy,
		Strategies: strategies,
		OnDenied:   con.onDenied(),

		DegradedHeaderToClient: cfg.DegradedHeaderToClient,
		ShowIdentities:         cfg.ConsoleShowIdentities,
		DegradedReasons:        []string{degradedReason, overloadReason},
	})
	if err != nil {
		return fmt.Errorf("authz server: %w", err)
	}
	stopPolicy, err := startPolicy(ctx, cfg, az, reg, con.reloadLog(log, "policy"))
	if err != nil {
		return err
	}
	defer stopPolicy()
	rlsSrv, err := newRLSServer(cfg, strategies, con.onDenied(), reg, log)
	if err != nil {
		return err
	}
	stopRLS, err := startRLSConfig(ctx, cfg, rlsSrv, reg, con.reloadLog(log, "rls"))
	if err != nil {
		return err
	}
	defer stopRLS()

	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	defer grpcLn.Close() // for the early returns; Serve owns it after that
	nofile, err := openFileLimit()
	if err != nil {
		return err
	}
	maxConns, lowered, err := grpcConnBound(cfg, nofile)
	if err != nil {
		return err
	}
	if lowered {
		log.Warn("--grpc-max-conns lowered to fit the open-file limit", "grpc_max_conns", cfg.GRPCMaxConns, "rlimit_nofile", nofile, "effective", maxConns)
	}
	limitedLn := &connLimitListener{Listener: grpcLn, max: int64(maxConns)}
	calls := grpcbound.NewCalls(int64(cfg.GRPCMaxCalls), errTooManyCalls)
	if err := registerGRPCLimitMetrics(reg, limitedLn, calls); err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("--admin-addr: %w", err)
	}
	defer adminLn.Close()
	stopConsole, err := con.serve(ctx, consoleDeps{az: az, rls: rlsSrv, reg: reg, strategies: strategies, storeKind: storeKind})
	if err != nil {
		return err
	}
	defer stopConsole()

	gs := grpc.NewServer(grpcServerOptions(cfg, creds, calls)...)
	az.Register(gs)
	rlsSrv.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(rlsv3.RateLimitService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	var draining atomic.Bool
	admin := &http.Server{
		Handler:           withPProf(adminHandler(reg, &draining), cfg.PProf),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	errc := make(chan error, 2)
	go func() {
		if err := gs.Serve(limitedLn); err != nil {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()

	log.Info("floodgate serving", append(startupAttrs(cfg, storeKind, grpcLn.Addr(), adminLn.Addr()),
		"grpc_max_conns", maxConns, "grpc_max_calls", cfg.GRPCMaxCalls, "grpc_max_recv_bytes", cfg.GRPCMaxRecvBytes)...)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx).Error(), "timeout", cfg.ShutdownTimeout.String())
	case serveErr = <-errc:
		log.Error("server failed, shutting down", "err", serveErr)
	}

	// Tell load balancers and Envoy's health checks first, then drain.
	draining.Store(true)
	hs.Shutdown()
	deadline := time.Now().Add(cfg.ShutdownTimeout)
	if !stopGRPC(gs, cfg.ShutdownTimeout) {
		log.Warn("shutdown timeout reached, closed remaining gRPC connections")
	}
	actx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
	defer cancel()
	if err := admin.Shutdown(actx); err != nil {
		admin.Close()
		log.Warn("admin server shutdown", "err", err)
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info("stopped")
	return nil
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

// adminHandler serves /healthz (the process is alive), /readyz (it takes
// traffic: 503 once draining is set) and /metrics (reg in Prometheus format).
func adminHandler(reg *prometheus.Registry, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "shutting down\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// buildInfo returns a gauge floodgate_build_info{version} that is always 1.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "floodgate_build_info",
		Help:        "Always 1; the version label is the running floodgate's.",
		ConstLabels: prometheus.Labels{"version": Version()},
	})
	g.Set(1)
	return g
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
