#!/usr/bin/env bash
# Installs the LoRaWAN differential peer: npm lora-packet at the version pinned in
# package.json / package-lock.json (npm ci: exactly the locked tree, no install scripts).
# Idempotent. Used when FIELDGATE_PEERS=1 (protocols/lora/tests/peers.rs) and by
# protocols/lora/examples/verify_bench.rs.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/lora-packet/package.json ] &&
   grep -q '"version": "0.9.3"' node_modules/lora-packet/package.json; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --silent
echo "lora-packet $(node -p 'require("./node_modules/lora-packet/package.json").version') installed in $(pwd)/node_modules"
