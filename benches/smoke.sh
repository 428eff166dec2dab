#!/usr/bin/env bash
# Every comparison script in benches/ at a tiny size, to show that each
# still builds, starts, runs both sides and prints its ratio line (and
# kill9.sh, which compares nothing, its count of lost writes). It
# measures nothing (tiny runs of debug builds say nothing about speed);
# it is how CI notices a script that no longer starts.
#
#   bash benches/smoke.sh              (CAIRN_PROFILE=release to smoke release builds)
set -uo pipefail
cd "$(dirname "$0")/.."
export CAIRN_PROFILE=${CAIRN_PROFILE:-dev}
failed=()

# smoke NAME PATTERN COMMAND...: runs COMMAND, which must succeed and print
# a line matching PATTERN (its ratio line).
smoke() {
  local name=$1 pattern=$2 out started
  shift 2
  echo "== smoke: $name: $*"
  started=$SECONDS
  if ! out=$(timeout 900 "$@" 2>&1); then
    printf '%s\n' "$out" | tail -n 40
    echo "FAIL $name: exited with an error"
    failed+=("$name")
    return
  fi
  local line
  line=$(printf '%s\n' "$out" | grep -E -m 1 "$pattern" || true)
  if [ -z "$line" ]; then
    printf '%s\n' "$out" | tail -n 40
    echo "FAIL $name: printed no line matching /$pattern/"
    failed+=("$name")
    return
  fi
  echo "ok   $name ($((SECONDS - started)) s): $line"
}

smoke sim_speed '^[0-9]+ .* [0-9.]+x$' bash benches/sim_speed.sh 2 12 1
smoke sim_targets '^sweep --jobs 2 ' bash benches/sim_targets.sh small
smoke convergence '^1000 +[0-9.]+ ' bash benches/convergence.sh 1000
GO_ARGS="-iters 2000 -reps 1" CRITERION_ARGS="--warm-up-time 0.1 --measurement-time 0.2" \
  smoke compare_codec '^ratio Go/cairn' bash benches/compare_codec.sh
smoke coordinate_suite '^\| clusters-3x6 \| 18 \| .*x \|' bash benches/coordinate_suite.sh 1..2 3 out/smoke/coordinate-suite
harness=${SERF_HARNESS_DIR:-../shared/anchors/serf-vivaldi}
if [ -f "$harness/main.go" ]; then
  smoke compare_vivaldi ' ratio ' bash benches/compare_vivaldi.sh 1 3
else
  # The reference harness is read from beside the checkout, never copied
  # into it: without it there is nothing to compare against.
  echo "== smoke: compare_vivaldi skipped: no Serf harness in $harness (set SERF_HARNESS_DIR)"
fi
smoke connect_vs_stunnel 'cairn/direct = ' bash benches/connect_vs_stunnel.sh 4 100
smoke dns_vs_dnsmasq 'cairn/dnsmasq qps ratio' bash benches/dns_vs_dnsmasq.sh 1 2
smoke kv_vs_etcd 'cairn/etcd throughput' bash benches/kv_vs_etcd.sh 4 1
smoke kill9 '^kill9: .* 0 lost$' bash benches/kill9.sh 3 1
smoke chaos_sweep '^chaos_sweep: .* seeds per minute$' bash benches/chaos_sweep.sh 4 2

if [ ${#failed[@]} -gt 0 ]; then
  echo "smoke: FAILED: ${failed[*]}"
  exit 1
fi
echo "smoke: every comparison script starts and prints its ratio"
