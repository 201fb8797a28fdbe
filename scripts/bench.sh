#!/usr/bin/env bash
# bench.sh runs floodgate's benchmarks (`make bench`), in about six minutes:
#
#   1. the Go microbenchmarks: go test -run '^$' -bench . -benchmem ./...
#      (-benchtime $BENCHTIME, default 1s);
#   2. the load generator, cmd/floodgate-bench (internal/loadgen): Check over
#      gRPC against a no-op Authorization server (the ceiling) and against
#      the real floodgate binary on a real memcached (1, 10,000 and 100,000
#      clients) and in memory, each as a ratio to the ceiling, in three
#      rounds, each between two runs of the ceiling; in the same rounds,
#      ShouldRateLimit (RLS) against the same no-op server's RLS and against
#      floodgate on memcached (one hot descriptor, then as many distinct
#      values as clients), each as a ratio to its own ceiling, and RLS's
#      ratio over ext_authz's (issue #14: at least 0.90); floodgate's
#      resident memory after 1,000,000 distinct clients; and Envoy with
#      envoy/front-proxy.yaml at a fixed rate (1,000 requests/s): without
#      the ext_authz filter, with it on the no-op server, and with floodgate
#      allowing and denying; then the same stacks' throughput with wrk.
#
# Everything runs on loopback ports this script's programs pick, and every
# server is stopped by its PID at the end. memcached and Envoy are installed
# by scripts/deps.sh when missing, and wrk by scripts/deps.sh bench.
#
# Environment:
#   BENCHTIME      -benchtime of the microbenchmarks (default 1s)
#   BENCH_ARGS     extra flags for floodgate-bench, e.g. "--duration 10s" or
#                  "--only check,rls" (floodgate-bench --help lists them)
#   BENCH_BASELINE a git revision: also build floodgate at it and measure it
#                  in every Check scenario, for before/after numbers from one
#                  run (e.g. BENCH_BASELINE=HEAD~1)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export PATH="$root/.tools/bin:$root/.tools/venv/bin:$PATH"
go=${GO:-go}

bash scripts/deps.sh bench

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== machine"
echo "nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $("$go" version)"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== go test -run '^\$' -bench . -benchmem -benchtime ${BENCHTIME:-1s} ./..."
"$go" test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-1s}" ./... 2>&1 |
	grep -Ev '^(PASS|goos:|goarch:|cpu:)$|^(goos|goarch|cpu): |no test files|^ok ' || true
echo

"$go" build -trimpath -o "$tmp/floodgate" ./cmd/floodgate
"$go" build -trimpath -o "$tmp/floodgate-bench" ./cmd/floodgate-bench
baseline=()
if [ -n "${BENCH_BASELINE:-}" ]; then
	mkdir "$tmp/baseline"
	git archive "$BENCH_BASELINE" | tar -x -C "$tmp/baseline"
	(cd "$tmp/baseline" && "$go" build -trimpath -o "$tmp/floodgate-baseline" ./cmd/floodgate)
	baseline=(--baseline "$tmp/floodgate-baseline")
	echo "baseline: floodgate at $BENCH_BASELINE ($(git rev-parse --short "$BENCH_BASELINE"))"
fi

echo "== load generator: $tmp/floodgate-bench --floodgate <floodgate at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' with local changes')> ${baseline[*]:+--baseline <floodgate at $BENCH_BASELINE>} ${BENCH_ARGS:-}"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$tmp/floodgate-bench" --floodgate "$tmp/floodgate" "${baseline[@]}" ${BENCH_ARGS:-}
