"""Federated exchanges with warren downstream of a real RabbitMQ (started
by the Rust harness, tests/federation.rs): an exchange on warren whose
policy names a `federation-upstream` receives what is published to the
same exchange on RabbitMQ, for the keys bound here, with the link in
`x-received-from`; and a loop of the two brokers stops at max-hops."""

import base64
import json
import os
import subprocess
import time
import urllib.request

import pika

from linkutil import wait_for

WARREN_PORT = int(os.environ["WARREN_PORT"])
WARREN_MGMT = int(os.environ["WARREN_MGMT_PORT"])
RABBIT_PORT = int(os.environ["RABBIT_PORT"])
RABBITMQCTL = os.environ["RABBITMQCTL"]
RABBIT_NODE = os.environ["RABBIT_NODE"]


def api(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{WARREN_MGMT}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        t = r.read()
        return json.loads(t) if t else None


def ctl(*args):
    subprocess.run([RABBITMQCTL, "-n", RABBIT_NODE, *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def channel(port):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)).channel()


def link(exchange):
    for l in api("GET", "/api/federation-links"):
        if l.get("exchange") == exchange:
            return l
    return None


def get_all(ch, queue, settle=1.0):
    time.sleep(settle)
    out = []
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((m.routing_key, b, p.headers or {}))


def test_exchange_on_warren_federated_from_rabbitmq():
    w, r = channel(WARREN_PORT), channel(RABBIT_PORT)
    w.exchange_declare("down.x", "topic", durable=True)
    w.queue_delete("down-q")
    w.queue_declare("down-q")
    w.queue_bind("down-q", "down.x", "a.#")
    r.exchange_declare("down.x", "topic", durable=True)
    api("PUT", "/api/parameters/federation-upstream/%2F/rabbit", {"value": {
        "uri": f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}", "max-hops": 1,
        "reconnect-delay": 1}})
    api("PUT", "/api/policies/%2F/down", {"pattern": "^down\\.", "apply-to": "exchanges",
                                         "definition": {"federation-upstream": "rabbit"}})
    wait_for(lambda: (link("down.x") or {}).get("status") == "running", what="the link running")
    r.basic_publish("down.x", "a.b", b"one")
    r.basic_publish("down.x", "z.z", b"not bound here")
    got = get_all(w, "down-q")
    assert [(k, b) for k, b, _ in got] == [("a.b", b"one")], got
    hop = got[0][2]["x-received-from"]
    assert len(hop) == 1 and hop[0]["exchange"] == "down.x", hop
    assert f"127.0.0.1:{RABBIT_PORT}" in hop[0]["uri"] and "guest:" not in hop[0]["uri"], hop
    # A new binding here is followed upstream.
    w.queue_bind("down-q", "down.x", "z.#")
    wait_for(lambda: "down.x\tz.#" in subprocess.run(
        [RABBITMQCTL, "-n", RABBIT_NODE, "list_bindings", "-q", "source_name", "routing_key"],
        capture_output=True, text=True).stdout, what="the upstream binding")
    r.basic_publish("down.x", "z.z", b"bound now")
    assert [b for _, b, _ in get_all(w, "down-q")] == [b"bound now"]
    # A message that crossed max-hops links already is not forwarded.
    r.basic_publish("down.x", "a.c", b"far", pika.BasicProperties(headers={"x-received-from": [
        {"uri": "amqp://elsewhere", "exchange": "down.x", "redelivered": False,
         "cluster-name": "elsewhere"}]}))
    assert get_all(w, "down-q") == []
    assert link("down.x")["messages_dropped_max_hops"] == 1
    # The policy removed: the link stops.
    api("DELETE", "/api/policies/%2F/down")
    wait_for(lambda: link("down.x") is None, what="the link gone")


