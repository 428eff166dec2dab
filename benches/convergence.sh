#!/usr/bin/env bash
# How fast a broadcast reaches a pool, next to Serf's published convergence
# model (serf.io's convergence simulator: 200 ms gossip interval, fan-out 3,
# no loss: about 2.2 s, 2.6 s and 2.8 s to 99.99 % at 1k, 10k and 100k
# nodes). For each size, one pool starts converged on the protocol engine
# (LAN timing, push/pull off as in the model, codec skipped: same trace,
# less cost), one node leaves at 5 s, and spread.csv says when each node
# heard. Prints t50/t90/t99/t99.99, the ratio to the model, the run's speed
# and peak memory, and each node's mean datagrams and bytes per second.
#
#   bash benches/convergence.sh [SIZES]     (default "1000 10000"; add 100000
#                                            for the big one: ~4 GB, minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
sizes="${1:-1000 10000}"
build -p cairn-sim --bin cairn-sim
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf "%-7s %6s %6s %6s %7s %7s %6s %8s %8s %9s %9s\n" \
  nodes t50_s t90_s t99_s t9999_s serf_s ratio speed_x peak_MB pkts/s/n bytes/s/n
for n in $sizes; do
  case "$n" in
    1000) model=2.2 ;;
    10000) model=2.6 ;;
    100000) model=2.8 ;;
    *) model="" ;;
  esac
  cat > "$work/conv-$n.toml" <<EOF
name = "convergence-$n"
seed = 1
duration = "15s"
engine = "protocol"
start = "converged"
codec = false

[gossip]
push_pull_interval = "0s"

[latency]
intra_dc = { dist = "uniform", min = "200us", max = "1ms" }

[[datacenter]]
name = "dc1"
clients = $n

[[event]]
at = "5s"
action = "leave"
targets = ["dc1-$((n / 2))"]
EOF
  echo "running $n nodes..." >&2
  /usr/bin/time -f "%M" -o "$work/mem-$n" "$bin_dir/cairn-sim" run "$work/conv-$n.toml" \
    --quiet --out "$work/out-$n" > /dev/null
  python3 - "$work/out-$n" "$n" "$model" "$work/mem-$n" <<'PY'
import csv, json, sys
out, n, model, mem = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = json.load(open(f"{out}/summary.json"))
f = next(x for x in s["spread"] if x["fact"].startswith("left"))
rows = [r for r in csv.DictReader(open(f"{out}/metrics.csv")) if r["status"] == "running" and int(r["t_s"]) >= 1]
pk = sum(int(r["udp_packets"]) for r in rows) / max(1, len(rows))
by = sum(int(r["udp_bytes"]) for r in rows) / max(1, len(rows))
peak = int(open(mem).read().split()[-1]) // 1024
ratio = f"{f['t9999_s'] / float(model):.2f}" if model and f["t9999_s"] else "-"
t = lambda k: f"{f[k]:.2f}" if f[k] is not None else "never"
print(f"{n:<7} {t('t50_s'):>6} {t('t90_s'):>6} {t('t99_s'):>6} {t('t9999_s'):>7} {model or '-':>7} {ratio:>6} "
      f"{s['speed']:>8.1f} {peak:>8} {pk:>9.2f} {by:>9.0f}")
PY
done
