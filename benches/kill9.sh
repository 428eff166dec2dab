#!/usr/bin/env bash
# Acknowledged writes survive kill -9, on real processes and a real disk:
# three cairn servers on 127.0.0.1 (data in a temporary directory), a
# writer putting new keys through any of them (kill9/N = N, one at a
# time) and remembering every write answered `true`; every INTERVAL
# seconds one server (each in turn, the leader among them) is killed with
# SIGKILL and started again from its data directory. At the end every
# acknowledged key must be there with its value. Prints the count of
# acknowledged writes lost, and fails unless it is 0.
#
# Every listener of every server has its own port (HTTP, DNS, LAN and WAN
# gossip, server RPC), clear of the other benchmarks' and of an agent on
# the default ports.
#
#   benches/kill9.sh [CYCLES=100] [INTERVAL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
cycles=${1:-100}
interval=${2:-3}
work=$(mktemp -d)
pids=(0 0 0)
writer=0
cleanup() {
  [ "$writer" -gt 0 ] && kill "$writer" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" -gt 0 ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building cairn..." >&2
build --bin cairn
cairn=$bin_dir/cairn
http_port() { echo $((18700 + $1)); }

start() { # I: starts server I (again), from its data directory
  local i=$1
  local args=(agent -server -bootstrap-expect=3 -node="k$i" -bind=127.0.0.1 -client=127.0.0.1
    -serf-lan-port=$((18711 + i * 10)) -serf-wan-port=$((18712 + i * 10))
    -server-port=$((18710 + i * 10)) -http-port="$(http_port "$i")" -dns-port=$((18790 + i))
    -data-dir="$work/k$i" -log-level=warn
    -retry-join=127.0.0.1:18711 -retry-join=127.0.0.1:18721 -retry-join=127.0.0.1:18731
    -retry-interval=200ms)
  "$cairn" "${args[@]}" >>"$work/k$i.log" 2>&1 &
  pids[i]=$!
}

leader_known() { # whether server 0..2 answers with a leader
  for i in 0 1 2; do
    if curl -s --max-time 1 "http://127.0.0.1:$(http_port "$i")/v1/status/leader" 2>/dev/null | grep -q 127.0.0.1; then
      return 0
    fi
  done
  return 1
}

wait_leader() {
  for _ in $(seq 1 150); do
    leader_known && return 0
    sleep 0.2
  done
  echo "no leader within 30 s; the servers' logs:" >&2
  tail -n 20 "$work"/k*.log >&2
  return 1
}

echo "starting 3 cairn servers in $work..." >&2
for i in 0 1 2; do start "$i"; done
wait_leader

# The writer: one write at a time, each to the next server in turn; an
# answer of `true` is an acknowledgement, anything else (a refusal, a
# timeout, a dead server) is not, and the key is not counted.
acked=$work/acked
: >"$acked"
(
  n=0
  while :; do
    n=$((n + 1))
    port=$(http_port $((n % 3)))
    r=$(curl -s --max-time 3 -X PUT --data "$n" "http://127.0.0.1:$port/v1/kv/kill9/$n" 2>/dev/null || true)
    [ "$r" = "true" ] && echo "$n" >>"$acked"
  done
) &
writer=$!

for c in $(seq 1 "$cycles"); do
  sleep "$interval"
  i=$(((c - 1) % 3))
  kill -9 "${pids[i]}" 2>/dev/null || true
  wait "${pids[i]}" 2>/dev/null || true
  sleep 0.5
  start "$i"
  echo "cycle $c/$cycles: killed and restarted k$i; $(wc -l <"$acked") writes acknowledged so far" >&2
done
sleep 1
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
writer=0
wait_leader

# Every acknowledged key, read back through a consistent read.
dump=$work/dump.json
for _ in $(seq 1 50); do
  if curl -sf --max-time 10 "http://127.0.0.1:$(http_port 0)/v1/kv/kill9/?recurse&consistent" -o "$dump"; then
    break
  fi
  sleep 0.2
done
# No key at all answers 404.
[ -s "$dump" ] || echo '[]' >"$dump"
python3 - "$acked" "$dump" "$cycles" <<'EOF'
import base64, json, sys
acked_file, dump_file, cycles = sys.argv[1], sys.argv[2], sys.argv[3]
acked = [line.strip() for line in open(acked_file) if line.strip()]
stored = {}
for e in json.load(open(dump_file)):
    stored[e["Key"]] = base64.b64decode(e.get("Value") or b"").decode()
lost = [n for n in acked if stored.get(f"kill9/{n}") != n]
print(f"kill9: {cycles} cycles, {len(acked)} acknowledged writes, {len(lost)} lost")
if lost:
    print("lost:", ", ".join(lost[:20]), file=sys.stderr)
    sys.exit(1)
EOF
