#!/usr/bin/env python3
"""Differential peer for fieldgate's BLE codec: decodes advertisements with independent
Python decoders and prints one JSON line per input line.

Input (stdin, JSON lines), one of:
  {"kind": "bthome", "address": "AA:BB:..", "service_data": "<hex after the UUID>",
   "key": "<32 hex>" | null, "rssi": -60}                    -> bthome-ble
  {"kind": "xiaomi", "address": "..", "service_data": "<hex of 0x181A data>"} -> bleparser
  {"kind": "ibeacon", "address": "..", "data": "<hex of Apple data after 0x004C>"} -> bleparser
  {"kind": "ruuvi", "data": "<hex of manufacturer data after 0x0499>"} -> ruuvitag-sensor

Output for bthome: {"sensors": {key: [value, unit]}, "binary": {key: bool},
"events": {key: [event_type, properties]}, "sleepy", "bindkey_verified", "downgrade",
"firmware", "device_type_id"}; timestamps become integer seconds. For the others, the
decoder's own dict. {"error": "..."} when the decoder raised.

With `--bench N` it decodes every bthome input N times the way Home Assistant does per
advertisement (a BTHomeBluetoothDeviceData per device, `update(service_info)`) and prints
{"adverts": A, "ns_per_advert": X} instead.
"""

import json
import sys
import time
from datetime import datetime

from bleak.backends.device import BLEDevice
from bleparser import BleParser
from bthome_ble import BTHomeBluetoothDeviceData
from habluetooth import BluetoothServiceInfoBleak
from ruuvitag_sensor.decoder import get_decoder

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"


def plain(v):
    if isinstance(v, datetime):
        return int(v.timestamp())
    if hasattr(v, "value"):  # enums (units)
        return v.value
    return v


def service_info(inp, now):
    mac = inp["address"]
    return BluetoothServiceInfoBleak(
        name="fieldgate-peer",
        address=mac,
        rssi=inp.get("rssi", -60),
        manufacturer_data={},
        service_data={BTHOME_UUID: bytes.fromhex(inp["service_data"])},
        service_uuids=[BTHOME_UUID],
        source="local",
        device=BLEDevice(mac, "fieldgate-peer", None),
        advertisement=None,
        connectable=False,
        time=now,
        tx_power=None,
    )


def bthome_parser(inp):
    key = inp.get("key")
    return BTHomeBluetoothDeviceData(bindkey=bytes.fromhex(key) if key else None)


def decode_bthome(inp):
    dev = bthome_parser(inp)
    upd = dev.update(service_info(inp, time.monotonic()))
    sw = None
    for info in upd.devices.values():
        if info.sw_version and not info.sw_version.startswith("BTHome BLE"):
            sw = info.sw_version
    return {
        "sensors": {
            k.key: [plain(v.native_value), plain(upd.entity_descriptions[k].native_unit_of_measurement)]
            for k, v in upd.entity_values.items()
        },
        "binary": {k.key: bool(v.native_value) for k, v in upd.binary_entity_values.items()},
        "events": {k.key: [e.event_type, e.event_properties] for k, e in upd.events.items()},
        "sleepy": dev.sleepy_device,
        "bindkey_verified": dev.bindkey_verified,
        "downgrade": dev.downgrade_detected,
        "firmware": sw,
        "device_type_id": dev.device_type_id,
    }


def ad_element(ad_type, head, data):
    body = bytes([ad_type]) + head + data
    return bytes([len(body)]) + body


def mac_bytes(text):
    return bytes.fromhex(text.replace(":", ""))


def decode_bleparser(inp):
    parser = BleParser()
    mac = mac_bytes(inp["address"])
    if inp["kind"] == "xiaomi":
        element = ad_element(0x16, b"\x1a\x18", bytes.fromhex(inp["service_data"]))
        sensor, tracker = parser.parse_advertisement(mac, -60, service_data_list=[element])
    else:
        element = ad_element(0xFF, b"\x4c\x00", bytes.fromhex(inp["data"]))
        sensor, tracker = parser.parse_advertisement(mac, -60, man_spec_data_list=[element])
    out = dict(sensor or {})
    out.update(tracker or {})
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in out.items()}


def decode_ruuvi(inp):
    return get_decoder(5).decode_data(inp["data"])


def decode(inp):
    kind = inp["kind"]
    if kind == "bthome":
        return decode_bthome(inp)
    if kind in ("xiaomi", "ibeacon"):
        return decode_bleparser(inp)
    if kind == "ruuvi":
        return decode_ruuvi(inp)
    raise ValueError(f"unknown kind {kind}")


def bench(inputs, rounds):
    inputs = [i for i in inputs if i["kind"] == "bthome"]
    infos = [service_info(i, 0.0) for i in inputs]
    n = 0
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for inp, si in zip(inputs, infos):
            # One parser per device, as Home Assistant keeps; every advert here is from a
            # new device, so the parser is built per advert (its state would otherwise
            # drop repeats of the same packet id or counter in the next round).
            bthome_parser(inp).update(si)
            n += 1
    elapsed = time.perf_counter_ns() - start
    return {"adverts": n, "ns_per_advert": elapsed / max(n, 1)}


def main():
    lines = [json.loads(line) for line in sys.stdin if line.strip()]
    if "--bench" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--bench") + 1])
        print(json.dumps(bench(lines, rounds)))
        return
    out = []
    for inp in lines:
        try:
            out.append(json.dumps(decode(inp), default=str))
        except Exception as e:  # noqa: BLE001 - a peer's failure is data for the test
            out.append(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.stdout.write("\n".join(out) + ("\n" if out else ""))


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    main()
