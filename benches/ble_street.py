#!/usr/bin/env python3
"""CPU and RSS of `fieldgate run` with a BLE radio under a busy street, against the same
daemon hearing only the room, in the same run.

The radio is `sim://ble` in real time: the room's six devices, plus (street run)
`sim_street = 5000` random addresses passing by (mostly phones with Apple "Nearby"
manufacturer data, some BTHome sensors and iBeacons). Each run starts a fresh state
directory, lets the daemon settle for --warmup seconds, then measures for --seconds:
CPU (utime + stime from /proc/PID/stat) as % of one core, VmRSS at the end and VmHWM
(peak), and the radio's counters and pending devices from `fieldgate status --json`.
The uplink points at a closed port: the gateway works offline, as on a site whose
uplink is down (everything it keeps goes to the outbox).

    cargo build --release
    python3 benches/ble_street.py --fieldgate target/release/fieldgate

Only the Python standard library.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command: state is fields[0]; utime and stime are stat fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split()[:2]
                vals[k.rstrip(":")] = int(v)
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def run(fieldgate, street, warmup, seconds):
    work = tempfile.mkdtemp(prefix="ble-street-")
    sock = os.path.join(work, "api.sock")
    conf = os.path.join(work, "fieldgate.toml")
    with open(conf, "w") as f:
        f.write(
            f'[gateway]\nid = "ble-street-{street}"\nstate_dir = "{work}/state"\n'
            f'[api]\nsocket = "{sock}"\n'
            f'[upstream]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
            f'client_id = "ble-street-{street}"\n'
            f'[[radio]]\nname = "ble0"\nprotocol = "ble"\nport = "sim://ble"\n'
            f"[radio.options]\nsim_street = {street}\n"
        )
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(
        [fieldgate, "--config", conf, "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "log"), "w"),
    )
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            sys.exit(f"the daemon exited: see {work}/log")
        t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), cpu_ticks(proc.pid)
        rss, hwm = rss_kib(proc.pid)
        status = subprocess.run(
            [fieldgate, "--config", conf, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        radio = {}
        if status.returncode == 0:
            s = json.loads(status.stdout)
            radio = next((r for r in s.get("radios", []) if r.get("name") == "ble0"), {})
        devices = subprocess.run(
            [fieldgate, "--config", conf, "devices", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        known = len(json.loads(devices.stdout)) if devices.returncode == 0 else None
        return {
            "street": street,
            "cpu_pct_of_one_core": round(100.0 * (c1 - c0) / TICKS / (t1 - t0), 2),
            "rss_kib": rss,
            "peak_rss_kib": hwm,
            "devices_in_registry": known,
            "counters": radio.get("counters", {}),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fieldgate", default="target/release/fieldgate")
    ap.add_argument("--street", type=int, default=5000)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    room = run(a.fieldgate, 0, a.warmup, a.seconds)
    street = run(a.fieldgate, a.street, a.warmup, a.seconds)
    print(json.dumps({"room": room, "street": street}, indent=1))
    print(
        f"room only: {room['cpu_pct_of_one_core']} % of a core, RSS {room['rss_kib']} KiB "
        f"(peak {room['peak_rss_kib']}); street of {a.street}: "
        f"{street['cpu_pct_of_one_core']} % of a core, RSS {street['rss_kib']} KiB "
        f"(peak {street['peak_rss_kib']}), {street['devices_in_registry']} devices kept, "
        f"rate-limited {street['counters'].get('rate_limited')}, "
        f"unknown format {street['counters'].get('unknown_format')}"
    )


if __name__ == "__main__":
    main()
