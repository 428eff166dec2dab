# Shared by the comparison scripts: which cargo profile to build and run.
# CAIRN_PROFILE=dev (as benches/smoke.sh sets it) reuses the test build for
# a quick start-up check; measurements use the default, release.
profile=${CAIRN_PROFILE:-release}
case "$profile" in
  dev) bin_dir=target/debug ;;
  *) bin_dir=target/$profile ;;
esac
# cargo build in the chosen profile, quietly: build ARGS...
build() { cargo build --profile "$profile" --quiet "$@"; }
