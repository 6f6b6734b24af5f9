#!/usr/bin/env python3
"""Shovel throughput, warren -> RabbitMQ, with ack-mode on-confirm:
warren's own shovel (a `shovel` parameter on warren) against RabbitMQ's
shovel plugin moving the same way (a `shovel` parameter on RabbitMQ,
consuming from warren and publishing into itself), same machine, same
queues, same messages. Each run fills warren's queue first (persistent
messages), then starts the shovel and times until RabbitMQ's queue holds
them all.

    python3 benches/shovel.py WARREN_AMQP WARREN_MGMT RABBIT_AMQP RABBIT_NODE [N16 N1K]

RabbitMQ needs the rabbitmq_shovel plugin enabled (`rabbitmq-plugins -n
NODE enable rabbitmq_shovel`); pika must be importable (the test venvs
under target/ have it)."""

import base64
import json
import subprocess
import sys
import time
import urllib.request

import pika

W_AMQP, W_MGMT, R_AMQP, R_NODE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
N16 = int(sys.argv[5]) if len(sys.argv) > 5 else 100_000
N1K = int(sys.argv[6]) if len(sys.argv) > 6 else 50_000
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def api(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{W_MGMT}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        t = r.read()
        return json.loads(t) if t else None


def conn(port):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))


def count(port, q):
    c = conn(port)
    n = c.channel().queue_declare(q, durable=True).method.message_count
    c.close()
    return n


def purge(port, q):
    c = conn(port)
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    ch.queue_purge(q)
    c.close()


def fill(q, n, size):
    c = conn(W_AMQP)
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    body = b"x" * size
    for _ in range(n):
        ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2))
    c.close()
    while api("GET", f"/api/queues/%2F/{q}")["messages"] < n:
        time.sleep(0.05)


def run(which, n, size):
    src, dest = f"bench-src-{size}", f"bench-dest-{size}"
    purge(W_AMQP, src)
    purge(R_AMQP, dest)
    fill(src, n, size)
    warren_uri = f"amqp://guest:guest@127.0.0.1:{W_AMQP}/%2F"
    rabbit_uri = f"amqp://guest:guest@127.0.0.1:{R_AMQP}/%2F"
    t = time.time()
    if which == "warren":
        api("PUT", "/api/parameters/shovel/%2F/bench", {"value": {
            "src-uri": "amqp://", "src-queue": src, "dest-uri": rabbit_uri,
            "dest-queue": dest, "ack-mode": "on-confirm"}})
    else:
        value = json.dumps({"src-uri": warren_uri, "src-queue": src, "dest-uri": "amqp://",
                            "dest-queue": dest, "ack-mode": "on-confirm"})
        subprocess.run([CTL, "-n", R_NODE, "set_parameter", "shovel", "bench", value],
                       check=True, stdout=subprocess.DEVNULL)
    while count(R_AMQP, dest) < n:
        time.sleep(0.02)
    dt = time.time() - t
    if which == "warren":
        api("DELETE", "/api/parameters/shovel/%2F/bench")
    else:
        subprocess.run([CTL, "-n", R_NODE, "clear_parameter", "shovel", "bench"],
                       check=True, stdout=subprocess.DEVNULL)
    time.sleep(1)
    return n / dt


for size, n in ((16, N16), (1024, N1K)):
    for which in ("warren", "rabbitmq-plugin"):
        rate = run(which, n, size)
        print(f"{size:>5} B  {which:<16} {n:>7} messages  {rate:>9,.0f} msg/s")
