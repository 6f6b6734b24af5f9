"""Clean-restart scenario, driven by tests/durability.rs.

Usage: restart.py PORT

Phase 1 sets up durable and transient state, holds one delivered-but-unacked
message on an open connection, prints READY and waits for a line on stdin
(the Rust test restarts the broker meanwhile; this script keeps answering
the broker so the shutdown's connection.close is acknowledged promptly).
Phase 2 checks what survived and prints OK.  Any failed check raises (exit
status 1).  SIGALRM bounds the whole run.
"""

import select
import signal
import sys
import time

import pika

PORT = int(sys.argv[1])
signal.alarm(60)


def params():
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=PORT,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=10,
        blocked_connection_timeout=10,
    )


def connect():
    return pika.BlockingConnection(params())


def check(cond, what):
    if not cond:
        print("FAIL " + what, flush=True)
        raise AssertionError(what)


def missing(ch_factory, kind, name):
    """True if a passive declare of `name` fails with 404."""
    ch = ch_factory()
    try:
        if kind == "queue":
            ch.queue_declare(name, passive=True)
        else:
            ch.exchange_declare(name, passive=True)
        return False
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code == 404


# --------------------------------------------------------------- phase 1
conn = connect()
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("task_queue", durable=True)
persistent = pika.BasicProperties(
    delivery_mode=2, content_type="text/plain", headers={"n": 0}
)
for i in (1, 2, 3):
    props = pika.BasicProperties(
        delivery_mode=2, content_type="text/plain", headers={"n": i}
    )
    ch.basic_publish("", "task_queue", b"task %d" % i, props)
    if i == 1:
        # Transient messages in a durable queue do not survive.
        ch.basic_publish(
            "", "task_queue", b"transient", pika.BasicProperties(delivery_mode=1)
        )
ch.basic_publish("", "task_queue", b"no properties at all")

# A non-durable queue and exchange vanish, with their (persistent) messages.
ch.queue_declare("temp_q", durable=False)
ch.basic_publish("", "temp_q", b"gone", persistent)
ch.exchange_declare("temp_x", "fanout", durable=False)

# A durable exchange and its binding route again after the restart.
ch.exchange_declare("dur_x", "direct", durable=True)
ch.queue_declare("bound_q", durable=True)
ch.queue_bind("bound_q", "dur_x", routing_key="rk")
ch.basic_publish("dur_x", "rk", b"routed before", persistent)

# Delivered-but-unacked across the restart: r1 is held, r2/r3 never delivered.
ch.queue_declare("redeliver_q", durable=True)
for b in (b"r1", b"r2", b"r3"):
    ch.basic_publish("", "redeliver_q", b, persistent)
holder = conn.channel()
method, _props, body = holder.basic_get("redeliver_q", auto_ack=False)
check(body == b"r1" and not method.redelivered, "first basic.get %r" % body)

print("READY", flush=True)
# Wait for "go", answering the broker meanwhile (its shutdown closes us).
closed_by_broker = None
while True:
    r, _, _ = select.select([sys.stdin], [], [], 0.05)
    if r:
        sys.stdin.readline()
        break
    if conn.is_open:
        try:
            conn.process_data_events(time_limit=0)
        except pika.exceptions.ConnectionClosedByBroker as e:
            closed_by_broker = e.reply_code
        except pika.exceptions.AMQPConnectionError as e:
            closed_by_broker = str(e)
check(closed_by_broker == 320, "connection closed with 320 by the restart, got %r"
      % (closed_by_broker,))

# --------------------------------------------------------------- phase 2
conn = connect()
ch = conn.channel()
got = []


def on_msg(c, method, props, body):
    got.append((method, props, body))
    c.basic_ack(method.delivery_tag)


ch.basic_consume("task_queue", on_msg)
deadline = time.monotonic() + 5
while len(got) < 3 and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.05)
conn.process_data_events(time_limit=0.3)  # nothing more may arrive
bodies = [b for _, _, b in got]
# The transient messages (delivery_mode 1, or no properties) are gone.
check(bodies == [b"task 1", b"task 2", b"task 3"],
      "task_queue after restart: %r" % bodies)
for i, (method, props, body) in enumerate(got[:3], start=1):
    check(not method.redelivered, "%r redelivered" % body)
    check(props.delivery_mode == 2, "%r delivery_mode %r" % (body, props.delivery_mode))
    check(props.content_type == "text/plain", "%r content_type" % body)
    check(props.headers == {"n": i}, "%r headers %r" % (body, props.headers))
print("task_queue: %r" % bodies, flush=True)

check(missing(conn.channel, "queue", "temp_q"), "non-durable queue survived")
check(missing(conn.channel, "exchange", "temp_x"), "non-durable exchange survived")

ch = conn.channel()
ch.exchange_declare("dur_x", passive=True)
m, _p, b = ch.basic_get("bound_q", auto_ack=True)
check(b == b"routed before" and not m.redelivered, "bound_q kept its message: %r" % b)
ch.confirm_delivery()
ch.basic_publish("dur_x", "rk", b"routed after", persistent)
m, _p, b = ch.basic_get("bound_q", auto_ack=True)
check(b == b"routed after", "durable binding routes after restart: %r" % b)

flags = []
for _ in range(3):
    m, _p, b = ch.basic_get("redeliver_q", auto_ack=True)
    check(m is not None, "redeliver_q ran dry")
    flags.append((b, m.redelivered))
check(flags == [(b"r1", True), (b"r2", False), (b"r3", False)],
      "redelivered flags after restart: %r" % flags)
m, _p, b = ch.basic_get("redeliver_q", auto_ack=True)
check(m is None, "redeliver_q has extra message %r" % b)

conn.close()
print("OK redelivered=%r" % flags, flush=True)
