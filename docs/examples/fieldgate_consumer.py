#!/usr/bin/env python3
"""A reference consumer of a fieldgate gateway's MQTT contract (docs/mqtt-api.md).

It does what every cloud-side consumer has to do:

- subscribes to everything one gateway publishes (``<prefix>/#``);
- de-duplicates by ``msg_id`` (delivery is at least once);
- orders each device's messages by ``(life, seq)``: within one database life the
  higher ``seq`` is newer; across lives the gateway's current life (from its
  retained ``status``/``info``) wins, else the greater life string; a message
  without ``life`` is older than any;
- keeps the newest ``state`` and ``availability`` per device, ignoring stale ones;
- sends one request with a fresh ``correlation_id`` and waits for its response.

Needs paho-mqtt 2.x (``pip install paho-mqtt``). Prints one JSON summary on
stdout, e.g.::

    python3 fieldgate_consumer.py --host broker --prefix fieldgate/site-7 \\
        --request health_check --wait-telemetry 1 --timeout 30
"""

import argparse
import json
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt


def newer(a, b, current_life):
    """Whether position a = (life, seq) is newer than b (None: nothing seen)."""
    if b is None:
        return True
    (life_a, seq_a), (life_b, seq_b) = a, b
    if life_a == life_b:
        return seq_a > seq_b
    if life_a is None or life_b is None:
        return life_b is None
    if current_life is not None and current_life in (life_a, life_b):
        return life_a == current_life
    return life_a > life_b


class Consumer:
    def __init__(self, prefix):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.seen = set()
        self.duplicates = 0
        self.current_life = None
        self.gateway_status = None
        # device -> {"position": (life, seq), "state": {...}, "availability": ...}
        self.devices = {}
        self.telemetry = 0
        self.stale = 0
        self.out_of_order = 0
        self.responses = {}
        self.arrived = threading.Condition(self.lock)

    def on_message(self, _client, _userdata, msg):
        if not msg.payload:
            return  # an empty payload clears a retained message
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        rest = msg.topic[len(self.prefix) + 1:]
        with self.lock:
            if rest in ("status", "info"):
                self.current_life = body.get("life", self.current_life)
                if rest == "status":
                    self.gateway_status = body.get("state")
            elif rest.startswith("response/"):
                cid = body.get("correlation_id")
                self.responses.setdefault(cid, []).append(body)
            elif rest.startswith("device/") and "msg_id" in body:
                self.device_message(body)
            self.arrived.notify_all()

    def device_message(self, m):
        if m["msg_id"] in self.seen:
            self.duplicates += 1
            return
        self.seen.add(m["msg_id"])
        d = self.devices.setdefault(m["device"], {"position": None, "state": None,
                                                  "state_position": None,
                                                  "availability": None,
                                                  "availability_position": None})
        pos = (m.get("life"), m["seq"])
        if newer(pos, d["position"], self.current_life):
            d["position"] = pos
        else:
            # First arrivals come in order per device; a replay after a reconnect
            # can bring an older one (already de-duplicated above if seen).
            self.out_of_order += 1
        kind = m["type"]
        if kind == "telemetry":
            self.telemetry += 1
        elif kind in ("state", "availability"):
            if newer(pos, d[kind + "_position"], self.current_life):
                d[kind + "_position"] = pos
                d[kind] = m["data"] if kind == "state" else m["data"].get("state")
            else:
                self.stale += 1

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
            return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", required=True, help="the gateway's topic prefix")
    ap.add_argument("--request", default="health_check", help="the operation to send")
    ap.add_argument("--body", default="{}", help="the request's fields, as JSON")
    ap.add_argument("--wait-telemetry", type=int, default=0,
                    help="also wait for this many distinct telemetry messages")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    consumer = Consumer(args.prefix)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id="fieldgate-consumer-" + uuid.uuid4().hex[:8])
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(args.prefix + "/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = consumer.on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(args.timeout):
        sys.exit("no SUBACK from the broker")

    cid = "consumer-" + uuid.uuid4().hex
    body = json.loads(args.body)
    body["correlation_id"] = cid
    client.publish(f"{args.prefix}/request/{args.request}", json.dumps(body), qos=1)
    answered = consumer.wait(lambda: cid in consumer.responses, args.timeout)
    enough = consumer.wait(lambda: consumer.telemetry >= args.wait_telemetry, args.timeout)
    client.loop_stop()
    client.disconnect()

    with consumer.lock:
        summary = {
            "gateway_status": consumer.gateway_status,
            "life": consumer.current_life,
            "response": consumer.responses.get(cid, [None])[0],
            "responses_for_request": len(consumer.responses.get(cid, [])),
            "unique_messages": len(consumer.seen),
            "duplicates": consumer.duplicates,
            "telemetry": consumer.telemetry,
            "out_of_order": consumer.out_of_order,
            "stale": consumer.stale,
            "devices": {
                dev: {"life": d["position"][0], "seq": d["position"][1],
                      "state": d["state"], "availability": d["availability"]}
                for dev, d in consumer.devices.items()
            },
        }
    print(json.dumps(summary, sort_keys=True))
    sys.exit(0 if answered and enough else 1)


if __name__ == "__main__":
    main()
