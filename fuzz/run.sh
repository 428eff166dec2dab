#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) from its seed corpus,
# with AddressSanitizer (cargo fuzz). New inputs go to a scratch
# corpus, so the committed seeds stay as they are; a crash stops the run,
# its input is in fuzz/artifacts/<target>/, and it becomes a regression
# test before anything else.
#   fuzz/run.sh 20            # what CI runs
#   fuzz/run.sh 600 dns_request
set -euo pipefail
cd "$(dirname "$0")"
# cargo fuzz passes nightly flags (-Zsanitizer); this machine has one
# toolchain, stable, and RUSTC_BOOTSTRAP lets it take them.
export RUSTC_BOOTSTRAP=1
# cargo fuzz sets RUSTFLAGS, which replaces .cargo/config.toml's: keep the
# cfg the simulator needs (its runtime's seeded randomness) in front of it.
export RUSTFLAGS="--cfg tokio_unstable ${RUSTFLAGS:-}"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(memberlist_codec gossip_decrypt rpc_frame dns_request acl_rules acl_login scenario_file config_file api_bodies)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "== building fuzz targets (AddressSanitizer)"
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== $t: ${secs}s from $(ls "corpus/$t" | wc -l) seeds"
  cargo fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|Done [0-9]+ runs|.*panicked at)" || true
  # cargo fuzz exits non-zero on a crash; pipefail is off for the grep,
  # so look for the artifact instead.
  if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/leak-* >/dev/null 2>&1; then
    echo "FAIL: $t found a crash: $(ls artifacts/$t)"
    exit 1
  fi
done
echo "== fuzz: no crashes"
