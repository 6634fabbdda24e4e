#!/usr/bin/env python3
"""A fleet of gateways on one broker, and a cloud-side consumer group.

Starts one mosquitto (persistent, on its own port), a consumer group of several
workers sharing one subscription (``$share/fleet/<root>/#``, QoS 1, persistent
sessions), then N ``fieldgate run`` daemons, each with its own config, state
directory, API socket and emulated radios (``sim://``, as ``fieldgate demo``
runs them), all publishing into that broker. In the middle of the run the broker
is stopped and started again (an outage), and one gateway is killed with SIGKILL
and restarted. At the end the gateways stop, the workers drain, and every
gateway's database is read back to check what the consumer group saw:

- **zero lost**: every ``seq`` the gateway assigned in its ``life`` (``1`` to its
  outbox high-water mark) was processed by a worker or is still in its outbox
  (committed, to be sent on its next connection); a plain persistent subscriber
  beside the group (the witness) tells a message the gateway never delivered from
  one the broker lost on its way to the group;
- **de-duplicated**: each ``msg_id`` is processed once; redeliveries (after the
  outage and the kill, delivery is at least once) are counted and dropped;
- **per-device order by (life, seq)**: the group keeps each device's newest
  ``state`` by ``(life, seq)`` whatever worker got it and in whatever order; for
  every device whose gateway has nothing left in its outbox, that state must
  equal the gateway's registry (``last_state``).

Needs paho-mqtt 2.x (``bash tests/peers/consumer/setup.sh``) and mosquitto.
Prints one JSON summary and exits non-zero if anything was lost or wrong::

    cargo build --release
    bash tests/peers/consumer/setup.sh
    tests/peers/consumer/.venv/bin/python benches/fleet.py \\
        --fieldgate target/release/fieldgate --gateways 50 --seconds 90
"""

import argparse
import getpass
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

ROOT = "fleet"
RADIOS = ("zigbee", "zwave", "ble", "lora")
# Radios whose devices join in a window (BLE devices are discovered instead).
JOINING = ("zigbee", "zwave", "lora")


def log(msg):
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """mosquitto with persistence, so queued messages survive a restart."""

    def __init__(self, base, port):
        self.port = port
        self.dir = os.path.join(base, "mosquitto")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"listener {port} 127.0.0.1\n"
                # Started as root, mosquitto would switch to its own user, which
                # cannot write its persistence file here: stay who we are.
                f"user {getpass.getuser()}\n"
                "allow_anonymous true\n"
                # Unbounded queues: mosquitto otherwise drops QoS 1 messages for a
                # session more than 1,000 behind (the default), which is loss.
                "max_queued_messages 0\n"
                "persistence true\n"
                f"persistence_location {self.dir}/\n"
                "autosave_interval 1\n"
            )
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", self.conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "log"), "a"),
        )
        if not wait_port(self.port):
            raise SystemExit("mosquitto did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it writes its persistence file
            self.proc.wait(timeout=30)


class Group:
    """The consumer group: workers on one shared subscription, one shared store."""

    def __init__(self, port, workers):
        self.lock = threading.Lock()
        self.seen = set()  # msg_id
        self.processed = {}  # gateway -> {life -> set(seq)}
        self.duplicates = 0
        self.arrived_out_of_order = 0
        self.per_worker = [0] * workers
        # device -> [(life, seq) of its newest message, newest state, its position]
        self.devices = {}
        self.last_arrival = time.monotonic()
        self.clients = []
        # A witness beside the group: one plain (not shared) persistent subscription
        # on the same topics. A message the group missed but the witness got was
        # delivered by the gateway and lost between the broker and the group.
        self.witness = set()  # (gateway, seq)
        w = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-witness",
                        clean_session=False)
        w.on_connect = lambda cl, *_: cl.subscribe(f"{ROOT}/#", qos=1)
        w.on_message = self.on_witness
        w.reconnect_delay_set(min_delay=1, max_delay=2)
        w.connect("127.0.0.1", port, keepalive=10)
        w.loop_start()
        self.clients.append(w)
        for i in range(workers):
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=f"fleet-worker-{i}",
                clean_session=False,
            )
            c.on_connect = lambda cl, *_: cl.subscribe(f"$share/fleet/{ROOT}/#", qos=1)
            c.on_message = self.on_message(i)
            c.reconnect_delay_set(min_delay=1, max_delay=2)
            c.connect("127.0.0.1", port, keepalive=10)
            c.loop_start()
            self.clients.append(c)

    def on_witness(self, _client, _userdata, msg):
        try:
            m = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            return
        if isinstance(m, dict) and "seq" in m:
            with self.lock:
                self.witness.add((msg.topic.split("/")[1], m["seq"]))

    def on_message(self, worker):
        def handle(_client, _userdata, msg):
            if not msg.payload:
                return
            try:
                m = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(m, dict) or "msg_id" not in m or "seq" not in m:
                return  # live messages (status, info): no seq
            gateway = msg.topic.split("/")[1]
            with self.lock:
                self.last_arrival = time.monotonic()
                self.per_worker[worker] += 1
                if m["msg_id"] in self.seen:
                    self.duplicates += 1
                    return
                self.seen.add(m["msg_id"])
                self.processed.setdefault(gateway, {}).setdefault(m.get("life"), set()).add(
                    m["seq"]
                )
                device = m.get("device")
                if device is None:
                    return
                pos = (m.get("life") or "", m["seq"])
                d = self.devices.setdefault((gateway, device), [None, None, None])
                if d[0] is not None and pos < d[0]:
                    self.arrived_out_of_order += 1
                else:
                    d[0] = pos
                if m.get("type") == "state" and (d[2] is None or pos > d[2]):
                    d[1], d[2] = m.get("data"), pos

        return handle

    def quiet_for(self, seconds):
        with self.lock:
            return time.monotonic() - self.last_arrival >= seconds

    def stop(self):
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


