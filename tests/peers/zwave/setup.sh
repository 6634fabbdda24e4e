#!/usr/bin/env bash
# Installs the Z-Wave peers, pinned in package.json / package-lock.json:
# - zwave-js's Serial API and CC parsers (@zwave-js/serial, @zwave-js/cc) for the codec's
#   differential test (protocols/zwave/tests/peers.rs) and benchmark;
# - zwave-js's Driver (zwave-js 15.29.0) for the emulator test (tests/it/zwave_emulator.rs,
#   run-driver.sh); @zwave-js/nvmedit, which made the emulator's NVM image (make-nvm.cjs) and
#   parses it back;
# - zwave-js's mock controller (its mock-server, driven by mock-server.cjs and
#   mock/gateway.cjs): the independent controller the driver is tested against
#   (tests/it/zwave_mock/, run inside `unshare -n`).
# Idempotent; used when FIELDGATE_PEERS=1. Install scripts are not run: the serial port
# bindings they would build are not needed (zwave-js reaches the emulator over tcp://, the
# mock opens no real port).
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/@zwave-js/cc/package.json ] &&
   [ -f node_modules/zwave-js/package.json ] &&
   [ -f node_modules/zwave-js/bin/mock-server.cjs ] &&
   [ -f node_modules/@zwave-js/nvmedit/package.json ] &&
   [ -f node_modules/.package-lock.json ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "zwave-js peers installed in $(pwd)/node_modules"
