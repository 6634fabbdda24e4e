#!/usr/bin/env bash
# Short fuzz runs of every cargo-fuzz target in the protocol crates (each
# protocols/<p>/fuzz crate: zigbee's mt_stream and zcl_frame, zwave's serial_stream,
# ble's advertisement, lora's phy_payload, at_stream and gwmp_datagram). The machine
# has only a stable toolchain; RUSTC_BOOTSTRAP lets it accept the sanitizer flags
# cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
for dir in protocols/*/fuzz; do
  [ -f "$dir/Cargo.toml" ] || continue
  crate_dir=$(dirname "$dir")
  for target in $(cd "$crate_dir" && cargo fuzz list); do
    echo "fuzz $crate_dir $target for ${seconds}s"
    (cd "$crate_dir" && cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -3)
  done
done
