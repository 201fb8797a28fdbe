package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fgtest "github.com/floodgate-rl/floodgate/internal/testutil"
)

// rig is a TLS listener on loopback serving a Files from a directory.
type rig struct {
	ca         *fgtest.CA
	dir        string
	cert, key  string
	f          *Files
	addr       string
	logs       *bytes.Buffer
	generation int // bumps the files' modification time on each write
}

func newRig(t *testing.T, clientCA bool) *rig {
	t.Helper()
	r := &rig{ca: fgtest.NewCA(t, "test CA"), dir: t.TempDir(), logs: &bytes.Buffer{}}
	r.write(t, "a")
	var caPath string
	if clientCA {
		caPath = fgtest.WriteFile(t, r.dir, "ca.pem", r.ca.PEM)
	}
	f, err := New(r.cert, r.key, caPath, slog.New(slog.NewTextHandler(r.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.f = f
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r.addr = ln.Addr().String()
	srv := tls.NewListener(ln, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return f.Config(), nil }})
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				c.Write([]byte("x")) // the client's read ends a TLS 1.3 handshake
			}()
		}
	}()
	return r
}

// write writes a server certificate for cn and its key, with a modification
// time later than any before.
func (r *rig) write(t *testing.T, cn string) {
	t.Helper()
	cert, key := r.ca.Issue(t, cn, true)
	r.writeFiles(t, cert, key)
}

func (r *rig) writeFiles(t *testing.T, cert, key []byte) {
	t.Helper()
	r.generation++
	mod := time.Now().Add(time.Duration(r.generation) * time.Second)
	r.cert = fgtest.WriteFile(t, r.dir, "cert.pem", cert)
	r.key = fgtest.WriteFile(t, r.dir, "key.pem", key)
	for _, p := range []string{r.cert, r.key} {
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

// served returns the common name of the certificate a handshake gets, or
// the handshake's error.
func (r *rig) served(t *testing.T, clientCert *tls.Certificate) (string, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(r.ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// TestRotation: a rotated key pair is served from the next handshake on; a
// rotation that does not load (a certificate without its key yet) keeps the
// previous pair and is logged once; the completed rotation is then served.
func TestRotation(t *testing.T) {
	r := newRig(t, false)
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"first files", func() {}, "a"},
		{"rotated", func() { r.write(t, "b") }, "b"},
		{"unchanged", func() {}, "b"},
		{"half-written: a new certificate, the old key", func() {
			cert, _ := r.ca.Issue(t, "c", true)
			old, err := os.ReadFile(r.key)
			if err != nil {
				t.Fatal(err)
			}
			r.writeFiles(t, cert, old)
		}, "b"},
		{"still half-written", func() {}, "b"},
		{"completed", func() { r.write(t, "c") }, "c"},
	}
	for _, s := range steps {
		s.change()
		got, err := r.served(t, nil)
		if err != nil || got != s.want {
			t.Fatalf("%s: served %q, %v; want %q", s.name, got, err, s.want)
		}
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "TLS files changed but do not load"); n != 1 {
		t.Errorf("%d warnings of the half-written rotation, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "TLS files reloaded"); n != 2 {
		t.Errorf("%d reloads logged, want 2:\n%s", n, logs)
	}
}

// TestClientCA: with a client CA, a client without a certificate is refused
// and one with a certificate of that CA is served.
func TestClientCA(t *testing.T) {
	r := newRig(t, true)
	if _, err := r.served(t, nil); err == nil {
		t.Error("a client without a certificate was served")
	}
	certPEM, keyPEM := r.ca.Issue(t, "envoy", false)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.served(t, &pair); err != nil || got != "a" {
		t.Errorf("client with a certificate: %q, %v", got, err)
	}
	other := fgtest.NewCA(t, "other CA")
	certPEM, keyPEM = other.Issue(t, "intruder", false)
	if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := r.served(t, &pair); err == nil {
		t.Error("a client with another CA's certificate was served")
	}
}

// TestNewErrors: every file that does not load is named by its flag.
func TestNewErrors(t *testing.T) {
	ca := fgtest.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, "a", true)
	certPath, keyPath := fgtest.WriteFile(t, dir, "cert.pem", cert), fgtest.WriteFile(t, dir, "key.pem", key)
	notPEM := fgtest.WriteFile(t, dir, "ca.pem", []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, cert, key, ca string
		want                string
	}{
		{"no certificate file", missing, keyPath, "", "--tls-cert: stat " + missing},
		{"no key file", certPath, missing, "", "--tls-key: stat " + missing},
		{"no CA file", certPath, keyPath, missing, "--tls-client-ca: stat " + missing},
		{"key of another certificate", certPath, notPEM, "", "--tls-cert " + certPath + ", --tls-key " + notPEM},
		{"CA file without certificates", certPath, keyPath, notPEM, "--tls-client-ca " + notPEM + ": no PEM certificates found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cert, tc.key, tc.ca, slog.New(slog.DiscardHandler))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error starting %q", err, tc.want)
			}
		})
	}
	if _, err := New(certPath, keyPath, notPEM, slog.New(slog.DiscardHandler)); !errors.Is(err, errNoCertificates) {
		t.Errorf("CA without certificates: %v does not wrap errNoCertificates", err)
	}
}

// TestRegister: the expiry gauge is the served certificate's NotAfter.
func TestRegister(t *testing.T) {
	r := newRig(t, false)
	reg := prometheus.NewPedanticRegistry()
	if err := r.f.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := float64(r.f.NotAfter().Unix())
	if want <= float64(time.Now().Unix()) {
		t.Fatalf("NotAfter %v is not in the future", r.f.NotAfter())
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "floodgate_tls_cert_expiry_timestamp_seconds" {
		t.Fatalf("gathered %v, %v; want the one expiry gauge", mfs, err)
	}
	if got := mfs[0].GetMetric()[0].GetGauge().GetValue(); got != want {
		t.Errorf("floodgate_tls_cert_expiry_timestamp_seconds = %v, want %v", got, want)
	}
}
