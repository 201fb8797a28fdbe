package main

// Tests of the gRPC listener's defences: message size and ping limits
// against the real binary, the per-call deadline cap, TLS and mutual TLS
// with certificates generated here.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// TestBinaryOversizedRequests floods floodgate with 8 MiB CheckRequests,
// twice its limit, from many streams at once: each is refused with
// RESOURCE_EXHAUSTED, well-formed checks are answered all along, and the
// process does not buffer what it refuses: 512 MiB sent leave its resident
// memory within a bound far below that.
func TestBinaryOversizedRequests(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--limit", "1000000")
	conn, err := grpc.NewClient(s.startup.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authc := authv3.NewAuthorizationClient(conn)
	big := checkRequest("198.51.100.1")
	big.Attributes.Request.Http.Headers["x-padding"] = strings.Repeat("a", 8<<20)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := authc.Check(ctx, checkRequest("198.51.100.2")); err != nil {
		t.Fatalf("Check before the flood: %v", err)
	}
	_, m := s.get(t, "/metrics")
	rssBefore := metricValue(t, m, "process_resident_memory_bytes")

	const senders, each = 16, 4
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range senders {
		wg.Go(func() {
			for range each {
				_, err := authc.Check(ctx, big)
				if status.Code(err) == codes.ResourceExhausted {
					refused.Add(1)
				} else {
					t.Errorf("oversized Check: %v, want RESOURCE_EXHAUSTED", err)
				}
			}
		})
	}
	// Well-formed checks, on the same connection, meanwhile.
	stop := make(chan struct{})
	var answered atomic.Int64
	var small sync.WaitGroup
	small.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := authc.Check(ctx, checkRequest("198.51.100.3")); err != nil {
				t.Errorf("well-formed Check during the flood: %v", err)
				return
			}
			answered.Add(1)
		}
	})
	wg.Wait()
	close(stop)
	small.Wait()

	if n := refused.Load(); n != senders*each {
		t.Errorf("%d of %d oversized checks refused", n, senders*each)
	}
	if answered.Load() == 0 {
		t.Error("no well-formed check was answered during the flood")
	}
	if _, err := authc.Check(ctx, checkRequest("198.51.100.4")); err != nil {
		t.Fatalf("Check after the flood: %v", err)
	}
	_, m = s.get(t, "/metrics")
	grew := metricValue(t, m, "process_resident_memory_bytes") - rssBefore
	t.Logf("resident memory grew by %.1f MiB while refusing %d MiB", grew/(1<<20), senders*each*8)
	if grew > 128<<20 {
		t.Errorf("resident memory grew by %.0f MiB while refusing %d MiB of oversized requests: they must not be buffered",
			grew/(1<<20), senders*each*8)
	}
}

// TestBinaryPingFlood speaks raw HTTP/2 to floodgate and sends PING frames
// back to back: floodgate's keepalive enforcement answers GOAWAY with
// ENHANCE_YOUR_CALM ("too_many_pings") and closes that connection, and
// keeps serving others.
func TestBinaryPingFlood(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	conn, err := net.DialTimeout("tcp", s.startup.GRPCAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))

	const (
		frameSettings = 0x4
		framePing     = 0x6
		frameGoAway   = 0x7
		enhanceCalm   = 0xb
	)
	frame := func(typ byte, payload []byte) []byte {
		h := make([]byte, 9, 9+len(payload))
		h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
		h[3] = typ
		return append(h, payload...)
	}
	out := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	out = append(out, frame(frameSettings, nil)...)
	for i := range 10 {
		out = append(out, frame(framePing, []byte{0, 0, 0, 0, 0, 0, 0, byte(i)})...)
	}
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	for {
		var h [9]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		payload := make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if h[3] != frameGoAway {
			continue
		}
		if len(payload) < 8 {
			t.Fatalf("GOAWAY payload of %d bytes", len(payload))
		}
		code, debug := binary.BigEndian.Uint32(payload[4:8]), string(payload[8:])
		if code != enhanceCalm || debug != "too_many_pings" {
			t.Errorf("GOAWAY code %#x %q, want ENHANCE_YOUR_CALM (0xb) \"too_many_pings\"", code, debug)
		}
		break
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(s.dial(t)).Check(ctx, checkRequest("198.51.100.5")); err != nil {
		t.Errorf("Check on another connection after the ping flood: %v", err)
	}
}

// deadlineStrategy records the deadline of each Allow's context.
type deadlineStrategy struct {
	mu    sync.Mutex
	lefts []time.Duration // time left before the deadline; -1 for none
}

