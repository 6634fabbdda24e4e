#!/usr/bin/env python3
"""CPU of `fieldgate run` with its radios' emulators sending at each link's line
rate, drivers included. The serial radios' emulators (`fieldgate emulate
zigbee|zwave`, separate processes, not counted) serve their radio on a
pseudo-terminal the daemon opens as a serial port, as a radio plugged into the
gateway is (`--link tcp`: over TCP instead, as a network coordinator or ser2net
would); their devices report every `--report-interval`. The LoRa packet forwarder's (`fieldgate emulate lora-gwmp`,
not counted either) sends real GWMP datagrams to the radio's UDP port for
`--devices` ABP devices (keys given to the gateway through its API first), each
reporting once per `--lora-interval`. BLE has no link to emulate outside the
daemon: its radio is `sim://ble` with `sim_street` set to its device count, the
emulator's cost inside the daemon's. The daemon decodes, records, publishes to a
local mosquitto and deletes on PUBACK. Its CPU (every thread: driver, hub, store
writer, uplink; /proc/PID/stat) is sampled over `--seconds` of steady reporting,
with the telemetry messages a subscriber counts on the broker in the same window,
against the same daemon idle with the same radios (the devices silent:
`--report-interval 1h`, LoRa's interval 1 h, no BLE street) in the same run.

    cargo build --release
    python3 benches/linerate.py --fieldgate target/release/fieldgate \\
        --radio zigbee --devices 64 --report-interval 500ms
    # every radio in one daemon, each at its line rate:
    python3 benches/linerate.py --fieldgate target/release/fieldgate \\
        --radio zigbee,zwave,lora,ble --devices 64,137,100,5000 --report-interval 500ms

Needs `mosquitto` on the PATH; only the Python standard library otherwise.
Prints one JSON line per run and writes linerate-<radios>.json in the working
directory.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import api, free_port, free_udp_port, mqtt_subscribe

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class Counter:
    """A raw MQTT 3.1.1 subscriber (QoS 0, no keep-alive) counting PUBLISH packets
    whose topic ends with `/telemetry`."""

    def __init__(self, port, topic):
        self.count = 0
        self.lock = threading.Lock()
        # No keep-alive: it sends nothing while the daemon settles.
        s = mqtt_subscribe(port, "linerate-sub", topic, keep_alive=0)
        s.settimeout(None)
        self.sock = s
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                # Fixed header: type, remaining length (varint).
                if len(buf) < 2:
                    break
                n, mult, i = 0, 1, 1
                while i < len(buf) and i <= 4:
                    b = buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    break
                if len(buf) < i + n:
                    break
                packet, buf = buf[: i + n], buf[i + n :]
                if packet[0] >> 4 == 3:
                    tlen = int.from_bytes(packet[i : i + 2], "big")
                    if packet[i + 2 : i + 2 + tlen].endswith(b"/telemetry"):
                        with self.lock:
                            self.count += 1

    def read(self):
        with self.lock:
            return self.count


def emulator(fieldgate, radio, devices, interval, link):
    """Starts a serial radio's emulator; returns it and the port for the daemon's config."""
    endpoint = ["--pty"] if link == "pty" else ["--listen", "127.0.0.1:0"]
    if radio == "zigbee":
        cmd = [
            fieldgate, "emulate", "zigbee", *endpoint,
            "--devices", f"temp-humidity={devices}", "--report-interval", interval,
            "--join-spacing", "5ms",
        ]
    else:
        cmd = [
            fieldgate, "emulate", "zwave", *endpoint,
            "--nodes", f"multisensor={devices}", "--pending", "none",
            "--report-interval", interval,
        ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn")
    )
    line = proc.stdout.readline().decode().strip()
    # `listening tcp://HOST:PORT` or `pty /dev/pts/N`
    if not line.startswith("listening " if link == "tcp" else "pty "):
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, line.split()[1]


NAMES = {"zigbee": "zb0", "zwave": "zw0", "lora": "lr0", "ble": "bt0"}


def permit_join(sock, name):
    deadline = time.monotonic() + 30
    while True:
        status, body = api(sock, "POST", f"/v1/radios/{name}/permit-join", {"seconds": 250})
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"permit-join {name}: {status} {body[:200]!r}")
        time.sleep(0.5)


def lora_forwarder(fieldgate, sock, udp, devices, interval, work):
    """Gives the gateway the forwarder's device keys, opens a join window, then starts
    the forwarder with `devices` ABP devices reporting once per `interval` seconds."""
    keys = os.path.join(work, "lora-keys.jsonl")
    subprocess.run(
        [fieldgate, "emulate", "lora-gwmp", "--abp-devices", str(devices), "--write-keys", keys],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(keys) as f:
        for line in f:
            status, body = api(sock, "POST", "/v1/lora/devices", json.loads(line))
            if status != 200:
                raise SystemExit(f"lora keys: {status} {body[:200]!r}")
    permit_join(sock, NAMES["lora"])
    return subprocess.Popen(
        [
            fieldgate, "emulate", "lora-gwmp", "--server", f"127.0.0.1:{udp}",
            "--interval", str(interval), "--abp-devices", str(devices),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, RUST_LOG="warn"),
    )


def run(fieldgate, radios, interval, lora_interval, port, seconds, linger, settle, link,
        interview_wait):
    """One daemon with one emulator per radio; `radios` is [(radio, devices)]."""
    work = tempfile.mkdtemp(prefix="linerate-")
    sock = os.path.join(work, "api.sock")
    emus = []
    conf = os.path.join(work, "fieldgate.toml")
    prefix = "linerate/" + "-".join(r for r, _ in radios)
    store = f'[store]\nlinger = "{linger}"\n' if linger else ""
    proc = None
    try:
        sections = ""
        udp = None
        silent = interval == "1h"
        for radio, devices in radios:
            if radio == "lora":
                udp = free_udp_port()
                url = f"udp://127.0.0.1:{udp}"
            elif radio == "ble":
                url = "sim://ble"
            else:
                emu, url = emulator(fieldgate, radio, devices, interval, link)
                emus.append(emu)
            sections += f'[[radio]]\nname = "{NAMES[radio]}"\nprotocol = "{radio}"\nport = "{url}"\n'
            if radio == "ble":
                street = 0 if silent else devices
                sections += f"[radio.options]\nsim_street = {street}\nsim_faults = false\n"
        with open(conf, "w") as f:
            f.write(
                f'[gateway]\nid = "linerate"\nstate_dir = "{work}/state"\n'
                f'[api]\nsocket = "{sock}"\n'
                f'[upstream]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "linerate"\n'
                f'topic_prefix = "{prefix}"\n'
                f"{store}{sections}"
            )
        proc = subprocess.Popen(
            [fieldgate, "--config", conf, "run"],
            env=dict(os.environ, RUST_LOG="warn"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not open its API socket")
            time.sleep(0.1)
        counter = Counter(port, prefix + "/#")
        if any(r == "zigbee" for r, _ in radios):
            # The emulated devices join through a join window, as a technician pairs.
            permit_join(sock, NAMES["zigbee"])
        for radio, devices in radios:
            if radio == "lora":
                every = 3600 if silent else lora_interval
                emus.append(lora_forwarder(fieldgate, sock, udp, devices, every, work))
        # Z-Wave nodes already in the controller's network are found at start and
        # wait for admission (`pending`); their readings are recorded and published
        # all the same. The driver interviews them one after another, which takes
        # over a minute for 137 nodes and longer while they report. The measurement
        # starts once every node is interviewed (listed with its manufacturer), so
        # that no interview traffic is in it, or after `interview_wait` seconds; the
        # result says how many were interviewed by then. LoRa devices are listed when
        # they first speak; BLE's are passers-by, not waited for.
        wanted = {
            radio: 0 if (radio == "lora" and silent) or radio == "ble" else devices
            for radio, devices in radios
        }

        def ready(radio, d):
            if d.get("protocol") != radio:
                return False
            if radio == "zwave":
                return d.get("lifecycle") in ("active", "pending") and bool(d.get("manufacturer"))
            return d.get("lifecycle") == "active"

        started = time.monotonic()
        interviewed = None
        while True:
            status, body = api(sock, "GET", "/v1/devices")
            listed = json.loads(body) if status == 200 else []
            count = {radio: sum(1 for d in listed if ready(radio, d)) for radio in wanted}
            interviewed = count.get("zwave")
            short = {radio: n for radio, n in wanted.items() if count[radio] < n}
            if not short:
                break
            waited = time.monotonic() - started
            if set(short) == {"zwave"} and waited > interview_wait:
                break
            if waited > max(240, interview_wait):
                raise SystemExit(f"devices missing after {waited:.0f} s: {short}")
            time.sleep(1)
        if any(r == "ble" for r, _ in radios):
            # BLE devices are discovered, not joined: a technician adopts the room's
            # (here with the passers-by discovered so far) for their telemetry to go up.
            time.sleep(5)
            status, body = api(sock, "GET", "/v1/devices")
            for d in json.loads(body) if status == 200 else []:
                if d.get("protocol") == "ble" and d.get("lifecycle") == "pending":
                    api(sock, "POST", f"/v1/devices/{d['id']}/adopt", {})
        # Settle: reporting configured, the first reports out.
        time.sleep(5 if settle is None else settle)
        c0, t0, m0 = cpu_ticks(proc.pid), time.monotonic(), counter.read()
        time.sleep(seconds)
        c1, t1, m1 = cpu_ticks(proc.pid), time.monotonic(), counter.read()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        for emu in emus:
            emu.terminate()
            emu.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    wall = t1 - t0
    cpu_s = (c1 - c0) / TICK
    msgs = m1 - m0
    return {
        "radios": ",".join(r for r, _ in radios),
        "devices": ",".join(str(n) for _, n in radios),
        "report_interval": interval,
        "lora_interval_s": (3600 if silent else lora_interval) if udp else None,
        "linger": linger or "default",
        "link": link,
        "zwave_interviewed": interviewed,
        "seconds": round(wall, 1),
        "telemetry_per_s": round(msgs / wall, 1),
        "core_percent": round(100 * cpu_s / wall, 2),
        "us_cpu_per_telemetry": round(1e6 * cpu_s / msgs, 1) if msgs else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fieldgate", required=True)
    ap.add_argument(
        "--radio",
        default="zigbee",
        help="zigbee, zwave, lora, ble, or several comma-separated (one daemon with all of them)",
    )
    ap.add_argument(
        "--devices",
        default="64",
        help="devices per radio, in --radio's order (e.g. `64,137,100,5000`; for BLE the "
        "street's random addresses)",
    )
    ap.add_argument("--report-interval", default="500ms")
    ap.add_argument(
        "--lora-interval",
        type=int,
        default=4,
        help="seconds between two uplinks of one LoRa device (100 devices every 4 s: 25/s)",
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--linger", default=None, help="[store] linger; the shipped default when not given")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--link",
        choices=("pty", "tcp"),
        default="pty",
        help="how the Zigbee and Z-Wave emulators reach the daemon: a pseudo-terminal opened "
        "as a serial port (default), or TCP",
    )
    ap.add_argument(
        "--interview-wait",
        type=float,
        default=600,
        help="seconds to wait for every Z-Wave node to be interviewed before measuring "
        "anyway (the result's `zwave_interviewed` says how many were)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds between the devices being in (Z-Wave nodes interviewed) and the "
        "measurement (default: 5)",
    )
    args = ap.parse_args()
    names = args.radio.split(",")
    counts = [int(n) for n in args.devices.split(",")]
    if len(names) != len(counts) or any(r not in NAMES for r in names):
        ap.error("--radio takes zigbee, zwave, lora and/or ble, and --devices one count for each")
    radios = list(zip(names, counts))
    port = free_port()
    broker = subprocess.Popen(
        ["mosquitto", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    results = []
    try:
        for _ in range(args.runs):
            for interval in (args.report_interval, "1h"):
                r = run(
                    args.fieldgate, radios, interval, args.lora_interval, port,
                    args.seconds, args.linger, args.settle, args.link, args.interview_wait,
                )
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        broker.terminate()
        broker.wait()
    out = "linerate-" + "-".join(names) + ".json"
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("results:", out)


if __name__ == "__main__":
    sys.exit(main())
