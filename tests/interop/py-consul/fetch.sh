#!/usr/bin/env bash
# Fetches py-consul's source release (with its test suite) from PyPI into
# target/interop/, checks its hash, and installs what the suite imports.
# tests/py_consul.rs runs the suite against `cairn agent -dev`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
version=1.8.0
sha256=ed9ab0adb335d33ea84f7622f372411f8e288bb09aee5e7632264d28d285a52c
dest="$root/target/interop"
suite="$dest/py_consul-$version"

python3 -c "import requests, aiohttp, pytest, pytest_asyncio, packaging" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check \
    "requests>=2.31" "aiohttp>=3.9" "pytest>=8" "pytest-asyncio>=0.24" packaging

if [ -f "$suite/.fetched" ]; then
  exit 0
fi
mkdir -p "$dest"
tarball="$dest/py_consul-$version.tar.gz"
if ! echo "$sha256  $tarball" | sha256sum -c --status 2>/dev/null; then
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "py-consul==$version" -d "$dest"
fi
echo "$sha256  $tarball" | sha256sum -c --status || {
  echo "py-consul $version from PyPI does not have the expected sha256" >&2
  exit 1
}
rm -rf "$suite"
tar -xzf "$tarball" -C "$dest"
touch "$suite/.fetched"
echo "py-consul $version test suite in $suite"
