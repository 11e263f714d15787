#!/usr/bin/env bash
# bench.sh — run every benchmark of the repository and the scale command,
# and write BENCHMARKS.md.
#
#   scripts/bench.sh                         # defaults: COUNT=10 BENCHTIME=300ms
#   COUNT=20 BENCHTIME=1s scripts/bench.sh   # more rounds, longer each
#   OUT=/tmp/B.md scripts/bench.sh           # write the report elsewhere
#
# Steps: go test -bench over ./... of every Go module, COUNT rounds of
# -benchtime each; a benchstat summary (benchstat is installed, pinned, when it
# is neither on PATH nor in $(go env GOPATH)/bin); go run ./cmd/stagescale
# -json (10,000 idle stages per scenario, 100,000 concurrent Runs); then
# scripts/benchreport turns it all into BENCHMARKS.md: the machine, every
# figure with its ratio to a same-run baseline, allocations, every target
# of the issues met or missed, and how to reproduce. About 3 minutes on 2
# cores with the defaults. Not run by CI. The raw outputs stay in a
# temporary directory, printed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."

COUNT="${COUNT:-10}"
BENCHTIME="${BENCHTIME:-300ms}"
OUT="${OUT:-BENCHMARKS.md}"
# Keep in step with benchstatVersion in scripts/benchreport/main.go.
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/stagefsm-bench.XXXXXX")

benchstat=$(command -v benchstat || true)
if [[ -z "$benchstat" ]]; then
	benchstat="$(go env GOPATH)/bin/benchstat"
	if [[ ! -x "$benchstat" ]]; then
		echo "installing benchstat@$BENCHSTAT_VERSION ..." >&2
		go install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION"
	fi
fi

cpu_model() {
	if [[ -r /proc/cpuinfo ]]; then
		grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'
	elif command -v sysctl >/dev/null; then
		sysctl -n machdep.cpu.brand_string 2>/dev/null || sysctl -n hw.model
	else
		echo unknown CPU
	fi
}
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
machine="$(cpu_model), $cores cores, $(uname -s) $(uname -m)"
goversion=$(go env GOVERSION)
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- . ":(exclude)$OUT" 2>/dev/null; then
	commit="$commit with uncommitted changes"
fi

# Every Go module of the repository (as .ci/run checks them), each with
# ./... . The runs go in rounds — every benchmark once per round, COUNT
# rounds — rather than -count COUNT, which runs each benchmark COUNT times
# in a row: a benchmark and its baseline are then measured minutes apart on
# a machine whose load drifts, while within a round they run seconds apart,
# and the report takes the median of the per-round ratios.
modules=$(find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
: > "$work/bench.txt"
for round in $(seq 1 "$COUNT"); do
	for m in $modules; do
		echo "== round $round/$COUNT, $m: go test -bench . -benchtime $BENCHTIME ./..." >&2
		(cd "$m" && go test -run '^$' -bench . -benchmem -count 1 -benchtime "$BENCHTIME" ./...) | tee -a "$work/bench.txt" >&2
	done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

echo "== benchstat" >&2
(cd "$work" && "$benchstat" bench.txt > benchstat.txt)

echo "== go run ./cmd/stagescale -json" >&2
go run ./cmd/stagescale -json > "$work/scale.json"

elapsed=$(( $(date +%s) - start ))
go run ./scripts/benchreport \
	-raw "$work/bench.txt" -benchstat "$work/benchstat.txt" -scale "$work/scale.json" \
	-machine "$machine" -go "$goversion" -date "$date" -commit "$commit" \
	-count "$COUNT" -benchtime "$BENCHTIME" -load "$load_before → $load_after" -elapsed "$((elapsed / 60))m$((elapsed % 60))s" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"

echo "wrote $OUT in $((elapsed / 60))m$((elapsed % 60))s; raw outputs in $work" >&2
