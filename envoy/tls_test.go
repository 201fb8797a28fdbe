package envoy_test

import (
	"fmt"
	"testing"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// tlsCluster is what front-proxy.yaml's floodgate cluster gains for mutual
// TLS, as docs/operations.md describes: Envoy presents a client
// certificate and checks floodgate's against the CA.
const tlsCluster = `    connect_timeout: 0.25s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: {filename: %q}
            private_key: {filename: %q}
          validation_context:
            trusted_ca: {filename: %q}
            match_typed_subject_alt_names:
            - san_type: IP_ADDRESS
              matcher: {exact: 127.0.0.1}
    typed_extension_protocol_options:`

// TestFrontProxyMutualTLS runs front-proxy.yaml with its floodgate cluster
// on mutual TLS to a floodgate started with --tls-cert, --tls-key and
// --tls-client-ca: checks are answered (rate-limit headers, then a 429),
// and Envoy counts no ext_authz error.
func TestFrontProxyMutualTLS(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	ca := testutil.NewCA(t, "floodgate test CA")
	srvCert, srvKey := ca.Issue(t, "floodgate", true)
	cliCert, cliKey := ca.Issue(t, "envoy", false)
	caPath := testutil.WriteFile(t, dir, "ca.crt", ca.PEM)
	fg := testutil.StartFloodgate(t, "--limit", "2",
		"--tls-cert", testutil.WriteFile(t, dir, "tls.crt", srvCert),
		"--tls-key", testutil.WriteFile(t, dir, "tls.key", srvKey),
		"--tls-client-ca", caPath)
	cfg := rewriteConfig(t, "front-proxy.yaml",
		"    connect_timeout: 0.25s\n    typed_extension_protocol_options:",
		fmt.Sprintf(tlsCluster, testutil.WriteFile(t, dir, "envoy.crt", cliCert), testutil.WriteFile(t, dir, "envoy.key", cliKey), caPath))
	e := startEdge(t, cfg, fg)

	e.c.useQuota(t, e.base+"/", nil, "default", 2, 3600)
	checkStat(t, e.envoy, "http.edge.ext_authz.error", 0, "")
}
