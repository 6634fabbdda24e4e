#!/usr/bin/env python3
"""CPU of `fieldgate run` with its serial radios' emulators sending at each link's
line rate, drivers included: each emulator (`fieldgate emulate zigbee|zwave`, a
separate process, not counted) serves its radio over TCP as a network coordinator
or ser2net would, its devices report every `--report-interval`, and the daemon
decodes, records, publishes to a local mosquitto and deletes on PUBACK. The
daemon's CPU (every thread: driver, hub, store writer, uplink; /proc/PID/stat) is
sampled over `--seconds` of steady reporting, with the telemetry messages a
subscriber counts on the broker in the same window, against the same daemon idle
with the same devices (the emulator's devices silent, `--report-interval 1h`) in
the same run.

    cargo build --release
    python3 benches/linerate.py --fieldgate target/release/fieldgate \\
        --radio zigbee --devices 64 --report-interval 500ms
    # both radios in one daemon, each at its line rate:
    python3 benches/linerate.py --fieldgate target/release/fieldgate \\
        --radio zigbee,zwave --devices 64,137 --report-interval 500ms

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

from benchlib import api, free_port, mqtt_subscribe

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


def emulator(fieldgate, radio, devices, interval):
    if radio == "zigbee":
        cmd = [
            fieldgate, "emulate", "zigbee", "--listen", "127.0.0.1:0",
            "--devices", f"temp-humidity={devices}", "--report-interval", interval,
            "--join-spacing", "5ms",
        ]
    else:
        cmd = [
            fieldgate, "emulate", "zwave", "--listen", "127.0.0.1:0",
            "--nodes", f"multisensor={devices}", "--pending", "none",
            "--report-interval", interval,
        ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn")
    )
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, line.split()[1]


NAMES = {"zigbee": "zb0", "zwave": "zw0"}


def run(fieldgate, radios, interval, port, seconds, linger, settle):
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
        for radio, devices in radios:
            emu, url = emulator(fieldgate, radio, devices, interval)
            emus.append(emu)
            sections += f'[[radio]]\nname = "{NAMES[radio]}"\nprotocol = "{radio}"\nport = "{url}"\n'
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
            deadline = time.monotonic() + 30
            while True:
                status, body = api(sock, "POST", "/v1/radios/zb0/permit-join", {"seconds": 250})
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"permit-join: {status} {body[:200]!r}")
                time.sleep(0.5)
        # Z-Wave nodes already in the controller's network are found at start and
        # wait for admission (`pending`); their readings are recorded and published
        # all the same. They are listed once interviewed or when they first speak,
        # whichever comes first: silent nodes are not waited for here, the settle
        # time below covers their interviews.
        wanted = {
            radio: 0 if radio == "zwave" and interval == "1h" else devices
            for radio, devices in radios
        }
        deadline = time.monotonic() + 240
        while True:
            status, body = api(sock, "GET", "/v1/devices")
            listed = json.loads(body) if status == 200 else []
            short = {
                radio: n
                for radio, n in wanted.items()
                if sum(
                    1
                    for d in listed
                    if d.get("protocol") == radio
                    and d.get("lifecycle") in (("active",) if radio == "zigbee" else ("active", "pending"))
                )
                < n
            }
            if not short:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"devices missing after 240 s: {short}")
            time.sleep(1)
        # Settle: interviews done, reporting configured, the first reports out. The
        # Z-Wave driver interviews the controller's nodes one after another at
        # start (about 0.45 s each against the emulator).
        if settle is None:
            settle = max(5 if radio == "zigbee" else 10 + devices // 2 for radio, devices in radios)
        time.sleep(settle)
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
        "linger": linger or "default",
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
        help="zigbee, zwave, or both (`zigbee,zwave`: one daemon with both radios)",
    )
    ap.add_argument(
        "--devices",
        default="64",
        help="devices per radio, in --radio's order (e.g. `64,137`)",
    )
    ap.add_argument("--report-interval", default="500ms")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--linger", default=None, help="[store] linger; the shipped default when not given")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds between the devices being in and the measurement (default: 5 for "
        "Zigbee, 10 + devices / 2 for Z-Wave, whose driver interviews every node at start)",
    )
    args = ap.parse_args()
    names = args.radio.split(",")
    counts = [int(n) for n in args.devices.split(",")]
    if len(names) != len(counts) or any(r not in NAMES for r in names):
        ap.error("--radio takes zigbee and/or zwave, and --devices one count for each")
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
                    args.fieldgate, radios, interval, port,
                    args.seconds, args.linger, args.settle,
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
