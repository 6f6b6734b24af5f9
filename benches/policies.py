"""What policies cost: sets up N queues and M policies on a running warren
(or RabbitMQ) and times policy changes through the management API.

    python benches/policies.py --amqp-port 5672 --mgmt-port 15672 \
        [--queues 10000] [--policies 1000] [--setup all|queues|policies|clear|none]
        [--no-measure]

Queues are `app-<i>-<j>` (non-durable), each policy `p-<i>` matches the
queues `^app-<i>-` (queues/policies of them) with a definition that sets
limits. Measured, as HTTP round trips (the re-evaluation happens inside
them, before the answer; warren logs each one's own time at INFO):
  * changing one policy's definition (it applies to queues/policies queues,
    and each of the 10,000 queues is matched against it once);
  * adding and removing a catch-all policy of the highest priority (every
    queue changes policy twice).
Needs pika and requests (the venv `cargo test` makes has both:
target/pyvenv-mgmt/bin/python). benches/policies.sh runs it between two
warren-perf runs to show the message path's cost.
"""

import argparse
import statistics
import time

import pika
import requests


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--amqp-port", type=int, default=5672)
    a.add_argument("--mgmt-port", type=int, default=15672)
    a.add_argument("--queues", type=int, default=10000)
    a.add_argument("--policies", type=int, default=1000)
    a.add_argument("--rounds", type=int, default=20)
    a.add_argument("--setup", choices=["all", "queues", "policies", "clear", "none"], default="all",
                   help="what to create before measuring")
    a.add_argument("--no-measure", action="store_true")
    o = a.parse_args()
    api = requests.Session()
    api.auth = ("guest", "guest")
    base = f"http://{o.host}:{o.mgmt_port}/api"
    per = max(1, o.queues // o.policies)

    def put_policy(name, pattern, definition, priority=0):
        r = api.put(f"{base}/policies/%2F/{name}",
                    json={"pattern": pattern, "definition": definition,
                          "priority": priority, "apply-to": "queues"})
        assert r.status_code in (201, 204), r.text

    if o.setup in ("all", "queues"):
        t = time.time()
        conn = pika.BlockingConnection(pika.ConnectionParameters(o.host, o.amqp_port))
        ch = conn.channel()
        for i in range(o.policies):
            for j in range(per):
                ch.queue_declare(f"app-{i}-{j}")
        conn.close()
        print(f"setup: {o.policies * per} queues declared in {time.time() - t:.1f} s")
    if o.setup in ("all", "policies"):
        t = time.time()
        for i in range(o.policies):
            put_policy(f"p-{i}", f"^app-{i}-", {"max-length": 100000, "message-ttl": 600000},
                       priority=i % 10)
        took = time.time() - t
        print(f"setup: {o.policies} policies set in {took:.1f} s "
              f"({took / o.policies * 1000:.2f} ms each, each a durable change)")
    if o.setup == "clear":
        for i in range(o.policies):
            api.delete(f"{base}/policies/%2F/p-{i}")
        print(f"setup: {o.policies} policies cleared")
    if o.no_measure:
        return

    def timed(f):
        t = time.perf_counter()
        f()
        return (time.perf_counter() - t) * 1000

    one = [timed(lambda k=k: put_policy("p-0", "^app-0-",
                                        {"max-length": 100000 + k, "message-ttl": 600000}))
           for k in range(o.rounds)]
    add = []
    remove = []
    for _ in range(o.rounds // 2 or 1):
        add.append(timed(lambda: put_policy("all", ".*", {"max-length": 50000}, priority=100)))
        remove.append(timed(lambda: api.delete(f"{base}/policies/%2F/all")))
    # An HTTP round trip that changes nothing, for scale.
    idle = [timed(lambda: api.get(f"{base}/policies/%2F/p-0")) for _ in range(o.rounds)]

    def row(what, xs):
        print(f"| {what} | {statistics.median(xs):.2f} | {max(xs):.2f} |")

    print(f"\n{o.queues} queues, {o.policies} policies: HTTP round trip in ms\n")
    print("| request | median | max |")
    print("|---|---|---|")
    row(f"update one policy (applies to {per} queues)", one)
    row(f"add a catch-all policy (all {o.policies * per} queues change)", add)
    row("remove it again (all queues change back)", remove)
    row("GET one policy (no change, for scale)", idle)


if __name__ == "__main__":
    main()
