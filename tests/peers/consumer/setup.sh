#!/usr/bin/env bash
# Installs what the reference MQTT consumer (docs/examples/fieldgate_consumer.py)
# needs, paho-mqtt pinned in requirements.txt (it has no dependencies of its own),
# into a venv at tests/peers/consumer/.venv (gitignored). Idempotent: does nothing
# when the venv already holds these pins. Used when FIELDGATE_PEERS=1
# (tests/it/mqtt/consumer.rs).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
stamp="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat .venv/.fieldgate-stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
rm -rf .venv
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
echo "$stamp" > .venv/.fieldgate-stamp
echo "consumer peers installed in $(pwd)/.venv: $(.venv/bin/pip freeze | grep -i '^paho-mqtt==')"
