#!/usr/bin/env bash
# Runs zwave-js's Driver (driver-host.cjs: start-up, interviews, reports, inclusion and
# exclusion of the waiting node, NVM backup) against `fieldgate emulate zwave --listen`, both
# inside a fresh network namespace with only loopback, so that neither can reach (or announce
# on) any network. Needs root or unprivileged user namespaces (`unshare -rn`).
#
#   run-driver.sh FIELDGATE_BIN OUT_DIR TIMEOUT_S [EMULATOR_ARGS...]
#
# Leaves OUT_DIR/driver.out (the script's JSON events among zwave-js's log lines),
# OUT_DIR/driver.err, OUT_DIR/nvm.bin (the NVM zwave-js read back) and OUT_DIR/emulator.log
# (the emulator's log, with every value its nodes sent); exits with the script's exit code.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"; out="$2"; timeout_s="$3"; shift 3
mkdir -p "$out"
if [ "${FIELDGATE_IN_NETNS:-}" != 1 ]; then
  exec env FIELDGATE_IN_NETNS=1 unshare -rn "$0" "$bin" "$out" "$timeout_s" "$@"
fi
ip link set lo up
fifo="$out/emulator.first"
rm -f "$fifo"; mkfifo "$fifo"
"$bin" emulate zwave --listen 127.0.0.1:0 "$@" >"$fifo" 2>"$out/emulator.log" &
emu=$!
trap 'kill "$emu" 2>/dev/null || true; wait "$emu" 2>/dev/null || true' EXIT
read -r first <"$fifo"
url="${first#listening }"
rm -rf "$out/cache"
code=0
node "$here/driver-host.cjs" "$url" "$out/cache" "$timeout_s" 1 "$out/nvm.bin" membership \
  >"$out/driver.out" 2>"$out/driver.err" || code=$?
exit "$code"
