#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module (each func FuzzXxx in a
# _test.go file) for FUZZTIME (default 10s) each, one after the other, and
# fails when one finds a crash. `make fuzz` and CI run it.
#
# A crash is saved by Go under <package>/testdata/fuzz/<FuzzXxx>/<hash>: commit
# that file with the fix, and from then on `go test` (make test) replays it as
# a regression test. Reproduce one with
#   go test -run 'FuzzXxx/<hash>' ./<package>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${FUZZTIME:-10s}
go=${GO:-go}

# Package directory and target name of every fuzz target, outside hidden
# directories (.tools) and testdata.
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(' . \
	| grep -v -e '/\.' -e '/testdata/' \
	| sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#; s#^\./[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#. \1#' \
	| sort -u)

if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

# crashers lists the inputs Go saved for target $2 of package $1.
crashers() { ls "$1/testdata/fuzz/$2" 2>/dev/null || true; }

# fuzz_one fuzzes target $2 of package $1, and fails when it finds a crash.
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" at the end of -fuzztime, having found nothing, when its
# workers are starved (golang/go#75804, fixed in Go 1.27): such a failure,
# with no new input saved, is run once more; a second one fails.
fuzz_one() {
	local dir=$1 name=$2 before out attempt
	for attempt in 1 2; do
		before=$(crashers "$dir" "$name")
		if out=$("$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		printf '%s\n' "$out"
		if [ "$attempt" = 1 ] && [ "$(crashers "$dir" "$name")" = "$before" ] &&
			grep -q '^    context deadline exceeded$' <<<"$out"; then
			echo "fuzz: ./$dir $name stopped with Go's coordinator deadline (golang/go#75804), no input saved: once more"
			continue
		fi
		return 1
	done
	return 1
}

failed=()
while read -r dir name; do
	echo "== fuzz ./$dir $name ($fuzztime)"
	if ! fuzz_one "$dir" "$name"; then
		failed+=("./$dir $name")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: crashes found (inputs saved under testdata/fuzz) in:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $(wc -l <<<"$targets") targets, $fuzztime each: no crash"
