#!/usr/bin/env bash
# Can the simulator's faults and checks fail? For each deliberate bug,
# builds cairn-sim with it compiled in (RUSTFLAGS --cfg cairn_planted=BUG,
# in target/planted, so the ordinary build is untouched), then runs the
# chaos sweep (scenarios/chaos-raft.toml: a random fault timeline per
# seed; recovery_off sweeps scenarios/bit-rot.toml, the fault it needs)
# seed after seed until a check fails, and prints the seed and the
# checks that caught it. A seed whose failure the build without the bug
# shares catches nothing, and the search goes on. Fails if a bug survives
# SEEDS seeds. PLANTED_SCENARIO=FILE sweeps another scenario instead of
# chaos-raft.
#
# The bugs:
#   fsync_skipped       durable commits without fsync
#   vote_not_persisted  a vote kept in memory only
#   no_lease            a leader that lost its quorum still answers
#                       default reads as leader
#   stale_default_read  default reads answered by any server
#   lock_delay_short    a lock its session lost free again after the
#                       lock delay read as seconds, not milliseconds
#   txn_not_atomic      a failed transaction keeps the writes of its
#                       operations that succeeded
#   recovery_off        a server whose disk rotted drops the damaged log
#                       tail and goes on as if nothing was lost: it votes,
#                       stands, and leads again from its stored vote
#
#   benches/planted_bugs.sh [SEEDS=200] [BUG...]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-200}
shift || true
bugs=("$@")
all="fsync_skipped vote_not_persisted no_lease stale_default_read lock_delay_short txn_not_atomic recovery_off"
# shellcheck disable=SC2206
[ ${#bugs[@]} -gt 0 ] || bugs=($all)
work=target/planted
mkdir -p "$work"
# scenario_for BUG: the scenario whose seeds are swept for it.
scenario_for() {
  case $1 in
    recovery_off) echo scenarios/bit-rot.toml ;;
    *) echo "${PLANTED_SCENARIO:-scenarios/chaos-raft.toml}" ;;
  esac
}
for bug in "${bugs[@]}"; do
  case " $all " in
    *" $bug "*) ;;
    *) echo "unknown bug $bug (bugs: $all)" >&2; exit 2 ;;
  esac
done

echo "== building cairn-sim without a planted bug, to judge failures against..." >&2
cargo build --release --quiet -p cairn-sim
clean=target/release/cairn-sim

# failing_checks OUTPUT: the names of the checks a run's output says failed.
failing_checks() { printf '%s\n' "$1" | { grep '^FAIL' || true; } | cut -d: -f1 | sed 's/^FAIL //' | paste -sd, -; }

missed=()
for bug in "${bugs[@]}"; do
  echo "== $bug: building cairn-sim with it..." >&2
  # RUSTFLAGS replaces .cargo/config.toml's flags: tokio_unstable, which
  # the simulator's seeded runtime needs, goes in again.
  RUSTFLAGS="--cfg tokio_unstable --cfg cairn_planted=\"$bug\"" CARGO_TARGET_DIR="$work/$bug" \
    cargo build --release --quiet -p cairn-sim
  sim=$work/$bug/release/cairn-sim
  scenario=$(scenario_for "$bug")
  found=""
  for seed in $(seq 1 "$seeds"); do
    if ! out=$("$sim" run "$scenario" --seed "$seed" --quiet --no-shrink --out "$work/out/$bug" 2>&1); then
      caught=$(failing_checks "$out")
      base=$("$clean" run "$scenario" --seed "$seed" --quiet --no-shrink --out "$work/out/clean" 2>&1 || true)
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