func (d *deadlineStrategy) Allow(ctx context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	d.mu.Lock()
	d.lefts = append(d.lefts, left)
	d.mu.Unlock()
	return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: 1}, nil
}

// TestCheckDeadlineCap runs floodgate's gRPC server options in process: a
// Check that arrives with no deadline, or a far one, is given
// checkDeadline(cfg); a nearer one is kept.
func TestCheckDeadlineCap(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	if got := checkDeadline(cfg); got != time.Second {
		t.Errorf("checkDeadline with --memcache-timeout 100ms = %v, want 1s", got)
	}
	cfg.MemcacheTimeout = 400 * time.Millisecond
	if got := checkDeadline(cfg); got != 2*time.Second {
		t.Errorf("checkDeadline with --memcache-timeout 400ms = %v, want 2s", got)
	}

	ds := &deadlineStrategy{}
	az, err := authz.NewServer(ds, authz.Config{Limit: 10, Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c := authv3.NewAuthorizationClient(serveInProcess(t, cfg, nil, az.Register))
	checkDeadlineCap(t, ds, 2*time.Second, func(ctx context.Context) error {
		_, err := c.Check(ctx, checkRequest("198.51.100.6"))
		return err
	})
}

// checkDeadlineCap makes three calls with call: without a deadline, with
// one an hour away and with one 300ms away. It checks the time left that
// ds saw in each: at most limit in the first two, the caller's own
// deadline in the third.
func checkDeadlineCap(t *testing.T, ds *deadlineStrategy, limit time.Duration, call func(context.Context) error) {
	t.Helper()
	// Each deadline starts at its own call: the first call also dials,
	// which a loaded machine under -race can take a good part of 300ms for.
	for _, d := range []time.Duration{0, time.Hour, 300 * time.Millisecond} {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if d > 0 {
			ctx, cancel = context.WithTimeout(ctx, d)
		}
		err := call(ctx)
		cancel()
		if err != nil {
			t.Fatalf("call with deadline %v: %v", d, err)
		}
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if len(ds.lefts) != 3 {
		t.Fatalf("the strategy was asked %d times, want 3", len(ds.lefts))
	}
	for i, left := range ds.lefts[:2] {
		if left <= 0 || left > limit {
			t.Errorf("call %d (no deadline, or an hour): %v left, want at most the %v cap", i+1, left, limit)
		}
	}
	if left := ds.lefts[2]; left <= 0 || left > 300*time.Millisecond {
		t.Errorf("call with a 300ms deadline: %v left, want its own deadline kept", left)
	}
}

// tlsCheck makes one Check over TLS trusting roots, with client certificate
// cert (nil for none), on a new connection.
func tlsCheck(t *testing.T, addr string, roots *testutil.CA, cert *tls.Certificate) error {
	t.Helper()
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	cfg.RootCAs.AddCert(roots.Cert)
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return checkWith(t, addr, credentials.NewTLS(cfg))
}

// checkWith makes one Check on a new connection with creds.
func checkWith(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest("198.51.100.7"))
	return err
}

// serverName returns the common name of the certificate addr presents.
func serverName(t *testing.T, addr string, roots *testutil.CA) string {
	t.Helper()
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), NextProtos: []string{"h2"}}
	cfg.RootCAs.AddCert(roots.Cert)
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestBinaryTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, other := testutil.NewCA(t, "floodgate test CA"), testutil.NewCA(t, "another CA")
	cert, key := good.Issue(t, "floodgate", true)
	certPath, keyPath := testutil.WriteFile(t, dir, "tls.crt", cert), testutil.WriteFile(t, dir, "tls.key", key)
	s := startServer(t, "--tls-cert", certPath, "--tls-key", keyPath)
	if !strings.Contains(s.stderr.String(), `"tls":"on"`) {
		t.Error(`startup line lacks "tls":"on"`)
	}
	addr := s.startup.GRPCAddr

	if err := tlsCheck(t, addr, good, nil); err != nil {
		t.Fatalf("Check over TLS: %v", err)
	}
	if err := checkWith(t, addr, insecure.NewCredentials()); err == nil {
		t.Error("plaintext Check on the TLS listener succeeded")
	}
	if err := tlsCheck(t, addr, other, nil); err == nil {
		t.Error("Check trusting another CA succeeded")
	}

	// Rotation: new files are served on new connections, without a restart.
	// A half-done rotation (a certificate without its key) keeps the old one.
	cert2, key2 := good.Issue(t, "floodgate-rotated", true)
	testutil.WriteFile(t, dir, "tls.crt", cert2)
	if got := serverName(t, addr, good); got != "floodgate" {
		t.Errorf("after a certificate without its key: server presents %q, want the old floodgate", got)
	}
	testutil.WriteFile(t, dir, "tls.key", key2)
	if got := serverName(t, addr, good); got != "floodgate-rotated" {
		t.Errorf("after rotation: server presents %q, want floodgate-rotated", got)
	}
	if err := tlsCheck(t, addr, good, nil); err != nil {
		t.Errorf("Check after rotation: %v", err)
	}
	_, m := s.get(t, "/metrics")
	if v := metricValue(t, m, "floodgate_tls_cert_expiry_timestamp_seconds"); v < float64(time.Now().Unix()) || v > float64(time.Now().Add(2*time.Hour).Unix()) {
		t.Errorf("floodgate_tls_cert_expiry_timestamp_seconds = %v, want the test certificate's, within the next 2 hours", v)
	}
	logs := s.stderr.String()
	if !strings.Contains(logs, "TLS files changed but do not load") || !strings.Contains(logs, "TLS files reloaded") {
		t.Errorf("log lacks the failed and the successful reload:\n%s", logs)
	}
}

func TestBinaryMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, other := testutil.NewCA(t, "floodgate test CA"), testutil.NewCA(t, "another CA")
	cert, key := good.Issue(t, "floodgate", true)
	s := startServer(t,
		"--tls-cert", testutil.WriteFile(t, dir, "tls.crt", cert),
		"--tls-key", testutil.WriteFile(t, dir, "tls.key", key),
		"--tls-client-ca", testutil.WriteFile(t, dir, "ca.crt", good.PEM))
	if !strings.Contains(s.stderr.String(), `"tls":"mutual"`) {
		t.Error(`startup line lacks "tls":"mutual"`)
	}
	addr := s.startup.GRPCAddr

	pair := func(c *testutil.CA, cn string) *tls.Certificate {
		cp, kp := c.Issue(t, cn, false)
		p, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	if err := tlsCheck(t, addr, good, pair(good, "envoy")); err != nil {
		t.Fatalf("Check with a client certificate from the CA: %v", err)
	}
	if err := tlsCheck(t, addr, good, nil); err == nil {
		t.Error("Check without a client certificate succeeded under mutual TLS")
	}
	if err := tlsCheck(t, addr, good, pair(other, "intruder")); err == nil {
		t.Error("Check with a client certificate from another CA succeeded")
	}
}

func TestBinaryTLSBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := testutil.NewCA(t, "floodgate test CA")
	cert, key := good.Issue(t, "floodgate", true)
	_, otherKey := good.Issue(t, "other", true)
	certPath, keyPath := testutil.WriteFile(t, dir, "tls.crt", cert), testutil.WriteFile(t, dir, "tls.key", key)
	wrongKey, emptyKey := testutil.WriteFile(t, dir, "other.key", otherKey), testutil.WriteFile(t, dir, "empty.key", nil)
	notPEM := testutil.WriteFile(t, dir, "ca.txt", []byte("not a certificate\n"))

	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing file", []string{"--tls-cert", filepath.Join(dir, "nope.crt"), "--tls-key", wrongKey}, exitFailed,
			"floodgate: --tls-cert: stat " + filepath.Join(dir, "nope.crt") + ": no such file or directory\n"},
		{"key of another certificate", []string{"--tls-cert", certPath, "--tls-key", wrongKey}, exitFailed,
			"private key does not match public key"},
		{"empty key", []string{"--tls-cert", certPath, "--tls-key", emptyKey}, exitFailed,
			"floodgate: --tls-cert " + certPath + ", --tls-key " + emptyKey + ": tls: failed to find any PEM data in key input\n"},
		{"client CA not PEM", []string{"--tls-cert", certPath, "--tls-key", keyPath, "--tls-client-ca", notPEM}, exitFailed,
			"floodgate: --tls-client-ca " + notPEM + ": no PEM certificates found\n"},
		{"client CA missing", []string{"--tls-cert", certPath, "--tls-key", keyPath, "--tls-client-ca", filepath.Join(dir, "nope.pem")}, exitFailed,
			"floodgate: --tls-client-ca: stat " + filepath.Join(dir, "nope.pem") + ": no such file or directory\n"},
		{"cert without key", []string{"--tls-cert", certPath}, exitUsage,
			"floodgate: --tls-cert and --tls-key go together: set both or neither\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runBin(t, nil, append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.code, tt.want)
			}
		})
	}
}
