#!/usr/bin/env python3
"""Time from start to all nodes interviewed, and peak RSS, for `fieldgate run` and for
zwave-js's Driver, against the same zwave-js mock network of 20 always-listening nodes.

Each round starts a fresh mock controller (tests/peers/zwave/mock-server.cjs with
benches/zwave/network20.cjs: node state lives in the mock, so nothing carries over) on a
free loopback port, then one host with an empty state/cache directory:

- fieldgate: `fieldgate run` with one Z-Wave radio on `tcp://127.0.0.1:PORT` and a join
  window opened as soon as the API answers (`POST /v1/radios/zwave0/permit-join`, what
  `fieldgate pair zwave0` does: nodes a controller already has join the
  gateway in a join window); `fieldgate devices --json` is polled every 100 ms until all
  20 nodes are listed with a manufacturer and a model (the driver reports a node
  interviewed, with what it learnt, once its interview is complete);
- zwave-js: benches/zwave/zwavejs_interview.cjs (`new Driver("tcp://127.0.0.1:PORT")`),
  until it prints zwave-js's "all nodes ready".

The time is from spawning the host process to the first poll that sees all nodes done;
the peak RSS is VmHWM from /proc/PID/status of the host process at that moment. The mock
prints every command a host sends to a node, and the bench counts them (the two hosts'
interviews do not ask the same things). The hosts alternate for --rounds rounds; the
median is reported.

The mock announces itself over mDNS, so the whole run happens in a network namespace with
only loopback (the script re-runs itself under `unshare -n` when it is not in one; root,
or `unshare -rn` where unprivileged user namespaces are allowed).

    bash tests/peers/zwave/setup.sh
    cargo build --release
    python3 benches/zwave_interview.py --fieldgate target/release/fieldgate

Only the Python standard library, Node.js and the zwave-js peers of tests/peers/zwave.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import UnixHTTP, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(ROOT, "tests", "peers", "zwave")
NETWORK = os.path.join(HERE, "zwave", "network20.cjs")
ZWAVEJS = os.path.join(HERE, "zwave", "zwavejs_interview.cjs")
NODES = 20
POLL = 0.1


def interfaces():
    with open("/proc/net/dev") as f:
        return [l.split(":", 1)[0].strip() for l in f.readlines()[2:] if ":" in l]


def in_loopback_netns():
    return interfaces() == ["lo"]


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def permit_join(sock, radio, seconds):
    """POST /v1/radios/RADIO/permit-join (what `fieldgate pair` does, without its watch)."""
    try:
        c = UnixHTTP(sock)
        c.request(
            "POST",
            f"/v1/radios/{radio}/permit-join",
            body=json.dumps({"seconds": seconds}),
            headers={"Content-Type": "application/json"},
        )
        r = c.getresponse()
        body = r.read()
        c.close()
    except OSError:
        return False  # not listening yet
    if r.status == 200:
        return True
    if r.status == 409:
        return False  # the radio is still starting
    sys.exit(f"permit-join refused ({r.status}): {body.decode(errors='replace')}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_mock(work):
    port = free_port()
    log = open(os.path.join(work, "mock.log"), "w+")
    proc = subprocess.Popen(
        ["node", "mock-server.cjs", "-i", "127.0.0.1", "-p", str(port), "-c", NETWORK],
        cwd=PEER,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    until = time.monotonic() + 30
    while time.monotonic() < until:
        log.seek(0)
        if "Server listening" in log.read():
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    sys.exit(f"the mock server did not start: see {work}/mock.log")


def run_fieldgate(fieldgate, port, work, timeout):
    sock = os.path.join(work, "api.sock")
    conf = os.path.join(work, "fieldgate.toml")
    with open(conf, "w") as f:
        f.write(
            f'[gateway]\nid = "zwave-bench"\nstate_dir = "{work}/state"\n'
            f'[api]\nsocket = "{sock}"\n'
            f'[upstream]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
            f'client_id = "zwave-bench"\n'
            f'[[radio]]\nname = "zwave0"\nprotocol = "zwave"\n'
            f'port = "tcp://127.0.0.1:{port}"\n'
        )
    env = dict(os.environ, RUST_LOG="warn")
    cli = lambda *args: subprocess.run(
        [fieldgate, "--config", conf, *args], capture_output=True, text=True, timeout=30
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [fieldgate, "--config", conf, "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "fieldgate.log"), "w"),
    )
    try:
        paired = False
        done = 0
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                sys.exit(f"the daemon exited: see {work}/fieldgate.log")
            if not paired:
                paired = permit_join(sock, "zwave0", 254)  # the longest window
            else:
                r = cli("devices", "--json")
                if r.returncode == 0:
                    devs = [d for d in json.loads(r.stdout) if str(d.get("id", "")).startswith("zwave:")]
                    done = sum(1 for d in devs if d.get("manufacturer") and d.get("model"))
                    if done >= NODES:
                        return time.monotonic() - t0, peak_rss_kib(proc.pid), done
            time.sleep(POLL)
        sys.exit(f"fieldgate: {done} of {NODES} nodes interviewed after {timeout} s: see {work}")
    finally:
        stop(proc)


def run_zwavejs(port, work, timeout):
    out_path = os.path.join(work, "zwavejs.out")
    out = open(out_path, "w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["node", ZWAVEJS, f"tcp://127.0.0.1:{port}", os.path.join(work, "cache")],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        while time.monotonic() - t0 < timeout:
            out.seek(0)
            for line in out.read().splitlines():
                if '"all nodes ready"' in line:
                    elapsed = time.monotonic() - t0
                    ev = json.loads(line)
                    return elapsed, peak_rss_kib(proc.pid), ev.get("interviewed")
            if proc.poll() is not None:
                sys.exit(f"zwave-js exited: see {out_path}")
            time.sleep(POLL)
        sys.exit(f"zwave-js: not all nodes ready after {timeout} s: see {out_path}")
    finally:
        stop(proc)


def round_of(host, fieldgate, timeout, keep):
    work = tempfile.mkdtemp(prefix=f"zwave-interview-{host}-")
    mock, port = start_mock(work)
    try:
        if host == "fieldgate":
            r = run_fieldgate(fieldgate, port, work, timeout)
        else:
            r = run_zwavejs(port, work, timeout)
        if mock.poll() is not None:
            sys.exit(f"the mock server exited during the {host} round: see {work}/mock.log")
        with open(os.path.join(work, "mock.log")) as f:
            sent = sum(1 for line in f if line.startswith("host->node "))
        return (*r, sent)
    finally:
        stop(mock)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fieldgate", default="target/release/fieldgate")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", action="store_true", help="keep each round's directory")
    a = ap.parse_args()
    a.fieldgate = os.path.abspath(a.fieldgate)
    if not in_loopback_netns():
        if os.environ.get("ZWAVE_BENCH_IN_NETNS") == "1":
            sys.exit(f"not in a loopback-only network namespace: {interfaces()}")
        unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
        os.execvpe(
            unshare[0],
            unshare + ["sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable] + sys.argv,
            dict(os.environ, ZWAVE_BENCH_IN_NETNS="1"),
        )
    results = {"fieldgate": [], "zwave-js": []}
    for i in range(a.rounds):
        for host in ("fieldgate", "zwave-js"):
            secs, hwm, n, sent = round_of(host, a.fieldgate, a.timeout, a.keep)
            results[host].append(
                {"seconds": round(secs, 2), "peak_rss_kib": hwm, "interviewed": n, "ccs_to_nodes": sent}
            )
            print(
                f"round {i + 1} {host}: {secs:.2f} s, peak RSS {hwm} KiB, {n} nodes, "
                f"{sent} commands sent to nodes",
                flush=True,
            )
    med = {
        h: (
            statistics.median(r["seconds"] for r in rs),
            statistics.median(r["peak_rss_kib"] for r in rs),
            statistics.median(r["ccs_to_nodes"] for r in rs),
        )
        for h, rs in results.items()
    }
    print(json.dumps({"nodes": NODES, "rounds": results}, indent=1))
    print(
        f"\n| host | s to {NODES} nodes interviewed (median of {a.rounds}) "
        "| peak RSS MiB (median) | commands sent to nodes |"
    )
    print("|---|---|---|---|")
    for h, (s, k, c) in med.items():
        print(f"| {h} | {s:.1f} | {k / 1024:.1f} | {c:.0f} |")
    (fs, fk, fc), (zs, zk, zc) = med["fieldgate"], med["zwave-js"]
    print(f"| ratio (zwave-js / fieldgate) | {zs / fs:.2f}x | {zk / fk:.2f}x | {zc / fc:.2f}x |")


if __name__ == "__main__":
    main()
