#!/usr/bin/env bash
# Side by side: HashiCorp Serf's Vivaldi (Go, through the reference harness in
# shared/anchors/serf-vivaldi) and cairn's coordinates, on the same
# observation stream for every matrix in scenarios/data/. Prints final
# median and p90 relative error and time per update for each, and the ratio
# cairn/Serf.
#
#   benches/compare_vivaldi.sh [SEED] [ROUNDS]
#   SERF_HARNESS_DIR=/path/to/serf-vivaldi benches/compare_vivaldi.sh
#
# Needs Go and Debian's golang-github-hashicorp-serf-dev (the harness builds
# offline against it), and the harness sources, which are read, not copied.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
seed=${1:-1}
rounds=${2:-200}
harness_dir=${SERF_HARNESS_DIR:-../shared/anchors/serf-vivaldi}
if [ ! -f "$harness_dir/main.go" ]; then
  echo "Serf harness not found in $harness_dir; set SERF_HARNESS_DIR" >&2
  exit 2
fi
if [ ! -d /usr/share/gocode/src/github.com/hashicorp/serf/coordinate ]; then
  echo "Serf's sources are missing: apt-get install golang-go golang-github-hashicorp-serf-dev" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building the Serf harness and cairn-sim..." >&2
(cd "$harness_dir" && env GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= \
  GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$work/gocache" go build -trimpath -o "$work/harness" main.go)
build -p cairn-sim

last_row() { grep -v '^#' "$1" | tail -n 1; }
ns_line() { sed -n 's/^# ns_per_update=\([0-9.]*\).*/\1/p' "$1" | tail -n 1; }

printf "%-18s %-8s %10s %10s %12s\n" matrix algorithm median p90 ns/update
for m in scenarios/data/*.csv; do
  case "$m" in *.nodes.csv) continue ;; esac
  name=$(basename "$m" .csv)
  out="$work/$name"
  mkdir -p "$out"
  "$bin_dir/cairn-sim" tomography --matrix "$m" --seed "$seed" --rounds "$rounds" \
    --algorithm default --out "$out" > /dev/null 2>&1
  stream="$out/$name.seed$seed.R$rounds.txt"
  "$work/harness" -matrix "$m" -obs "$stream" -k 10 > "$out/serf.csv" 2> /dev/null
  IFS=, read -r _ s_med s_p90 _ _ <<< "$(last_row "$out/serf.csv")"
  IFS=, read -r _ c_med c_p90 _ _ <<< "$(last_row "$out/$name.default.csv")"
  s_ns=$(ns_line "$out/serf.csv")
  c_ns=$(ns_line "$out/$name.default.csv")
  printf "%-18s %-8s %10.4f %10.4f %12.1f\n" "$name" serf "$s_med" "$s_p90" "$s_ns"
  printf "%-18s %-8s %10.4f %10.4f %12.1f\n" "$name" cairn "$c_med" "$c_p90" "$c_ns"
  awk -v a="$c_med" -v b="$s_med" -v c="$c_p90" -v d="$s_p90" -v e="$c_ns" -v f="$s_ns" -v n="$name" \
    'BEGIN { printf "%-18s %-8s %9.2fx %9.2fx %11.2fx\n", n, "ratio", a/b, c/d, e/f }'
done
