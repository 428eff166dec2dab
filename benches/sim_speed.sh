#!/usr/bin/env bash
# Speed of the full-stack engine: virtual seconds per wall second for the
# three-dc scenario at 30 and 100 nodes, at 1 ms and 10 ms ticks, next to
# stock turmoil running a bare UDP ping workload on the same host count
# (sim/examples/turmoil_baseline.rs). The ratio is cairn's share of the cost.
#
#   bash benches/sim_speed.sh [VIRTUAL_S]     (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
virtual_s="${1:-30}"
cargo build --release --quiet -p cairn-sim --bin cairn-sim --example turmoil_baseline
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf "%-6s %-5s %14s %14s %8s\n" nodes tick cairn_x_real bare_x_real ratio
for nodes in 30 100; do
  for tick in 1 10; do
    # three-dc with its datacenters resized, the run shortened, the tick set,
    # and its late event (after the shortened end) dropped.
    python3 - "$nodes" "$tick" "$virtual_s" "$work/three-dc.toml" <<'PY'
import re, sys
nodes, tick, virt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = open("scenarios/three-dc.toml").read()
s = s.split("[[event]]")[0] + "[[check]]" + s.split("[[check]]", 1)[1]
s = s.replace('duration = "150s"', f'duration = "{virt}s"\ntick = "{tick}ms"')
sizes = [nodes // 3 + (1 if i < nodes % 3 else 0) for i in range(3)]
it = iter(sizes)
s = re.sub(r"clients = \d+", lambda m: f"clients = {next(it)}", s)
s = s.replace('"data/', '"' + __import__("os").getcwd() + '/scenarios/data/')
open(out, "w").write(s)
PY
    target/release/cairn-sim run "$work/three-dc.toml" --quiet --out "$work/out" >/dev/null 2>&1 || true
    cairn=$(python3 -c "import json; print(json.load(open('$work/out/summary.json'))['speed'])")
    bare=$(target/release/examples/turmoil_baseline "$nodes" "$tick" "$virtual_s" | sed -E 's/.*= ([0-9.]+)x.*/\1/')
    python3 -c "print('%-6d %-5s %14.2f %14.2f %8.2f' % ($nodes, '${tick}ms', $cairn, $bare, $cairn / $bare))"
  done
done
