#!/usr/bin/env bash
# soak.sh runs floodgate's soak test (internal/soak): two floodgate replicas
# on a real memcached under mixed load for SOAK_DURATION (default 10m), with
# memcached restarted, frozen or stopped every minute. It prints the
# replicas' goroutines and resident memory (go_goroutines and
# process_resident_memory_bytes from /metrics) at the start and the end, and
# fails when they grew or when any check failed. `make soak` runs it; CI does
# not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.tools/bin:$PWD/.tools/venv/bin:$PATH"

duration=${SOAK_DURATION:-10m}
go=${GO:-go}

# The test's own timeout: the soak plus a margin for the build and faults.
minutes=$(awk -v d="$duration" 'BEGIN {
	n = d + 0
	if (d ~ /h$/) n *= 60; else if (d ~ /s$/ && d !~ /ms$/) n /= 60
	printf "%d", n + 10 }')

echo "soak: $duration of mixed load with memcached faults (go test ./internal/soak, timeout ${minutes}m)"
FLOODGATE_SOAK=$duration exec "$go" test -run '^TestSoak$' -count=1 -v -timeout "${minutes}m" ./internal/soak
