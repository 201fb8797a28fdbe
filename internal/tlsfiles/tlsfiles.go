// Package tlsfiles serves TLS from PEM files that are rotated in place
// (cert-manager, Vault agent): a [Files] reloads the key pair and the client
// CA bundle when one of them changes, checked at each handshake, and keeps
// the previous set when the new one does not load. The standard library
// loads the files; what it lacks is the reload, and no well-kept library
// does only that (certmagic and friends also obtain certificates), so this
// package is the 150 lines between them.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// Files serves TLS for floodgate's gRPC listener from PEM files: the key
// pair --tls-cert and --tls-key and, for mutual TLS, the CA bundle
// --tls-client-ca that client certificates must chain to; errors name
// those flags. It reloads them
// when one of the files changes (by modification time or size), checked at
// each TLS handshake, so that rotated certificates (cert-manager, Vault)
// take effect on new connections without a restart. A set of files that
// does not load (a half-written rotation, a key that does not match the
// certificate) is logged and the previous one kept.
//
// It is safe for concurrent use.
type Files struct {
	cert, key, clientCA string // paths; clientCA "" for TLS without client certificates
	log                 *slog.Logger

	mu      sync.Mutex
	stamps  [3]fileStamp
	current *tls.Config
	lastErr string // the last load error logged, so each is logged once
}

// fileStamp identifies a version of a file.
type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the files once; an error names the flag at fault. clientCA ""
// serves TLS without client certificates.
func New(cert, key, clientCA string, log *slog.Logger) (*Files, error) {
	f := &Files{cert: cert, key: key, clientCA: clientCA, log: log}
	stamps, err := f.stat()
	if err != nil {
		return nil, err
	}
	cfg, err := f.load()
	if err != nil {
		return nil, err
	}
	f.stamps, f.current = stamps, cfg
	return f, nil
}

// NotAfter returns when the certificate being served expires.
func (f *Files) NotAfter() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current.Certificates[0].Leaf.NotAfter
}

// Register registers floodgate_tls_cert_expiry_timestamp_seconds: when the
// certificate being served expires, for an alert well before it does.
func (f *Files) Register(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "floodgate_tls_cert_expiry_timestamp_seconds",
		Help: "Unix time at which the gRPC listener's certificate (--tls-cert, as last loaded) expires.",
	}, func() float64 { return float64(f.NotAfter().Unix()) }))
}

// Credentials returns gRPC transport credentials that use the current files
// for every handshake.
func (f *Files) Credentials() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.Config(), nil
		},
	})
}

// Config returns the tls.Config of the current files, reloading them first
// when they changed.
func (f *Files) Config() *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamps, err := f.stat()
	if err == nil && stamps == f.stamps {
		return f.current
	}
	var cfg *tls.Config
	if err == nil {
		cfg, err = f.load()
	}
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			f.log.Warn("TLS files changed but do not load, keeping the previous certificate", "error", err)
		}
		return f.current
	}
	f.stamps, f.current, f.lastErr = stamps, cfg, ""
	f.log.Info("TLS files reloaded", "tls_cert", f.cert, "tls_client_ca", f.clientCA, "not_after", cfg.Certificates[0].Leaf.NotAfter)
	return cfg
}

// stat returns the stamps of the files.
func (f *Files) stat() ([3]fileStamp, error) {
	var s [3]fileStamp
	for i, p := range []struct{ flag, path string }{{"--tls-cert", f.cert}, {"--tls-key", f.key}, {"--tls-client-ca", f.clientCA}} {
		if p.path == "" {
			continue
		}
		fi, err := os.Stat(p.path)
		if err != nil {
			return s, fmt.Errorf("%s: %w", p.flag, err)
		}
		s[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return s, nil
}

// load reads the files into a server tls.Config.
func (f *Files) load() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.cert, f.key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"h2"},
	}
	if f.clientCA == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(f.clientCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-client-ca %s: %w", f.clientCA, errNoCertificates)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return cfg, nil
}

var errNoCertificates = errors.New("no PEM certificates found")
