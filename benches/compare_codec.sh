#!/usr/bin/env bash
# Side by side: cairn's memberlist codec against memberlist's own (Go,
# go-msgpack 0.5 from Debian's packages) on the same compound packet.
# Prints nanoseconds per encode+decode round trip and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "building the Go harness and cairn (release)..." >&2
GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOCACHE="$out/gocache" \
  go build -o "$out/codec_go" benches/compare/codec_go/main.go
cargo build --release --quiet --example codec_speed
echo "timing (median of 5 x 200k round trips each)..." >&2
go_ns=$("$out/codec_go")
rs_ns=$(target/release/examples/codec_speed)
printf "memberlist (Go)  %8.1f ns per compound round trip\n" "$go_ns"
printf "cairn (Rust)     %8.1f ns per compound round trip\n" "$rs_ns"
awk -v g="$go_ns" -v r="$rs_ns" 'BEGIN { printf "ratio Go/cairn   %8.2fx\n", g / r }'
