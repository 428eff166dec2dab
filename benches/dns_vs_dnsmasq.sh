#!/usr/bin/env bash
# Side by side: DNS queries per second and latency, cairn's DNS interface
# against dnsmasq (Debian) serving the same A records, both on 127.0.0.1,
# measured by dnsperf (Debian) with the same query file in one run.
#
# cairn: `cairn agent -dev` with 100 services of 3 instances each (all
# passing), asked `svc-N.service.consul A` (3 answers each, in random
# order). dnsmasq: the same 100 names, each with the same 3 addresses,
# from a hosts file, no upstream. Prints qps, average and p99 latency
# (dnsperf's), and cairn's qps as a ratio of dnsmasq's.
#
#   benches/dns_vs_dnsmasq.sh [SECONDS=10] [CLIENTS=8]
#
# With ACL=1, cairn runs with ACLs on and default_policy = "deny", and DNS
# answers with a DNS token that may read every service and node: what
# ACL enforcement costs on the DNS path.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
seconds=${1:-10}
clients=${2:-8}
for tool in dnsperf dnsmasq; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "$tool not found: apt-get install dnsperf dnsmasq-base" >&2; exit 1; }
done
dnsmasq=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
work=$(mktemp -d)
# dnsmasq drops to an unprivileged user that must still read its hosts file.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building cairn..." >&2
build --bin cairn
cairn=$bin_dir/cairn

http=18500; dns=18600; dnsmasq_port=18653
acl_args=()
root=""
if [ "${ACL:-0}" = 1 ]; then
  root=bench-management
  cat > "$work/acl.hcl" <<ACL
acl {
  enabled = true
  default_policy = "deny"
  tokens {
    initial_management = "$root"
    agent = "$root"
    dns = "bench-dns"
  }
}
ACL
  acl_args=(-config-file "$work/acl.hcl")
fi
"$cairn" agent -dev -http-port $http -dns-port $dns -server-port 18300 -serf-lan-port 18301 -serf-wan-port 18302 \
  -data-dir "$work/cairn" -log-level warn "${acl_args[@]}" > "$work/cairn.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$http/v1/status/leader" 2>/dev/null | grep -q 8300 && break
  sleep 0.1
done
if [ -n "$root" ]; then
  for _ in $(seq 1 100); do
    curl -sf -H "X-Consul-Token: $root" "http://127.0.0.1:$http/v1/acl/token/self" >/dev/null && break
    sleep 0.1
  done
  curl -sf -X PUT -H "X-Consul-Token: $root" "http://127.0.0.1:$http/v1/acl/policy" \
    -d '{"Name":"dns-read","Rules":"service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}' >/dev/null
  curl -sf -X PUT -H "X-Consul-Token: $root" "http://127.0.0.1:$http/v1/acl/token" \
    -d '{"SecretID":"bench-dns","Policies":[{"Name":"dns-read"}]}' >/dev/null
  echo "ACLs on: default_policy deny, DNS token reads every service and node" >&2
fi

echo "registering 100 services x 3 instances..." >&2
: > "$work/hosts"
: > "$work/queries"
for s in $(seq 0 99); do
  for i in 0 1 2; do
    ip="10.$((s / 250)).$((s % 250)).$((i + 1))"
    curl -s -X PUT -H "X-Consul-Token: $root" "http://127.0.0.1:$http/v1/catalog/register" \
      -d "{\"Node\": \"n-$s-$i\", \"Address\": \"$ip\", \"Service\": {\"Service\": \"svc-$s\", \"Port\": 80}}" > /dev/null
    echo "$ip svc-$s.service.consul" >> "$work/hosts"
  done
  echo "svc-$s.service.consul A" >> "$work/queries"
done
dig @127.0.0.1 -p $dns +short svc-99.service.consul | grep -q 10.0.99 \
  || { echo "cairn does not answer svc-99.service.consul" >&2; exit 1; }

"$dnsmasq" --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$work/hosts" \
  --listen-address=127.0.0.1 --port=$dnsmasq_port --bind-interfaces --cache-size=10000 \
  --pid-file="$work/dnsmasq.pid" > "$work/dnsmasq.log" 2>&1 &
pids+=($!)
sleep 0.5
dig @127.0.0.1 -p $dnsmasq_port +short svc-99.service.consul | grep -q 10.0.99 \
  || { echo "dnsmasq does not answer svc-99.service.consul" >&2; exit 1; }

run() { # NAME PORT
  echo "dnsperf against $1 for ${seconds}s..." >&2
  dnsperf -s 127.0.0.1 -p "$2" -d "$work/queries" -l "$seconds" -c "$clients" -q 200 -T 1 \
    > "$work/$1.out" 2>&1
  local qps avg lost
  qps=$(awk '/Queries per second/ {print $4}' "$work/$1.out")
  avg=$(awk '/Average Latency/ {print $4}' "$work/$1.out")
  lost=$(awk '/Queries lost/ {print $3}' "$work/$1.out")
  grep -E "Response codes" "$work/$1.out" >&2
  printf "%-8s qps %10s  avg latency %8s s  lost %s\n" "$1" "$qps" "$avg" "$lost"
  echo "$qps" > "$work/$1.qps"
}
run cairn $dns
run dnsmasq $dnsmasq_port
awk -v a="$(cat "$work/cairn.qps")" -v b="$(cat "$work/dnsmasq.qps")" \
  'BEGIN { printf "cairn/dnsmasq qps ratio: %.2f\n", a / b }'
