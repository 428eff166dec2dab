#!/usr/bin/env bash
# Coordinates on matrices they were not tuned on: cairn's default Vivaldi
# against Serf's (cairn's reproduction, `--algorithm serf`, which
# benches/compare_vivaldi.sh holds to the Go harness), on every measured
# matrix in scenarios/data/ and every synthetic one in
# scenarios/data/synthetic/, over the streams of seeds SEEDS of ROUNDS
# rounds each. Prints a Markdown table: per matrix, the final median and
# p90 relative error (mean over seeds, ± the 95 % interval) and the ratio
# default/serf, marked where it misses the targets (median <= 0.75x,
# p90 <= 0.5x). Writes the table to OUT/suite.md and each matrix's
# results and charts (summary, signed error by distance) to OUT/NAME/.
#
#   benches/coordinate_suite.sh [SEEDS=1..5] [ROUNDS=200] [OUT=out/coordinate-suite]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
seeds=${1:-1..5}
rounds=${2:-200}
out=${3:-out/coordinate-suite}
echo "== building cairn-sim ($profile)..." >&2
build -p cairn-sim --bin cairn-sim
python3 scenarios/data/synthetic/generate.py --check
mkdir -p "$out"
table="$out/suite.md"
{
  echo "Seeds $seeds, $rounds rounds each; relative error at the last round, mean over seeds ± 95 % interval."
  echo
  echo "| matrix | nodes | default median | serf median | ratio | default p90 | serf p90 | ratio | targets |"
  echo "|---|---:|---|---|---:|---|---|---:|---|"
} > "$table"
# summary.csv: algorithm,seeds,median,median_ci95,p90,p90_ci95,p99,p99_ci95
cell() { awk -F, -v a="$2" -v c="$3" '$1 == a { if ($(c+1) == "") printf "%.3f", $c; else printf "%.3f ± %.3f", $c, $(c+1) }' "$1"; }
value() { awk -F, -v a="$2" -v c="$3" '$1 == a { print $c }' "$1"; }
for m in scenarios/data/*.csv scenarios/data/synthetic/*.csv; do
  case "$m" in *.nodes.csv) continue ;; esac
  name=$(basename "$m" .csv)
  echo "   $name..." >&2
  "$bin_dir/cairn-sim" tomography --matrix "$m" --seeds "$seeds" --rounds "$rounds" \
    --algorithm default,serf --timing-reps 0 --out "$out/$name" > "$out/$name.txt" 2> /dev/null
  s="$out/$name/$name.summary.csv"
  nodes=$(awk -F, 'NR > 1 { if ($1 > n) n = $1; if ($2 > n) n = $2 } END { print n + 1 }' "$m")
  rm=$(awk -v a="$(value "$s" default 3)" -v b="$(value "$s" serf 3)" 'BEGIN { printf "%.2f", a / b }')
  rp=$(awk -v a="$(value "$s" default 5)" -v b="$(value "$s" serf 5)" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v m="$rm" -v p="$rp" 'BEGIN {
    v = ""; if (m > 0.75) v = v " median"; if (p > 0.5) v = v " p90";
    print (v == "" ? "met" : "missed:" v) }')
  echo "| $name | $nodes | $(cell "$s" default 3) | $(cell "$s" serf 3) | ${rm}x | $(cell "$s" default 5) | $(cell "$s" serf 5) | ${rp}x | $verdict |" >> "$table"
done
cat "$table"
