#!/usr/bin/env bash
# The simulator's speed targets, measured side by side in one run, each
# next to its target (the table in scenarios/README.md, "Engine limits"):
# the full engine at 30, 100 and 300 hosts (benches/sim_speed.sh, next to
# bare turmoil), scenarios/three-dc-150.toml, scenarios/scale-1k.toml
# (cold, codec on), the same thousand nodes converged, scenarios/scale-10k.toml
# (converged, push/pull on), 100,000 nodes (peak memory), and a sweep of
# leader-crash over SEEDS seeds with --jobs 2 against --jobs 1 (with the
# per-seed trace hashes compared).
#
#   bash benches/sim_targets.sh [full|small] [SEEDS=100]
#
# `small` shrinks every run to seconds (benches/smoke.sh uses it to check
# that the script starts); its numbers mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
size=${1:-full}
seeds=${2:-100}
case "$size" in
  full) short=""; big=100000; speed_args=(30 "30 100 300" 5) ;;
  small) short=3; big=2000; seeds=4; speed_args=(2 12 1) ;;
  *) echo "usage: sim_targets.sh [full|small] [SEEDS]" >&2; exit 2 ;;
esac
build -p cairn-sim --bin cairn-sim
sim="$bin_dir/cairn-sim"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# variant FILE OUT [KEY=VALUE...]: FILE with top-level keys set (in the
# small size, its duration shortened too), without the events past its end.
variant() {
  python3 - "$short" "$@" <<'PY'
import os, re, sys
short, src, out, *sets = sys.argv[1:]
s = open(src).read()
for kv in sets:
    k, v = kv.split("=", 1)
    s, n = re.subn(rf"^{k} = .*$", f"{k} = {v}", s, count=1, flags=re.M)
    if n == 0:
        s = re.sub(r"^(seed = .*)$", rf"\1\n{k} = {v}", s, count=1, flags=re.M)
if short:
    s = re.sub(r'^duration = "[^"]*"', f'duration = "{short}s"', s, count=1, flags=re.M)
    s = re.sub(r"(?m)^clients = (\d+)", lambda m: f"clients = {min(int(m.group(1)), 40)}", s)
# Events past the (possibly shortened) end are dropped, and with them the
# checks that judge them.
m = re.search(r'(?m)^duration = "(\d+)s"', s)
end = int(m.group(1)) if m else float("inf")
blocks = re.split(r"(?m)^(?=\[\[)", s)
def late(b):
    at = re.search(r'(?m)^at = "(\d+)s"', b)
    return b.startswith("[[event]]") and at is not None and int(at.group(1)) >= end
if any(late(b) for b in blocks):
    blocks = [b for b in blocks if not late(b) and 'kind = "failed_within"' not in b]
s = "".join(blocks)
d = os.path.dirname(os.path.abspath(src))
s = s.replace('"data/', '"' + d + '/data/')
open(out, "w").write(s)
PY
}

# speed FILE: a run's virtual seconds per wall second (and its peak MB).
speed() {
  local out="$work/out-$(basename "$1" .toml)"
  /usr/bin/time -f "%M" -o "$work/mem" "$sim" run "$1" --quiet --out "$out" >/dev/null 2>&1 || true
  [ -f "$out/summary.json" ] || { echo "cairn-sim did not finish $1" >&2; exit 1; }
  python3 -c "import json; print('%.1f' % json.load(open('$out/summary.json'))['speed'])"
}
peak_mb() { echo $(( $(tail -n 1 "$work/mem") / 1024 )); }

echo "== the full engine against bare turmoil (benches/sim_speed.sh)"
bash benches/sim_speed.sh "${speed_args[@]}"
echo
printf "%-40s %14s %14s\n" measure measured target

variant scenarios/three-dc-150.toml "$work/three-dc-150.toml"
printf "%-40s %13sx %14s\n" three-dc-150 "$(speed "$work/three-dc-150.toml")" ">= 5x"

variant scenarios/scale-1k.toml "$work/scale-1k.toml"
printf "%-40s %13sx %14s\n" "scale-1k, cold, codec on" "$(speed "$work/scale-1k.toml")" ">= 10x"

variant scenarios/scale-1k.toml "$work/scale-1k-converged.toml" 'start="converged"'
printf "%-40s %13sx %14s\n" "1k converged, codec on" "$(speed "$work/scale-1k-converged.toml")" ">= 100x"

variant scenarios/scale-10k.toml "$work/scale-10k.toml"
printf "%-40s %13sx %14s\n" "scale-10k, converged, push/pull on" "$(speed "$work/scale-10k.toml")" ">= 10x"

variant scenarios/scale-10k.toml "$work/big.toml" 'duration="20s"' 'codec=false'
sed -i -E "s/^clients = [0-9]+/clients = $big/" "$work/big.toml"
speed "$work/big.toml" >/dev/null
printf "%-40s %12s MB %14s\n" "$big nodes, converged: peak memory" "$(peak_mb)" "< 24576 MB"

variant scenarios/leader-crash.toml "$work/leader-crash.toml"
t0=$(date +%s.%N)
"$sim" sweep "$work/leader-crash.toml" --seeds "1..$seeds" --jobs 1 --quiet --out "$work/j1" >/dev/null || true
t1=$(date +%s.%N)
"$sim" sweep "$work/leader-crash.toml" --seeds "1..$seeds" --jobs 2 --quiet --out "$work/j2" >/dev/null || true
t2=$(date +%s.%N)
python3 - "$work/j1/sweep.json" "$work/j2/sweep.json" "$t0" "$t1" "$t2" "$seeds" <<'PY'
import json, sys
a, b = (json.load(open(p))["results"] for p in sys.argv[1:3])
t0, t1, t2 = map(float, sys.argv[3:6])
same = [x["trace_hash"] for x in a] == [x["trace_hash"] for x in b]
print("%-40s %13.2fx %14s" % (f"sweep --jobs 2 vs --jobs 1, {sys.argv[6]} seeds", (t1 - t0) / (t2 - t1), ">= 1.8x"))
print("%-40s %14s %14s" % ("  per-seed trace hashes", "identical" if same else "DIFFER", "identical"))
if not same:
    sys.exit(1)
PY
