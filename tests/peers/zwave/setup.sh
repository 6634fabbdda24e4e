#!/usr/bin/env bash
# Installs the Z-Wave peers, pinned in package.json / package-lock.json:
# - zwave-js's Serial API and CC parsers (@zwave-js/serial, @zwave-js/cc): the differential
#   peer of the codec (protocols/zwave/tests/peers.rs) and the codec benchmark;
# - @zwave-js/nvmedit, which made the emulator's NVM image (make-nvm.cjs), and zwave-js's
#   Driver, the host stack run against the emulator;
# - zwave-js itself, for its mock controller (mock-server, driven by mock-server.cjs and
#   mock/gateway.cjs): the independent controller the driver is tested against
#   (tests/it/zwave_mock/, run inside `unshare -n`).
# Idempotent. Used when FIELDGATE_PEERS=1. Install scripts are not run: the parsers and the
# mock are plain JavaScript (the mock opens no real serial port).
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/@zwave-js/cc/package.json ] &&
   [ -f node_modules/zwave-js/bin/mock-server.cjs ] &&
   [ -f node_modules/.package-lock.json ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "zwave-js parsers and mock controller installed in $(pwd)/node_modules"
