#!/usr/bin/env bash
# run-stack.sh runs floodgate's local stack in the foreground (`make run`):
#
#   Envoy with envoy/front-proxy.yaml   :10000 (admin 127.0.0.1:9901)
#   floodgate (bin/floodgate)           gRPC 127.0.0.1:9001, admin 127.0.0.1:9090
#   a tiny upstream app                 127.0.0.1:8080 (scripts/upstream.py)
#
# floodgate counts in memory unless FLOODGATE_MEMCACHE_SERVERS is set
# (host:port,...); every other FLOODGATE_* variable works too, e.g.
# FLOODGATE_LIMIT=5 make run. Arguments are passed on to floodgate
# (run-stack.sh --limit 5). Ctrl-C stops all three; if one of them exits, the
# others are stopped as well.
#
# Environment: FLOODGATE_BIN (default bin/floodgate), FLOODGATE_ENVOY (default:
# .tools/bin/envoy, .tools/venv/bin/envoy, then envoy in PATH).
set -euo pipefail

cd "$(dirname "$0")/.."

FLOODGATE_BIN=${FLOODGATE_BIN:-bin/floodgate}
ENVOY_CONFIG=envoy/front-proxy.yaml

die() { echo "run-stack: $*" >&2; exit 1; }

find_envoy() {
	if [[ -n ${FLOODGATE_ENVOY:-} ]]; then
		[[ -x $FLOODGATE_ENVOY ]] || die "FLOODGATE_ENVOY=$FLOODGATE_ENVOY is not executable"
		echo "$FLOODGATE_ENVOY"
		return
	fi
	local p
	for p in .tools/bin/envoy .tools/venv/bin/envoy; do
		if [[ -x $p ]]; then
			echo "$p"
			return
		fi
	done
	command -v envoy || die "envoy not found: run \`make deps\` (installs it into .tools/) or set FLOODGATE_ENVOY"
}

[[ -x $FLOODGATE_BIN ]] || die "$FLOODGATE_BIN not found: run \`make build\` first"
command -v python3 >/dev/null || die "python3 not found (it runs the upstream app, scripts/upstream.py)"
ENVOY=$(find_envoy)

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in 10000 9901 9001 9090 8080; do
	if port_in_use "$port"; then
		die "port $port is in use; stop what listens there (another \`make run\`?) and try again"
	fi
done

# The PIDs this script started, and their names; cleanup kills exactly these.
pids=()
names=()

cleanup() {
	trap - INT TERM EXIT
	local i
	for i in "${!pids[@]}"; do
		kill -TERM "${pids[$i]}" 2>/dev/null || true
	done
	# Give them 5 seconds to shut down gracefully, then kill what is left.
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		local alive=0
		for i in "${!pids[@]}"; do
			if kill -0 "${pids[$i]}" 2>/dev/null; then alive=1; fi
		done
		((alive)) || break
		sleep 0.5
	done
	for i in "${!pids[@]}"; do
		kill -KILL "${pids[$i]}" 2>/dev/null || true
		wait "${pids[$i]}" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'echo; echo "run-stack: stopping"; exit 0' INT TERM

# start NAME COMMAND...: runs COMMAND in the background and records its PID.
# Every command here is a single executable (or execs into one), so the PID
# is the server's own.
start() {
	local name=$1
	shift
	"$@" &
	pids+=("$!")
	names+=("$name")
}

# wait_http NAME URL PID: waits up to 20 seconds until URL answers 200, and
# gives up at once when process PID exits.
wait_http() {
	local name=$1 url=$2 pid=$3
	python3 - "$url" "$pid" <<-'EOF' || die "$name did not become ready ($url)"
		import os, sys, time, urllib.request
		url, pid = sys.argv[1], int(sys.argv[2])
		deadline = time.time() + 20
		while True:
		    try:
		        with urllib.request.urlopen(url, timeout=1) as r:
		            if r.status == 200:
		                sys.exit(0)
		    except Exception:
		        pass
		    try:
		        os.kill(pid, 0)
		    except ProcessLookupError:
		        sys.exit(1)
		    if time.time() > deadline:
		        sys.exit(1)
		    time.sleep(0.1)
	EOF
}

if [[ -n ${FLOODGATE_MEMCACHE_SERVERS:-} ]]; then
	store="memcached at $FLOODGATE_MEMCACHE_SERVERS"
else
	store="in memory (set FLOODGATE_MEMCACHE_SERVERS=host:port to count in memcached)"
fi

start upstream python3 scripts/upstream.py --host 127.0.0.1 --port 8080
start floodgate "$FLOODGATE_BIN" --grpc-addr 127.0.0.1:9001 --admin-addr 127.0.0.1:9090 "$@"
# Hot restart is off, so this Envoy needs no shared memory and cannot clash
# with another Envoy on this machine.
start envoy "$ENVOY" -c "$ENVOY_CONFIG" -l warning --disable-hot-restart

wait_http upstream http://127.0.0.1:8080/ "${pids[0]}"
wait_http floodgate http://127.0.0.1:9090/readyz "${pids[1]}"
wait_http envoy http://127.0.0.1:9901/ready "${pids[2]}"

cat <<EOF

floodgate local stack is running:
  Envoy      http://localhost:10000    $ENVOY_CONFIG, admin http://127.0.0.1:9901
  floodgate  127.0.0.1:9001 (gRPC)     admin http://127.0.0.1:9090 (/healthz /readyz /metrics)
  store      $store
  upstream   http://127.0.0.1:8080     scripts/upstream.py

Try it (the 101st request within an hour gets 429):
  curl -i localhost:10000/
  for i in \$(seq 101); do curl -s -o /dev/null -w '%{http_code}\n' localhost:10000/; done | uniq -c

Press Ctrl-C to stop.
EOF

# Run until Ctrl-C, or until one of the processes exits.
while true; do
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			status=0
			wait "${pids[$i]}" || status=$?
			# Ctrl-C reaches every process of the terminal's group at once;
			# one that stopped cleanly is a shutdown, not a failure.
			((status == 0)) && { echo "run-stack: ${names[$i]} stopped; stopping the stack"; exit 0; }
			die "${names[$i]} exited (status $status); stopping the stack"
		fi
	done
	sleep 1 &
	wait $! || true
done
