#!/usr/bin/env bash
# Speed of the full-stack engine: virtual seconds per wall second for
# scenarios/three-dc.toml resized to HOSTS hosts (three datacenters of 3
# servers and the rest clients, its events dropped, VIRTUAL_S long), next
# to the same run with every node on one turmoil host stepped by a 1 ms
# tick (sim/examples/one_turmoil_host.rs, the design the engine did not
# take) and to stock turmoil running a bare UDP ping workload with one host
# per node (sim/examples/turmoil_baseline.rs: turmoil's own cost, which
# grows like the cube of the host count, so it runs BARE_S virtual seconds).
#
#   bash benches/sim_speed.sh [VIRTUAL_S=30] [HOSTS="30 100 300"] [BARE_S=5]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
virtual_s="${1:-30}"
hosts="${2:-30 100 300}"
bare_s="${3:-5}"
build -p cairn-sim --bin cairn-sim --example turmoil_baseline --example one_turmoil_host
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf "%-6s %12s %14s %12s %12s\n" hosts cairn_x_real one_host_x_real bare_x_real cairn/bare
for n in $hosts; do
  python3 - "$n" "$virtual_s" "$work/three-dc-$n.toml" <<'PY'
import os, re, sys
hosts, virt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = open("scenarios/three-dc.toml").read()
# Drop the events (they name nodes and times of the full-size run).
s = s.split("[[event]]")[0] + "[[check]]" + s.split("[[check]]", 1)[1]
s, k = re.subn(r'^duration = "[^"]*"', f'duration = "{virt}s"', s, count=1, flags=re.M)
if k != 1:
    sys.exit("scenarios/three-dc.toml has no duration line to resize")
per = [hosts // 3 + (1 if i < hosts % 3 else 0) for i in range(3)]
if min(per) < 4:
    sys.exit(f"{hosts} hosts is too few: each datacenter has 3 servers")
sizes = iter(per)
s, k = re.subn(r"^clients = \d+", lambda m: f"clients = {next(sizes) - 3}", s, flags=re.M)
if k != 3:
    sys.exit("scenarios/three-dc.toml no longer has three datacenters with clients")
s = s.replace('"data/', '"' + os.getcwd() + '/scenarios/data/')
open(out, "w").write(s)
PY
  "$bin_dir/cairn-sim" run "$work/three-dc-$n.toml" --quiet --out "$work/out-$n" >/dev/null 2>&1 || true
  [ -f "$work/out-$n/summary.json" ] || { echo "cairn-sim did not finish the $n-host run" >&2; exit 1; }
  cairn=$(python3 -c "import json; print(json.load(open('$work/out-$n/summary.json'))['speed'])")
  one=$("$bin_dir/examples/one_turmoil_host" "$work/three-dc-$n.toml" | sed -E 's/.*= ([0-9.]+)x.*/\1/')
  bare=$("$bin_dir/examples/turmoil_baseline" "$n" 1 "$bare_s" | sed -E 's/.*= ([0-9.]+)x.*/\1/')
  python3 -c "print('%-6d %12.2f %14.2f %12.2f %11.1fx' % ($n, $cairn, $one, $bare, $cairn / $bare))"
done
