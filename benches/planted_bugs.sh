#!/usr/bin/env bash
# Can the simulator's faults and checks fail? For each deliberate bug,
# builds cairn-sim with it compiled in (RUSTFLAGS --cfg cairn_planted=BUG,
# in target/planted, so the ordinary build is untouched), then runs the
# scenario that should catch it seed after seed until a check fails, and
# prints the seed and the checks that caught it. A seed whose failure the
# build without the bug shares (a liveness check that also misses there)
# catches nothing, and the search goes on. Fails if a bug survives SEEDS
# seeds.
#
# The bugs, and what should find them:
#   fsync_skipped       durable commits without fsync: scenarios/power-loss.toml
#                       (every server crashes, so a majority's copies go)
#   vote_not_persisted  a vote kept in memory only: power-loss.toml
#   no_lease            a leader that lost its quorum still answers as
#                       leader: leader-isolated.toml with default reads
#   stale_default_read  default reads answered by any server:
#                       leader-isolated.toml with default reads
#
#   benches/planted_bugs.sh [SEEDS=200] [BUG...]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-200}
shift || true
bugs=("$@")
[ ${#bugs[@]} -gt 0 ] || bugs=(fsync_skipped vote_not_persisted no_lease stale_default_read)
work=target/planted
mkdir -p "$work"
# The leader-isolated scenario with default reads (its own uses consistent).
sed 's/^keys = 4$/keys = 4\nconsistency = "default"/' scenarios/leader-isolated.toml >"$work/leader-isolated-default.toml"
grep -q 'consistency = "default"' "$work/leader-isolated-default.toml"

scenario_for() {
  case $1 in
    fsync_skipped | vote_not_persisted) echo scenarios/power-loss.toml ;;
    no_lease | stale_default_read) echo "$work/leader-isolated-default.toml" ;;
    *) echo "unknown bug $1" >&2; return 1 ;;
  esac
}

echo "== building cairn-sim without a planted bug, to judge failures against..." >&2
cargo build --release --quiet -p cairn-sim
clean=target/release/cairn-sim

# failing_checks OUTPUT: the names of the checks a run's output says failed.
failing_checks() { printf '%s\n' "$1" | { grep '^FAIL' || true; } | cut -d: -f1 | sed 's/^FAIL //' | paste -sd, -; }

missed=()
for bug in "${bugs[@]}"; do
  scenario=$(scenario_for "$bug")
  echo "== $bug: building cairn-sim with it..." >&2
  # RUSTFLAGS replaces .cargo/config.toml's flags: tokio_unstable, which
  # the simulator's seeded runtime needs, goes in again.
  RUSTFLAGS="--cfg tokio_unstable --cfg cairn_planted=\"$bug\"" CARGO_TARGET_DIR="$work/$bug" \
    cargo build --release --quiet -p cairn-sim
  sim=$work/$bug/release/cairn-sim
  found=""
  for seed in $(seq 1 "$seeds"); do
    if ! out=$("$sim" run "$scenario" --seed "$seed" --quiet --out "$work/out/$bug" 2>&1); then
      caught=$(failing_checks "$out")
      base=$("$clean" run "$scenario" --seed "$seed" --quiet --out "$work/out/clean" 2>&1 || true)
      if [ -n "$caught" ] && [ "$caught" = "$(failing_checks "$base")" ]; then
        echo "   $bug: seed $seed fails $caught without the bug too; not counted" >&2
        continue
      fi
      found="seed $seed, by ${caught:-an error: $(printf '%s\n' "$out" | tail -n 1)}"
      break
    fi
    [ $((seed % 20)) -eq 0 ] && echo "   $bug: $seed seeds pass so far" >&2
  done
  if [ -n "$found" ]; then
    echo "planted $bug: found at $found ($(basename "$scenario"))"
  else
    echo "planted $bug: NOT found in $seeds seeds of $(basename "$scenario")"
    missed+=("$bug")
  fi
done
if [ ${#missed[@]} -gt 0 ]; then
  echo "planted bugs not found: ${missed[*]}"
  exit 1
fi
echo "every planted bug was found"
