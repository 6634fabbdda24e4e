"""What the Python benchmarks share: a free local TCP or UDP port, the daemon's local
API over its Unix socket, and a raw MQTT 3.1.1 subscriber socket (standard library
only)."""

import http.client
import json
import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTP(http.client.HTTPConnection):
    """HTTP over the daemon's API socket."""

    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def api(sock, method, path, body=None):
    """One API request; returns (status, body bytes)."""
    c = UnixHTTP(sock)
    c.request(
        method,
        path,
        body=None if body is None else json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def mqtt_subscribe(port, client_id, topic, keep_alive=60):
    """A connected socket subscribed (QoS 0, clean session) to `topic` on the local
    broker at `port`; the CONNACK is read, the SUBACK is left to the caller."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02" + keep_alive.to_bytes(2, "big")
    payload = len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(var) + len(payload)]) + var + payload)
    s.recv(4)  # CONNACK
    t = topic.encode()
    body = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x00"
    s.sendall(bytes([0x82, len(body)]) + body)
    return s