class Gateway:
    def __init__(self, base, index, port, fieldgate):
        self.name = f"gw-{index:02d}"
        self.dir = os.path.join(base, self.name)
        self.fieldgate = fieldgate
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "fieldgate.toml")
        radios = "".join(
            f'\n[[radio]]\nname = "{p}0"\nprotocol = "{p}"\nport = "sim://{p}"\n' for p in RADIOS
        )
        with open(self.config, "w") as f:
            f.write(
                f'[gateway]\nid = "{self.name}"\nstate_dir = "{self.dir}/state"\n'
                'log_level = "warn"\n\n'
                f'[api]\nsocket = "{self.dir}/api.sock"\n'
                f"{radios}\n"
                f'[upstream]\nurl = "mqtt://127.0.0.1:{port}"\n'
                f'client_id = "fleet-{self.name}"\ntopic_prefix = "{ROOT}/{self.name}"\n'
            )
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.proc = subprocess.Popen(
            [self.fieldgate, "--config", self.config, "run"],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "log"), "a"),
        )

    def ready(self):
        return os.path.exists(os.path.join(self.dir, "api.sock"))

    def open_join_windows(self):
        """`fieldgate pair` without watching: the API's permit-join, per radio, once
        the radio is up."""
        for p in JOINING:
            deadline = time.monotonic() + 30
            while not self.permit_join(p) and time.monotonic() < deadline:
                time.sleep(0.2)
            if time.monotonic() >= deadline:
                raise SystemExit(f"{self.name}: {p}0 never accepted a join window; see {self.dir}/log")

    def permit_join(self, p):
        """Opens a join window on radio `p`0; False while the radio is not up."""
        body = json.dumps({"seconds": 250}).encode()
        request = (
            f"POST /v1/radios/{p}0/permit-join HTTP/1.1\r\nHost: fieldgate\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(os.path.join(self.dir, "api.sock"))
            s.sendall(request)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        return b" 200 " in answer.split(b"\r\n", 1)[0]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def database(self):
        """What the gateway committed: its life, seq high-water mark, seqs still
        queued, and each device's registry state."""
        db = sqlite3.connect(f"file:{self.dir}/state/fieldgate.db?mode=ro", uri=True)
        try:
            life = db.execute("SELECT life FROM gateway_life WHERE id = 1").fetchone()[0]
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            high = row[0] if row else 0
            queued = set()
            for first, n in db.execute("SELECT id, messages FROM outbox"):
                queued.update(range(first, first + n))
            states = {
                dev: json.loads(state)
                for dev, state in db.execute("SELECT id, last_state FROM devices")
            }
            return life, high, queued, states
        finally:
            db.close()


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fieldgate", default="target/release/fieldgate")
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0, help="run length, outage and kill included")
    ap.add_argument("--outage", type=float, default=5.0,
                    help="seconds the broker is down (0: no outage)")
    ap.add_argument("--port", type=int, default=18841)
    ap.add_argument("--keep", help="keep state here instead of a temporary directory")
    args = ap.parse_args()
    fieldgate = os.path.abspath(args.fieldgate)

    base = args.keep or tempfile.mkdtemp(prefix="fleet-")
    os.makedirs(base, exist_ok=True)
    broker = Broker(base, args.port)
    broker.start()
    group = Group(args.port, args.workers)
    gateways = [Gateway(base, i, args.port, fieldgate) for i in range(args.gateways)]
    victim = gateways[len(gateways) // 2]
    started = time.monotonic()
    try:
        for g in gateways:
            g.start()
        deadline = time.monotonic() + 60
        while not all(g.ready() for g in gateways):
            if time.monotonic() > deadline:
                raise SystemExit("gateways did not start: " + ", ".join(
                    g.name for g in gateways if not g.ready()))
            for g in gateways:
                if g.proc.poll() is not None:
                    raise SystemExit(f"{g.name} exited ({g.proc.returncode}); see {g.dir}/log")
            time.sleep(0.1)
        log(f"{len(gateways)} gateways up in {time.monotonic() - started:.1f} s")
        for g in gateways:
            g.open_join_windows()
        load_start = time.monotonic()
        cpu_start = sum(cpu_seconds(g.proc.pid) for g in gateways)

        def at(fraction):
            left = load_start + args.seconds * fraction - time.monotonic()
            if left > 0:
                time.sleep(left)

        at(0.3)
        if args.outage > 0:
            log(f"broker down for {args.outage:.0f} s")
            broker.stop()
            time.sleep(args.outage)
            broker.start()
            log("broker up")
        at(0.6)
        log(f"SIGKILL {victim.name}, restart")
        victim_cpu = cpu_seconds(victim.proc.pid)
        victim.kill()
        time.sleep(1)
        victim.start()
        at(1.0)
        cpu = sum(cpu_seconds(g.proc.pid) for g in gateways) + victim_cpu - cpu_start
        elapsed = time.monotonic() - load_start
        log("stopping the gateways")
        codes = [g.stop() for g in gateways]
        drain_deadline = time.monotonic() + 60
        while not group.quiet_for(3.0) and time.monotonic() < drain_deadline:
            time.sleep(0.5)
    finally:
        for g in gateways:
            if g.proc and g.proc.poll() is None:
                g.proc.kill()
        group.stop()
        broker.stop()

    lost = {}
    assigned = queued_total = state_checked = state_wrong = 0
    wrong_examples = []
    with group.lock:
        for g in gateways:
            life, high, queued, states = g.database()
            got = group.processed.get(g.name, {}).get(life, set())
            assigned += high
            queued_total += len(queued)
            missing = [s for s in range(1, high + 1) if s not in got and s not in queued]
            if missing:
                lost[g.name] = {
                    "count": len(missing),
                    "first": missing[:10],
                    "seen_by_witness": sum((g.name, m) in group.witness for m in missing),
                }
            if queued:
                continue  # undelivered messages may include newer states
            for dev, state in states.items():
                d = group.devices.get((g.name, dev))
                if d is None or d[1] is None:
                    continue  # never sent a state (e.g. a pending BLE device)
                state_checked += 1
                if d[1] != state:
                    state_wrong += 1
                    if len(wrong_examples) < 5:
                        wrong_examples.append({"gateway": g.name, "device": dev,
                                               "consumer": d[1], "registry": state})
        processed = len(group.seen)
        summary = {
            "gateways": len(gateways),
            "workers": args.workers,
            "seconds": round(elapsed, 1),
            "broker_outage_s": args.outage,
            "killed_and_restarted": victim.name,
            "messages_assigned": assigned,
            "processed_unique": processed,
            "still_queued_in_gateways": queued_total,
            "lost": sum(v["count"] for v in lost.values()),
            "lost_by_gateway": lost,
            # Lost before the broker: not even the witness got them.
            "lost_before_the_broker": sum(v["count"] - v["seen_by_witness"] for v in lost.values()),
            "duplicates_dropped": group.duplicates,
            "per_worker": group.per_worker,
            "arrived_out_of_order": group.arrived_out_of_order,
            "devices": len(group.devices),
            "device_states_checked": state_checked,
            "device_states_wrong": state_wrong,
            "wrong_examples": wrong_examples,
            "messages_per_s": round(processed / elapsed, 1) if elapsed else 0,
            "gateway_cpu_percent_of_one_core_each": round(100 * cpu / elapsed / len(gateways), 2)
            if elapsed
            else 0,
            "exit_codes": sorted(set(codes)),
        }
    print(json.dumps(summary, indent=1, sort_keys=True))
    ok = not lost and state_wrong == 0 and processed > 0 and all(
        sum(group.per_worker) and n > 0 for n in group.per_worker
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
