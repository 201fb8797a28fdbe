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

failed=()
while read -r dir name; do
	echo "== fuzz ./$dir $name ($fuzztime)"
	if ! "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir"; then
		failed+=("./$dir $name")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: crashes found (inputs saved under testdata/fuzz) in:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $(wc -l <<<"$targets") targets, $fuzztime each: no crash"
