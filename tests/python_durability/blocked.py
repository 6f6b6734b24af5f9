"""Memory alarm scenario, driven by tests/durability.rs against a broker with
a 1 MiB memory budget and no data directory (nothing is paged out).

Usage: blocked.py PORT

A consumer takes deliveries with manual ack (no prefetch limit) and does not
ack, so delivered content stays in memory; a publisher sends 64 KiB messages
until it gets connection.blocked.  While blocked, what it publishes is not
read by the broker.  When the consumer acks everything, the publisher gets
connection.unblocked and the held message goes through.  Prints OK.
Any failed check raises (exit status 1); SIGALRM bounds the whole run.
"""

import signal
import sys
import time

import pika

PORT = int(sys.argv[1])
signal.alarm(40)
QUEUE = "blocked_q"
BODY = b"x" * 65536


def connect():
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host="127.0.0.1",
            port=PORT,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=10,
            blocked_connection_timeout=30,
            heartbeat=0,
        )
    )


def check(cond, what):
    if not cond:
        print("FAIL " + what, flush=True)
        raise AssertionError(what)


def pump(conns, until, timeout):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        for c in conns:
            c.process_data_events(time_limit=0.01)
    return until()


events = []
pub = connect()
pub.add_on_connection_blocked_callback(
    lambda _c, frame: events.append(("blocked", frame.method.reason))
)
pub.add_on_connection_unblocked_callback(lambda _c, _f: events.append(("unblocked",)))
pch = pub.channel()
pch.queue_declare(QUEUE, durable=True)

consumer_events = []
cons = connect()
cons.add_on_connection_blocked_callback(lambda *_: consumer_events.append("blocked"))
cch = cons.channel()
tags = []
cch.basic_consume(
    QUEUE, lambda _c, m, _p, body: tags.append((m.delivery_tag, len(body))), auto_ack=False
)
both = [pub, cons]


def blocked():
    return any(e[0] == "blocked" for e in events)


n = 0
while not blocked() and n < 64:
    mode = 2 if n % 2 else 1
    pch.basic_publish("", QUEUE, BODY, pika.BasicProperties(delivery_mode=mode))
    n += 1
    pump(both, lambda: blocked() or len(tags) == n, 5)
check(blocked(), "no connection.blocked after %d x 64 KiB unacked (events %r)" % (n, events))
check(events[0] == ("blocked", "low on memory"), "blocked reason: %r" % (events,))
# The alarm counts connection buffers and per-message overhead too: blocked
# with at least 3/4 of the budget in delivered content.
check(len(tags) * 65536 >= 3 << 18, "blocked with only %d messages unacked" % len(tags))
check(all(size == 65536 for _, size in tags), "delivered sizes")
print("blocked after %d messages published, %d delivered unacked" % (n, len(tags)), flush=True)

# While blocked the publisher is not read: this message (and any sent after
# the broker blocked but before we heard of it) waits.
pch.basic_publish("", QUEUE, b"held while blocked", pika.BasicProperties(delivery_mode=2))
n += 1
held = len(tags)
pump(both, lambda: False, 0.5)
check(len(tags) == held, "a message published while blocked was delivered")
check(not any(e[0] == "unblocked" for e in events), "unblocked too early: %r" % events)

# The consumer (which never published) is still served: its acks free memory.
cch.basic_ack(tags[-1][0], multiple=True)
check(pump(both, lambda: any(e[0] == "unblocked" for e in events), 5),
      "no connection.unblocked after acking everything (events %r)" % events)
check(pump(both, lambda: len(tags) == n, 5),
      "held messages not delivered after unblock (%d of %d)" % (len(tags), n))
check(tags[-1][1] == len(b"held while blocked"), "held message size")
cch.basic_ack(tags[-1][0], multiple=True)

# Publishing works again, with confirms.
pch.confirm_delivery()
pch.basic_publish("", QUEUE, b"after", pika.BasicProperties(delivery_mode=2))
check(pump(both, lambda: len(tags) == n + 1, 5), "message after unblock not delivered")
cch.basic_ack(tags[-1][0])
pump(both, lambda: False, 0.1)
check(events == [("blocked", "low on memory"), ("unblocked",)], "events %r" % events)
check(consumer_events == [], "the consumer (no publishes) was blocked: %r" % consumer_events)

pch.queue_delete(QUEUE)
cons.close()
pub.close()
print("OK published=%d unacked_at_block=%d events=%r" % (n, held, events), flush=True)
