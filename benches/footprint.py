#!/usr/bin/env python3
"""Footprint of `fieldgate run` with a large registry, against an empty one in the
same run: start-up to READY=1 (sd_notify), start-up to the first message a
subscriber sees on the broker, RSS idle (VmRSS / VmHWM), `fieldgate devices` and
`GET /v1/devices` times.

The large registry comes from the capacity benchmark, whose devices join through
the normal join path:

    cargo bench --bench capacity -- --devices 10000 --rates 1000 --seconds 2 \\
        --keep-state target/footprint/state-10000
    cargo build --release
    python3 benches/footprint.py --fieldgate target/release/fieldgate \\
        --state target/footprint/state-10000

Needs `mosquitto` on the PATH (the daemon's uplink connects to it); only the
Python standard library otherwise. Prints a table and writes footprint.json next to
the state directory.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import api, free_port, mqtt_subscribe


def rss_kib(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                k, v = line.split()[:2]
                vals[k.rstrip(":")] = int(v)
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def rss_split_kib(pid):
    """VmRSS's two parts: the process's own memory (RssAnon: heap, stacks) and the
    pages of files it maps (RssFile: mostly the binary's code, shared and clean,
    served from the page cache)."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                k, v = line.split()[:2]
                vals[k.rstrip(":")] = int(v)
    return vals.get("RssAnon", 0), vals.get("RssFile", 0)


def api_get(sock, path):
    return api(sock, "GET", path)


def first_message(port, topic, out):
    """A raw MQTT 3.1.1 subscriber: returns when the first PUBLISH arrives."""
    s = mqtt_subscribe(port, "footprint-sub", topic)
    out["sock"] = s
    return s


def wait_publish(s):
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
        # Skip SUBACK (0x90, 5 bytes); any PUBLISH (0x3X) ends the wait.
        i = 0
        while i < len(buf):
            if buf[i] >> 4 == 3:
                return True
            if buf[i] == 0x90 and i + 5 <= len(buf):
                i += 5
                continue
            break
        buf = buf[i:]


def measure(fieldgate, state, label, port, runs):
    work = tempfile.mkdtemp(prefix="footprint-")
    sock = os.path.join(work, "api.sock")
    prefix = f"footprint/{label}"
    conf = os.path.join(work, "fieldgate.toml")
    with open(conf, "w") as f:
        f.write(
            f'[gateway]\nid = "footprint-{label}"\nstate_dir = "{state}"\n'
            f'[api]\nsocket = "{sock}"\n'
            f'[upstream]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "footprint-{label}"\n'
            f'topic_prefix = "{prefix}"\n'
        )
    notify_path = os.path.join(work, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    holder = {}
    sub = first_message(port, prefix + "/#", holder)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, RUST_LOG="warn")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [fieldgate, "--config", conf, "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready_ms = None
    while ready_ms is None:
        msg = notify.recv(4096).decode(errors="replace")
        if "READY=1" in msg:
            ready_ms = (time.monotonic() - t0) * 1000
    sub.settimeout(30)
    first_ms = (time.monotonic() - t0) * 1000 if wait_publish(sub) else float("nan")
    time.sleep(2)
    rss, hwm = rss_kib(proc.pid)
    anon, file_backed = rss_split_kib(proc.pid)
    cli, api = [], []
    count = 0
    for _ in range(runs):
        t = time.monotonic()
        out = subprocess.run(
            [fieldgate, "--socket", sock, "devices"], capture_output=True, check=True
        )
        cli.append((time.monotonic() - t) * 1000)
        t = time.monotonic()
        status, body = api_get(sock, "/v1/devices")
        api.append((time.monotonic() - t) * 1000)
        assert status == 200, body[:200]
        count = len(json.loads(body))
        lines = out.stdout.count(b"\n")
    rss_after, hwm_after = rss_kib(proc.pid)
    anon_after, file_after = rss_split_kib(proc.pid)
    proc.terminate()
    proc.wait(timeout=30)
    sub.close()
    notify.close()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "label": label,
        "devices": count,
        "cli_lines": lines,
        "ready_ms": round(ready_ms, 1),
        "first_message_ms": round(first_ms, 1),
        "rss_idle_kib": rss,
        "peak_rss_kib": hwm,
        "rss_anon_idle_kib": anon,
        "rss_file_idle_kib": file_backed,
        "rss_after_lists_kib": rss_after,
        "peak_rss_after_lists_kib": hwm_after,
        "rss_anon_after_lists_kib": anon_after,
        "rss_file_after_lists_kib": file_after,
        "devices_cli_ms_median": round(statistics.median(cli), 1),
        "devices_api_ms_median": round(statistics.median(api), 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fieldgate", required=True)
    ap.add_argument("--state", required=True, help="state dir with the large registry")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    broker = subprocess.Popen(
        ["mosquitto", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    try:
        empty = tempfile.mkdtemp(prefix="footprint-empty-")
        # A first start creates the database; the measured starts open one.
        measure(args.fieldgate, empty, "empty", port, 1)
        results = [
            measure(args.fieldgate, empty, "empty", port, args.runs),
            measure(args.fieldgate, os.path.abspath(args.state), "large", port, args.runs),
        ]
        shutil.rmtree(empty, ignore_errors=True)
    finally:
        broker.terminate()
        broker.wait()
    keys = [k for k in results[0] if k != "label"]
    print(f"{'':28}" + "".join(f"{r['label']:>14}" for r in results))
    for k in keys:
        print(f"{k:28}" + "".join(f"{r[k]:>14}" for r in results))
    out = os.path.join(os.path.dirname(os.path.abspath(args.state)), "footprint.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("results:", out)


if __name__ == "__main__":
    sys.exit(main())
