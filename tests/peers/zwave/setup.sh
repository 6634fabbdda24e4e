#!/usr/bin/env bash
# Installs the differential peer: zwave-js's Serial API and CC parsers (@zwave-js/serial and
# @zwave-js/cc, pinned in package.json / package-lock.json, same major as zwave-js 15).
# Idempotent. Used when FIELDGATE_PEERS=1 (protocols/zwave/tests/peers.rs) and by the codec
# benchmark (protocols/zwave/examples/decode_bench.rs). Install scripts are not run: the
# parsers are plain JavaScript.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/@zwave-js/cc/package.json ] &&
   [ -f node_modules/.package-lock.json ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "zwave-js parsers installed in $(pwd)/node_modules"