def test_a_loop_of_two_brokers_stops_at_max_hops():
    """ring.x on each broker is federated from the other, max-hops 1: a
    message published on either arrives once on the other and stops."""
    w, r = channel(WARREN_PORT), channel(RABBIT_PORT)
    for ch in (w, r):
        ch.exchange_declare("ring.x", "fanout", durable=True)
        ch.queue_delete("ring-q")
        ch.queue_declare("ring-q")
        ch.queue_bind("ring-q", "ring.x")
    api("PUT", "/api/parameters/federation-upstream/%2F/rabbit-ring", {"value": {
        "uri": f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}", "max-hops": 1,
        "reconnect-delay": 1}})
    api("PUT", "/api/policies/%2F/ring", {"pattern": "^ring\\.", "apply-to": "exchanges",
                                         "definition": {"federation-upstream": "rabbit-ring"}})
    ctl("set_parameter", "federation-upstream", "warren-ring", json.dumps({
        "uri": f"amqp://guest:guest@127.0.0.1:{WARREN_PORT}", "max-hops": 1}))
    ctl("set_policy", "--apply-to", "exchanges", "ring", "^ring\\.",
        json.dumps({"federation-upstream": "warren-ring"}))
    wait_for(lambda: (link("ring.x") or {}).get("status") == "running", what="warren's link")
    # RabbitMQ's link is up once it has bound its queue on warren.
    wait_for(lambda: any(b["source"] == "ring.x" or "ring.x" in b["source"]
                         for b in api("GET", "/api/bindings") if b["destination"] != "ring-q"),
             timeout=60, what="RabbitMQ's link to warren")
    time.sleep(1)
    w.basic_publish("ring.x", "", b"from warren")
    r.basic_publish("ring.x", "", b"from rabbitmq")
    time.sleep(3)
    on_warren = [b for _, b, _ in get_all(w, "ring-q")]
    on_rabbit = [b for _, b, _ in get_all(r, "ring-q")]
    assert sorted(on_warren) == [b"from rabbitmq", b"from warren"], on_warren
    assert sorted(on_rabbit) == [b"from rabbitmq", b"from warren"], on_rabbit
    ctl("clear_policy", "ring")
    api("DELETE", "/api/policies/%2F/ring")


def test_queue_on_warren_federated_from_rabbitmq():
    """Messages move from RabbitMQ's queue only while warren's queue has a
    consumer and nothing ready for it."""
    wc = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", WARREN_PORT))
    w, r = wc.channel(), channel(RABBIT_PORT)
    for ch in (w, r):
        ch.queue_delete("fedq.work")
        ch.queue_declare("fedq.work", durable=True)
    for i in range(20):
        r.basic_publish("", "fedq.work", f"job {i}".encode(), pika.BasicProperties(delivery_mode=2))
    api("PUT", "/api/parameters/federation-upstream/%2F/rabbit-q", {"value": {
        "uri": f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}", "reconnect-delay": 1}})
    api("PUT", "/api/policies/%2F/fedq", {"pattern": "^fedq\\.", "apply-to": "queues",
                                         "definition": {"federation-upstream": "rabbit-q"}})
    wait_for(lambda: any(l["type"] == "queue" and l["queue"] == "fedq.work"
                         and l["status"] == "running"
                         for l in api("GET", "/api/federation-links")), what="the queue link")
    time.sleep(1.5)
    # No consumer here: nothing moves.
    assert r.queue_declare("fedq.work", passive=True).method.message_count == 20
    assert w.queue_declare("fedq.work", passive=True).method.message_count == 0
    got = []
    w.basic_consume("fedq.work", lambda ch, m, p, b: (got.append(b), ch.basic_ack(m.delivery_tag)))
    deadline = time.time() + 20
    while len(got) < 20 and time.time() < deadline:
        wc.process_data_events(0.2)
    assert got == [f"job {i}".encode() for i in range(20)], got
    assert r.queue_declare("fedq.work", passive=True).method.message_count == 0
    api("DELETE", "/api/policies/%2F/fedq")
    wc.close()
