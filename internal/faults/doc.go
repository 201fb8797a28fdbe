// Package faults holds floodgate's fault-injection tests: real memcached
// and floodgate processes (and Envoy) on loopback ports, broken on purpose
// while traffic flows: memcached frozen with SIGSTOP, killed and restarted,
// floodgate killed mid-window, a burst of concurrent checks over several
// replicas. The package has no code of its own; `make test` runs its tests
// with the others. Without memcached (or Envoy) they skip with one line, and
// fail under CI=true.
//
// Related tests live elsewhere: Envoy's behaviour with floodgate down, per
// shipped config, and forged X-Forwarded-For headers in envoy/envoy_test.go
// (TestFloodgateDown, TestFrontProxyForgedXFF); hostile identities in
// limiter (TestRequestorIDAndKeys, FuzzRequestorID) and authz (TestIdentity,
// FuzzCheck, FuzzCheckBytes); gRPC server limits and TLS in cmd/floodgate.
package faults
