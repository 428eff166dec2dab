#!/usr/bin/env bash
# Side by side: KV writes on a 3-server cairn cluster against a 3-member
# etcd cluster (Debian's etcd-server), both on 127.0.0.1 with their data on
# disk, under the same closed-loop load: CLIENTS concurrent HTTP/1.1
# clients (examples/kvload.rs) spread over the three members, each with one
# write outstanding, for SECONDS. Writes go through any member: followers
# forward to the leader in both systems. Prints writes/s and p50/p99
# latency for each, and cairn's throughput as a ratio of etcd's.
#
# Every listener of every server has its own port (HTTP, DNS, LAN and WAN
# gossip, server RPC), so the three never collide with each other or with
# an agent already running on the default ports.
#
#   benches/kv_vs_etcd.sh [CLIENTS=64] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
clients=${1:-64}
seconds=${2:-10}
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building cairn and the load generator..." >&2
build --bin cairn --example kvload
cairn=$bin_dir/cairn
load=$bin_dir/examples/kvload

wait_http() { # URL PATTERN
  for _ in $(seq 1 100); do
    if curl -s "$1" 2>/dev/null | grep -q "$2"; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $1" >&2
  return 1
}

echo "starting 3 cairn servers..." >&2
for i in 0 1 2; do
  args=(agent -server -bootstrap-expect=3 -node="s$i" -bind=127.0.0.1 -client=127.0.0.1
        -serf-lan-port=$((18301 + i * 10)) -serf-wan-port=$((18302 + i * 10))
        -server-port=$((18300 + i * 10)) -http-port=$((18500 + i)) -dns-port=$((18600 + i))
        -data-dir="$work/cairn$i" -log-level=warn)
  [ "$i" -gt 0 ] && args+=(-retry-join=127.0.0.1:18301 -retry-interval=200ms)
  "$cairn" "${args[@]}" >"$work/cairn$i.log" 2>&1 &
  pids+=($!)
done
wait_http http://127.0.0.1:18500/v1/status/peers '18320'
wait_http http://127.0.0.1:18500/v1/status/leader '127.0.0.1'
echo "cairn: $clients clients for ${seconds}s..." >&2
cairn_out=$("$load" --api cairn --endpoints 127.0.0.1:18500,127.0.0.1:18501,127.0.0.1:18502 \
  --clients "$clients" --seconds "$seconds")
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

echo "starting 3 etcd members..." >&2
cluster="e0=http://127.0.0.1:12380,e1=http://127.0.0.1:12390,e2=http://127.0.0.1:12400"
for i in 0 1 2; do
  peer=$((12380 + i * 10)); client=$((12379 + i * 10))
  etcd --name "e$i" --data-dir "$work/etcd$i" --log-level error \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
wait_http http://127.0.0.1:12379/health '"true"'
echo "etcd: $clients clients for ${seconds}s..." >&2
etcd_out=$("$load" --api etcd --endpoints 127.0.0.1:12379,127.0.0.1:12389,127.0.0.1:12399 \
  --clients "$clients" --seconds "$seconds")

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
printf "%-6s %10s %10s %10s %8s\n" "" "writes/s" "p50 ms" "p99 ms" "errors"
for name in cairn etcd; do
  out=$([ "$name" = cairn ] && echo "$cairn_out" || echo "$etcd_out")
  printf "%-6s %10s %10s %10s %8s\n" "$name" "$(field "$out" writes_per_s)" \
    "$(field "$out" p50_ms)" "$(field "$out" p99_ms)" "$(field "$out" errors)"
done
awk -v c="$(field "$cairn_out" writes_per_s)" -v e="$(field "$etcd_out" writes_per_s)" \
  'BEGIN { printf "cairn/etcd throughput %.2fx\n", c / e }'
