#!/usr/bin/env bash
# Installs the differential peer: zigbee-herdsman's codec, unpacked from its npm tarball
# (no dependency install needed: only its pure codec modules are required). Idempotent.
# Used when FIELDGATE_PEERS=1 (tests/it/zigbee.rs) and by the codec benchmark.
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${ZIGBEE_HERDSMAN_VERSION:-11.1.1}"
if [ -f node_modules/zigbee-herdsman/package.json ] &&
   grep -q "\"version\": \"$VERSION\"" node_modules/zigbee-herdsman/package.json; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "zigbee-herdsman@$VERSION" >/dev/null)
rm -rf node_modules/zigbee-herdsman
mkdir -p node_modules/zigbee-herdsman
tar xzf "$tmp"/zigbee-herdsman-"$VERSION".tgz -C node_modules/zigbee-herdsman --strip-components=1
echo "zigbee-herdsman $VERSION unpacked in $(pwd)/node_modules"
