#!/usr/bin/env bash
# Side by side: throughput and round-trip latency through cairn's proxy
# pair (app -> upstream listener -> proxy -> mutual TLS -> proxy -> echo),
# through a pair of stunnel (Debian) instances doing the same mutual-TLS
# hop (ECDSA P-256 certificates from one CA, TLS 1.3), and direct TCP to
# the echo server, all on 127.0.0.1, measured by one load tool in one run.
#
# Throughput: MIB MiB written through and read back concurrently.
# Latency: 64-byte request/response round trips on one connection (p50
# and p99); the "added" latency is the difference from direct TCP.
#
#   benches/connect_vs_stunnel.sh [MIB=512] [PINGS=5000]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
mib=${1:-512}
pings=${2:-5000}
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || {
  echo "stunnel not found: apt-get install stunnel4" >&2; exit 1; }
stunnel=$(command -v stunnel4 || command -v stunnel)
echo "== building ($profile)"
build --bin cairn --example tcp_bench
bin=$bin_dir/cairn
bench=$bin_dir/examples/tcp_bench
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

http=$(port); echo_port=$(port); db_pub=$(port); web_up=$(port); st_srv=$(port); st_cli=$(port)
echo "== starting the echo server, a dev agent and the proxies"
"$bench" echo "127.0.0.1:$echo_port" & pids+=($!)
"$bin" agent -dev -http-port "$http" -dns-port -1 -serf-lan-port "$(port)" -server-port "$(port)" \
  >"$work/agent.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$http/v1/status/leader" | grep -q 127 && break; sleep 0.1; done
export CAIRN_HTTP_ADDR="http://127.0.0.1:$http"
"$bin" connect proxy -service db -service-addr "127.0.0.1:$echo_port" -listen "127.0.0.1:$db_pub" -register \
  >"$work/db.log" 2>&1 & pids+=($!)
"$bin" connect proxy -service web -upstream "db:$web_up" >"$work/web.log" 2>&1 & pids+=($!)

echo "== stunnel: a CA, server and client certificates (ECDSA P-256)"
cd "$work"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
for who in server client; do
  openssl ecparam -name prime256v1 -genkey -noout -out $who.key 2>/dev/null
  openssl req -new -key $who.key -subj /CN=$who -out $who.csr 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out $who.pem 2>/dev/null
done
cat >server.conf <<CONF
foreground = yes
pid =
[srv]
accept = 127.0.0.1:$st_srv
connect = 127.0.0.1:$echo_port
cert = $work/server.pem
key = $work/server.key
CAfile = $work/ca.pem
verifyChain = yes
sslVersionMin = TLSv1.3
CONF
cat >client.conf <<CONF
foreground = yes
pid =
[cli]
client = yes
accept = 127.0.0.1:$st_cli
connect = 127.0.0.1:$st_srv
cert = $work/client.pem
key = $work/client.key
CAfile = $work/ca.pem
verifyChain = yes
sslVersionMin = TLSv1.3
CONF
"$stunnel" server.conf >stunnel-server.log 2>&1 & pids+=($!)
"$stunnel" client.conf >stunnel-client.log 2>&1 & pids+=($!)
cd - >/dev/null

# Wait until every path echoes.
for p in $web_up $st_cli; do
  for _ in $(seq 150); do
    "$bench" measure "127.0.0.1:$p" 1 10 >/dev/null 2>&1 && break; sleep 0.2
  done
done

run() { # name port
  local out
  out=$("$bench" measure "127.0.0.1:$2" "$mib" "$pings")
  echo "$1 $out"
}
echo "== measuring: $mib MiB through and back, $pings round trips of 64 bytes"
direct=$(run direct "$echo_port")
cairn=$(run cairn "$web_up")
st=$(run stunnel "$st_cli")
printf '%s\n%s\n%s\n' "$direct" "$cairn" "$st"
python3 - "$direct" "$cairn" "$st" <<'PY'
import sys
def parse(line):
    name, *kv = line.split()
    return name, {k: float(v) for k, v in (x.split("=") for x in kv)}
(_, d), (_, c), (_, s) = (parse(a) for a in sys.argv[1:])
print(f"throughput MiB/s: direct {d['mib_per_s']:.0f}, cairn {c['mib_per_s']:.0f}, stunnel {s['mib_per_s']:.0f}")
print(f"cairn/direct = {c['mib_per_s']/d['mib_per_s']:.2f}  cairn/stunnel = {c['mib_per_s']/s['mib_per_s']:.2f}")
print(f"added latency p50/p99 (us): cairn {c['p50_us']-d['p50_us']:.0f}/{c['p99_us']-d['p99_us']:.0f}, "
      f"stunnel {s['p50_us']-d['p50_us']:.0f}/{s['p99_us']-d['p99_us']:.0f}")
PY
