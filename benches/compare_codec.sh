#!/usr/bin/env bash
# Side by side: cairn's memberlist codec against memberlist's own (Go,
# go-msgpack 0.5 from Debian's packages), encoding and decoding the same
# compound packet (a ping plus ten alive broadcasts). Prints nanoseconds per
# round trip for each and the ratio. cairn's number is criterion's estimate
# for `codec/compound_encode_decode` in benches/gossip.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "building the Go harness..." >&2
GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOCACHE="$out/gocache" \
  go build -o "$out/codec_go" benches/compare/codec_go/main.go
echo "timing memberlist (median of 5 x 200k round trips)..." >&2
# shellcheck disable=SC2086 # GO_ARGS is a list of flags (-iters N -reps N)
go_ns=$("$out/codec_go" ${GO_ARGS:-})
echo "timing cairn (criterion)..." >&2
# shellcheck disable=SC2086 # CRITERION_ARGS is a list of flags
cargo bench --profile "$profile" --quiet --bench gossip -- --noplot ${CRITERION_ARGS:-} 'codec/compound_encode_decode$' > "$out/criterion.txt" 2>&1
rs_ns=$(python3 - "$out/criterion.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"compound_encode_decode\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", text)
if not m:
    sys.exit("criterion output not understood:\n" + text)
scale = {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[m.group(2)]
print(float(m.group(1)) * scale)
PY
)
printf "memberlist (Go)  %8.1f ns per compound round trip\n" "$go_ns"
printf "cairn (Rust)     %8.1f ns per compound round trip\n" "$rs_ns"
awk -v g="$go_ns" -v r="$rs_ns" 'BEGIN { printf "ratio Go/cairn   %8.2fx\n", g / r }'
