#!/usr/bin/env python3
"""zigpy-znp as the host stack of fieldgate's coordinator emulator.

    python zigpy_host.py PORT DIR MODELS

zigpy's ControllerApplication with the zigpy-znp radio library on
socket://127.0.0.1:PORT (`fieldgate emulate zigbee --listen 127.0.0.1:0`), a database in
DIR. On a factory-new coordinator it starts (forming a network: zigpy-znp writes the
network into NV itself), permits joining, and waits until a device of each Basic modelId
in MODELS (comma-separated) has joined and been initialized (zigpy reads its descriptors
and Basic attributes). Prints JSON lines ({"step": ...}), {"done": true} at the end, or
{"error": "...", "step": "...", "requests": [the last MT exchanges]} with exit code 1.
"""

import asyncio
import collections
import json
import logging
import os
import sys

import zigpy.config as zconf
from zigpy_znp.zigbee.application import ControllerApplication

PORT, DIR, MODELS = sys.argv[1], sys.argv[2], [m for m in sys.argv[3].split(",") if m]
STEP = "init"
EXCHANGES = collections.deque(maxlen=20)


def say(**o):
    print(json.dumps(o, default=str), flush=True)


class LastFrames(logging.Handler):
    """Keeps zigpy-znp's debug lines about MT frames sent and received."""

    def emit(self, record):
        msg = record.getMessage()
        if record.name.startswith("zigpy_znp.api") and (
            "Sending request" in msg or "Received command" in msg or "Received" in msg
        ):
            EXCHANGES.append(msg[:300])


class Listener:
    def __init__(self):
        self.joined = set()
        self.initialized = {}

    def device_joined(self, device):
        self.joined.add(str(device.ieee))

    def raw_device_initialized(self, device):
        pass

    def device_initialized(self, device):
        self.initialized[str(device.ieee)] = device

    def device_left(self, device):
        pass


async def main():
    global STEP
    os.makedirs(DIR, exist_ok=True)
    config = {
            zconf.CONF_DEVICE: {zconf.CONF_DEVICE_PATH: f"socket://127.0.0.1:{PORT}"},
            zconf.CONF_DATABASE: os.path.join(DIR, "zigpy.db"),
            zconf.CONF_NWK: {zconf.CONF_NWK_CHANNEL: 15},
            zconf.CONF_NWK_BACKUP_ENABLED: False,
            zconf.CONF_TOPO_SCAN_ENABLED: False,
    }
    STEP = "start (form)"
    app = await asyncio.wait_for(
        ControllerApplication.new(config, auto_form=True, start_radio=True), 120
    )
    listener = Listener()
    app.add_listener(listener)
    ni = app.state.network_info
    say(
        step=STEP,
        pan_id=f"{ni.pan_id:#06x}",
        channel=ni.channel,
        extended_pan_id=str(ni.extended_pan_id),
        nwk=f"{app.state.node_info.nwk:#06x}",
        ieee=str(app.state.node_info.ieee),
    )
    STEP = "permit join"
    await app.permit(120)
    STEP = "join and initialize"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while True:
        models = {ieee: d.model for ieee, d in listener.initialized.items()}
        if all(m in models.values() for m in MODELS):
            break
        if loop.time() > deadline:
            raise TimeoutError(
                f"timed out after 90 s: initialized {sorted(models.values(), key=str)} "
                f"of {MODELS} (joined: {sorted(listener.joined)})"
            )
        await asyncio.sleep(0.1)
    for ieee, d in listener.initialized.items():
        say(
            step=STEP,
            ieee=ieee,
            nwk=f"{d.nwk:#06x}",
            model=d.model,
            manufacturer=d.manufacturer,
            endpoints=sorted(e for e in d.endpoints if e != 0),
        )
    # The topology scan ZHA's network map runs: Mgmt_Lqi and Mgmt_Rtg over ZDO.
    STEP = "topology scan"
    await asyncio.wait_for(app.topology.scan(), 60)
    say(
        step=STEP,
        neighbors=len(app.topology.neighbors.get(app.state.node_info.ieee, [])),
        routes=sum(len(r) for r in app.topology.routes.values()),
    )
    STEP = "shutdown"
    await app.shutdown()
    # A restart on the same stick: zigpy-znp sends BDB formation again, and must find
    # the network it formed (its PAN id, channel, extended PAN id and devices' keys).
    STEP = "restart"
    app = await asyncio.wait_for(
        ControllerApplication.new(config, auto_form=False, start_radio=True), 120
    )
    # What a backup reads: the network and the devices in the coordinator's tables.
    await app.load_network_info(load_devices=True)
    ni = app.state.network_info
    say(
        step=STEP,
        pan_id=f"{ni.pan_id:#06x}",
        channel=ni.channel,
        extended_pan_id=str(ni.extended_pan_id),
        devices=len(ni.nwk_addresses or {}),
        children=len(ni.children or []),
        link_keys=len(ni.key_table or []),
    )
    await app.shutdown()
    say(done=True)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("ZIGPY_DEBUG") else logging.WARNING,
        stream=sys.stderr,
    )
    logging.getLogger("zigpy_znp").setLevel(logging.DEBUG)
    logging.getLogger().addHandler(LastFrames())
    try:
        asyncio.run(main())
    except BaseException as e:  # noqa: BLE001 - reported, then a non-zero exit
        import traceback

        traceback.print_exc()
        say(error=f"{type(e).__name__}: {e}", step=STEP, requests=list(EXCHANGES))
        sys.exit(1)
