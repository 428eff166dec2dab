# Shared by the comparison scripts: which cargo profile to build and run.
# CAIRN_PROFILE=dev (as benches/smoke.sh sets it) reuses the test build for
# a quick start-up check; measurements use the default, release.
profile=${CAIRN_PROFILE:-release}
case "$profile" in
  dev) bin_dir=target/debug ;;
  *) bin_dir=target/$profile ;;
esac
# cargo build in the chosen profile, quietly: build ARGS... With the dev
# profile, examples are built too: that brings in the dev-dependencies'
# features as `cargo test` did, so the test build's artifacts are reused
# instead of rebuilt with other features.
build() {
  if [ "$profile" = dev ]; then
    cargo build --profile dev --quiet --examples "$@"
  else
    cargo build --profile "$profile" --quiet "$@"
  fi
}
