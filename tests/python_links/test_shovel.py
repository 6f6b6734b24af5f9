"""Dynamic shovels between warren and a real RabbitMQ (started by the Rust
harness, tests/shovel.rs), with pika on both sides. Warren runs here as a
subprocess (WARREN_BIN) so that it can be killed with -9 and started again
on the same data directory."""

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pika

from linkutil import wait_for
import pytest

WARREN_BIN = os.environ["WARREN_BIN"]
RABBIT_PORT = int(os.environ["RABBIT_PORT"])
RABBITMQCTL = os.environ["RABBITMQCTL"]
RABBIT_NODE = os.environ["RABBIT_NODE"]
DATA = os.environ["WARREN_DATA"]
RABBIT_URI = f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}/%2F"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Warren:
    """warren as a child process with the management API."""

    def __init__(self, name, tls=False):
        self.dir = os.path.join(DATA, name)
        self.port, self.mgmt = free_port(), free_port()
        self.tls_port = free_port() if tls else None
        self.log = open(self.dir + ".log", "ab")
        self.proc = None
        self.start()

    def start(self):
        tls = [] if self.tls_port is None else [
            "--tls-listen", f"127.0.0.1:{self.tls_port}", "--tls-cert", os.environ["TLS_CERT"],
            "--tls-key", os.environ["TLS_KEY"]]
        self.proc = subprocess.Popen(
            [WARREN_BIN, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir,
             "--management-listen", f"127.0.0.1:{self.mgmt}", "--no-prometheus", *tls],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "info"})
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.mgmt), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("warren did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)

    def api(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt}{path}", data=data, method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else None

    def shovel(self, name):
        for s in self.api("GET", "/api/shovels"):
            if s["name"] == name:
                return s
        return None

    def conn(self):
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))


def rabbit():
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", RABBIT_PORT))


