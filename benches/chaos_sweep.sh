#!/usr/bin/env bash
# Random fault timelines at scale: SEEDS seeds of scenarios/chaos-raft.toml
# (three Raft servers and two client agents under KV, lock and transaction
# load, ten faults of every kind drawn from each seed, safety checked
# throughout and recovery in the quiet phase), JOBS at a time. Prints the seeds per minute and the
# failing seeds, each shrunk to a plain scenario file (out/chaos-raft/
# seed-N/shrunk.toml) with the command that replays it. Fails if any seed
# fails. Target: 10,000 seeds within 2 hours on 2 cores, none failing.
#
#   benches/chaos_sweep.sh [SEEDS=10000] [JOBS=every core] [FIRST=1]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
seeds=${1:-10000}
jobs=${2:-$(nproc)}
first=${3:-1}
last=$((first + seeds - 1))
scenario=${CHAOS_SCENARIO:-scenarios/chaos-raft.toml}
out=${CHAOS_OUT:-out/chaos-sweep}
echo "== building cairn-sim ($profile)..." >&2
build -p cairn-sim --bin cairn-sim
sim=$bin_dir/cairn-sim
started=$SECONDS
status=0
# One line per seed on stdout; the progress every 100 seeds on stderr.
"$sim" sweep "$scenario" --seeds "$first..$last" --jobs "$jobs" --quiet --shrink --out "$out" \
  | awk -v total="$seeds" '
      /^seed [0-9]+: (PASS|FAIL)/ { n++; if ($3 == "FAIL") { f++; print }
        if (n % 100 == 0) printf "   %d of %d seeds, %d failing\n", n, total, f > "/dev/stderr"
        next }
      { print }' || status=$?
elapsed=$((SECONDS - started))
[ "$elapsed" -gt 0 ] || elapsed=1
awk -v n="$seeds" -v s="$elapsed" -v j="$jobs" \
  'BEGIN { printf "chaos_sweep: %d seeds of chaos-raft in %d s with %d jobs: %.1f seeds per minute\n", n, s, j, 60 * n / s }'
exit "$status"