def rabbitmqctl(*args):
    subprocess.run([RABBITMQCTL, "-n", RABBIT_NODE, *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def publish(w, queue, first, n, size=16):
    """n persistent messages, bodies 'seq:<i>' padded to size; returns
    once the queue holds them all."""
    c = w.conn()
    ch = c.channel()
    ch.queue_declare(queue, durable=True)
    before = w.api("GET", f"/api/queues/%2F/{queue}")["messages"]
    for i in range(first, first + n):
        body = f"seq:{i}:".encode().ljust(size, b"x")
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    c.close()
    wait_for(lambda: w.api("GET", f"/api/queues/%2F/{queue}")["messages"] == before + n,
             what=f"{n} messages in {queue}")


def drain(conn_fn, queue, expect, timeout=120):
    """Consume `queue` until `expect` distinct sequence numbers arrived;
    returns (sequence numbers in order, duplicates)."""
    c = conn_fn()
    ch = c.channel()
    ch.queue_declare(queue, durable=True)
    seqs, seen, dups = [], set(), 0
    deadline = time.time() + timeout
    ch.basic_qos(prefetch_count=1000)
    for method, _props, body in ch.consume(queue, inactivity_timeout=1):
        if method is None:
            if time.time() > deadline:
                break
            continue
        s = int(body.split(b":")[1])
        if s in seen:
            dups += 1
        else:
            seen.add(s)
            seqs.append(s)
        ch.basic_ack(method.delivery_tag)
        if len(seen) >= expect:
            break
    ch.cancel()
    c.close()
    return seqs, dups


def test_edge_to_core_through_a_rabbitmq_outage_and_a_kill(tmp_path):
    """100,000 persistent messages from a warren queue to a RabbitMQ queue,
    RabbitMQ stopped for 20 s and warren killed with -9 on the way: every
    message arrives, in order, duplicates counted."""
    n = int(os.environ.get("SHOVEL_MESSAGES", "100000"))
    w = Warren("edge")
    try:
        publish(w, "edge-out", 0, n)
        w.api("PUT", "/api/parameters/shovel/%2F/to-core", {"value": {
            "src-uri": "amqp://", "src-queue": "edge-out",
            "dest-uri": RABBIT_URI, "dest-queue": "core-in",
            "ack-mode": "on-confirm", "reconnect-delay": 1}})
        wait_for(lambda: (w.shovel("to-core") or {}).get("state") == "running", what="running")
        # A third of the way: RabbitMQ goes away for 20 s.
        wait_for(lambda: w.api("GET", "/api/queues/%2F/edge-out")["messages"] < n * 2 // 3,
                 what="a third moved")
        rabbitmqctl("stop_app")
        time.sleep(2)
        st = wait_for(lambda: (s := w.shovel("to-core")) and s["state"] != "running" and s,
                      what="the shovel to notice")
        assert st.get("last_error"), st
        time.sleep(18)
        rabbitmqctl("start_app")
        wait_for(lambda: (w.shovel("to-core") or {}).get("state") == "running",
                 what="running again after the outage")
        # Two thirds: warren is killed, and started again.
        wait_for(lambda: w.api("GET", "/api/queues/%2F/edge-out")["messages"] < n // 3,
                 timeout=120, what="two thirds moved")
        w.kill()
        w.start()
        wait_for(lambda: w.api("GET", "/api/queues/%2F/edge-out")["messages"] == 0
                 and w.api("GET", "/api/queues/%2F/edge-out")["messages_unacknowledged"] == 0,
                 timeout=180, what="the source queue empty")
        seqs, dups = drain(rabbit, "core-in", n)
        assert len(seqs) == n, f"{len(seqs)} of {n} arrived ({dups} duplicates)"
        # In order: duplicates aside, each first arrival follows the last.
        assert seqs == sorted(seqs)
        print(f"\nSHOVEL edge->core: {n} messages, {dups} duplicates")
        with open(os.path.join(DATA, "shovel-duplicates.txt"), "w") as f:
            f.write(f"{dups}\n")
    finally:
        w.stop()


def test_core_to_edge():
    n = 5000
    w = Warren("core-edge")
    try:
        c = rabbit()
        ch = c.channel()
        ch.queue_declare("core-out", durable=True)
        for i in range(n):
            ch.basic_publish("", "core-out", f"seq:{i}:".encode(), pika.BasicProperties(delivery_mode=2))
        c.close()
        w.api("PUT", "/api/parameters/shovel/%2F/from-core", {"value": {
            "src-uri": RABBIT_URI, "src-queue": "core-out",
            "dest-uri": "amqp://", "dest-exchange": "amq.direct", "dest-exchange-key": "edge-in",
            "dest-add-forward-headers": True, "reconnect-delay": 1}})
        conn = w.conn()
        ch = conn.channel()
        ch.queue_declare("edge-in", durable=True)
        ch.queue_bind("edge-in", "amq.direct", "edge-in")
        conn.close()
        seqs, dups = drain(w.conn, "edge-in", n)
        assert (len(seqs), dups) == (n, 0)
        # Its local end is listed as a direct connection with its name.
        direct = [c for c in w.api("GET", "/api/connections") if c["type"] == "direct"]
        assert [c["client_properties"]["connection_name"] for c in direct] == ["Shovel from-core"]
        assert direct[0]["name"].startswith("<warren@"), direct
        assert seqs == sorted(seqs)
        # The forward headers name the shovel.
        conn = w.conn()
        ch = conn.channel()
        c = rabbit()
        c.channel().basic_publish("", "core-out", b"seq:-1:", pika.BasicProperties(delivery_mode=2))
        c.close()
        got = wait_for(lambda: ch.basic_get("edge-in", auto_ack=True)[1], what="one more")
        hdr = got.headers["x-shovelled"][0]
        assert hdr["shovel-name"] == "from-core" and hdr["shovel-type"] == "dynamic", hdr
        conn.close()
        c = rabbit()
        assert c.channel().queue_declare("core-out", passive=True).method.message_count == 0
        c.close()
        w.api("DELETE", "/api/parameters/shovel/%2F/from-core")
        wait_for(lambda: w.shovel("from-core") is None, what="the shovel gone")
    finally:
        w.stop()


@pytest.mark.parametrize("case", ["unreachable", "bad-credentials", "missing-exchange"])
def test_bad_ends_show_their_error_and_retry(case):
    w = Warren("bad-" + case)
    try:
        dest = {
            "unreachable": {"dest-uri": f"amqp://127.0.0.1:{free_port()}", "dest-queue": "x"},
            "bad-credentials": {"dest-uri": f"amqp://guest:wrong@127.0.0.1:{RABBIT_PORT}", "dest-queue": "x"},
            "missing-exchange": {"dest-uri": RABBIT_URI, "dest-exchange": "no-such-exchange"},
        }[case]
        publish(w, "bad-src-" + case, 0, 3)
        w.api("PUT", f"/api/parameters/shovel/%2F/bad-{case}", {"value": {
            "src-uri": "amqp://", "src-queue": "bad-src-" + case, "reconnect-delay": 1, **dest}})
        st = wait_for(lambda: (s := w.shovel("bad-" + case)) and s.get("last_error") and s,
                      what="an error shown")
        expect = {"unreachable": "refused", "bad-credentials": "403",
                  "missing-exchange": "404"}[case]
        assert expect in st["last_error"].lower() or expect in st["last_error"], st
        first = st["last_error_at"]
        # It backs off and tries again (a later error), and the broker
        # keeps serving; no message was lost or acknowledged.
        time.sleep(3.5)
        assert w.shovel("bad-" + case)["state"] in ("terminated", "starting")
        assert w.api("GET", f"/api/queues/%2F/bad-src-{case}")["messages"] == 3
        assert w.shovel("bad-" + case)["last_error_at"] >= first
    finally:
        w.stop()


def test_a_shovel_over_tls_to_another_warren():
    """An amqps:// destination: verified against the CA given in the URI
    (`cacertfile`), with the server name from the URI's host; a URI
    without the CA is refused at the handshake and shown."""
    edge, core = Warren("tls-edge"), Warren("tls-core", tls=True)
    try:
        publish(edge, "tls-out", 0, 1000)
        ca = os.environ["TLS_CA"]
        edge.api("PUT", "/api/parameters/shovel/%2F/over-tls", {"value": {
            "src-uri": "amqp://", "src-queue": "tls-out",
            "dest-uri": f"amqps://guest:guest@localhost:{core.tls_port}/%2F?cacertfile={ca}",
            "dest-queue": "tls-in", "reconnect-delay": 1}})
        seqs, dups = drain(core.conn, "tls-in", 1000)
        assert (len(seqs), dups) == (1000, 0)
        assert seqs == sorted(seqs)
        # Without the CA (the system's bundle does not know it): refused.
        edge.api("PUT", "/api/parameters/shovel/%2F/untrusted", {"value": {
            "src-uri": "amqp://", "src-queue": "tls-out-2",
            "dest-uri": f"amqps://guest:guest@localhost:{core.tls_port}/%2F",
            "dest-queue": "tls-in-2", "reconnect-delay": 1}})
        st = wait_for(lambda: (s := edge.shovel("untrusted")) and s.get("last_error") and s,
                      what="the TLS error shown")
        assert "certificate" in st["last_error"].lower() or "tls" in st["last_error"].lower(), st
    finally:
        edge.stop()
        core.stop()


def test_a_blocked_destination_holds_the_shovel_back():
    """RabbitMQ's memory alarm blocks the shovel's publishing connection
    (connection.blocked): nothing is lost or acknowledged while it lasts,
    the source keeps what was not confirmed, and all of it moves once
    RabbitMQ unblocks."""
    n = 2000
    w = Warren("blocked")
    try:
        publish(w, "blk-out", 0, n)
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        w.api("PUT", "/api/parameters/shovel/%2F/blocked", {"value": {
            "src-uri": "amqp://", "src-queue": "blk-out", "src-prefetch-count": 100,
            "dest-uri": RABBIT_URI, "dest-queue": "blk-in", "reconnect-delay": 1}})
        wait_for(lambda: (w.shovel("blocked") or {}).get("blocked_status") == "blocked",
                 what="the shovel to see connection.blocked")
        time.sleep(2)
        c = rabbit()
        arrived = c.channel().queue_declare("blk-in", durable=True).method.message_count
        c.close()
        left = w.api("GET", "/api/queues/%2F/blk-out")["messages"]
        assert arrived + left >= n and left >= n - 100, (arrived, left)
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        seqs, dups = drain(rabbit, "blk-in", n)
        assert len(seqs) == n and seqs == sorted(seqs), (len(seqs), dups)
        wait_for(lambda: (w.shovel("blocked") or {}).get("blocked_status") == "running",
                 what="unblocked")
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        w.stop()
