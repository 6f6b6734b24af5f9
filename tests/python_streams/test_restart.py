"""Restart (SIGTERM / rabbitmqctl stop) and kill -9 of the broker keep a
stream's log, its arguments and the offsets it hands out. The broker is
restarted on the same data directory; tests reconnect afterwards."""

import pika
import pytest

import time

from conftest import (
    TARGET,
    Reader,
    closed_by,
    eventually,
    message_count,
    pump_until,
    q_text,
    stream_args,
    unique,
)

pytestmark = pytest.mark.restart


def fill(conn, q, rng, headers=True):
    ch = conn.channel()
    ch.confirm_delivery()
    for i in rng:
        # Transient (1) and persistent (2) alike: a stream keeps both.
        props = (pika.BasicProperties(headers={"i": i}, delivery_mode=1 + i % 2)
                 if headers else None)
        ch.basic_publish("", q, b"m%d" % i, props)


def read(broker, q, offset, n, prefetch=500, timeout=30):
    c = broker.connect()
    r = Reader(c, q, offset, prefetch)
    r.wait(n, timeout)
    r.quiet(0.3)
    got = r.got
    c.close()
    return got


def ready(broker, q, timeout=60):
    """After a kill -9, RabbitMQ's stream coordinator restarts the stream
    a while after the node is up; until then a consume gets channel.close
    404 "home node ... is down or inaccessible". Wait for that on RabbitMQ;
    warren must serve the stream as soon as it listens."""
    if TARGET != "rabbitmq":
        return
    deadline = time.time() + timeout
    while True:
        c = broker.connect()
        ch = c.channel()
        ch.basic_qos(prefetch_count=1)
        got = closed_by(lambda: ch.basic_consume(q, lambda *a: None,
                                                 arguments={"x-stream-offset": "next"}))
        c.close()
        if got is None:
            return
        assert got[:2] == ("channel", 404) and "is down or inaccessible" in got[2], got
        assert time.time() < deadline, got
        time.sleep(0.5)


def declare(broker, q, args):
    c = broker.connect()
    c.channel().queue_declare(q, durable=True, arguments=args)
    c.close()


def delete(broker, q):
    c = broker.connect()
    c.channel().queue_delete(q)
    c.close()


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_log_and_offsets_survive(restartable, how):
    broker = restartable
    q = unique("keep")
    args = stream_args(x_max_age="1h")
    declare(broker, q, args)
    c = broker.connect()
    fill(c, q, range(100))
    # A consumer part-way through when the broker goes.
    r = Reader(c, q, "first", 10)
    r.wait(40)
    seen = r.offsets
    assert seen[:40] == list(range(40))
    (broker.restart if how == "restart" else broker.kill9_restart)()
    ready(broker, q)
    got = read(broker, q, "first", 100)
    assert [(d.offset, d.body, d.props.headers) for d in got] == [
        (i, b"m%d" % i, {"i": i, "x-stream-offset": i}) for i in range(100)]
    assert [d.props.delivery_mode for d in got] == [1 + i % 2 for i in range(100)]
    # The arguments survived: the same declare is fine, another is refused.
    declare(broker, q, args)
    c = broker.connect()
    ch = c.channel()
    assert closed_by(lambda: ch.queue_declare(q, durable=True, arguments=stream_args(x_max_age="2h"))) == (
        "channel", 406, q_text("PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '<q>' "
                               "in vhost '/': received '2h' but current is '1h'", q))
    # The consumer resumes where it was, and new messages continue the log.
    resume = Reader(c, q, seen[-1] + 1, 10)
    nxt = Reader(c, q, "next", 10)
    fill(c, q, range(100, 110))
    resume.wait(110 - seen[-1] - 1)
    nxt.wait(10)
    pump_until(c, lambda: False, 0.3)
    assert resume.offsets == list(range(seen[-1] + 1, 110))
    assert [(d.offset, d.body) for d in nxt.got] == [(i, b"m%d" % i) for i in range(100, 110)]
    c.close()
    delete(broker, q)


def test_kill9_keeps_every_confirmed_message(restartable):
    broker = restartable
    q = unique("kill")
    declare(broker, q, stream_args())
    c = broker.connect()
    fill(c, q, range(1000), headers=False)
    broker.kill9_restart()
    ready(broker, q)
    got = read(broker, q, "first", 1000)
    assert [(d.offset, d.body) for d in got] == [(i, b"m%d" % i) for i in range(1000)]
    c = broker.connect()
    fill(c, q, [1000], headers=False)
    got = read(broker, q, 1000, 1)
    assert [(d.offset, d.body) for d in got] == [(1000, b"m1000")]
    c.close()
    delete(broker, q)


def test_restart_keeps_retention_state(restartable):
    """After retention dropped segments, a restart keeps the same first
    offset and the same offsets for every kept message; the log goes on
    after the last one."""
    broker = restartable
    q = unique("ret")
    declare(broker, q, stream_args(x_stream_max_segment_size_bytes=1000, x_max_length_bytes=5000))
    c = broker.connect()
    fill(c, q, range(200), headers=False)
    c.close()
    before = read(broker, q, "first", 1, timeout=10)
    assert before[0].offset > 0
    broker.restart()
    ready(broker, q)
    after = read(broker, q, "first", len(before), timeout=10)
    assert [(d.offset, d.body) for d in after] == [(d.offset, d.body) for d in before]
    from_zero = read(broker, q, 0, len(before), timeout=10)
    assert from_zero[0].offset == before[0].offset
    c = broker.connect()
    fill(c, q, [200], headers=False)
    c.close()
    tail = read(broker, q, before[-1].offset + 1, 1)
    assert [d.body for d in tail] == [b"m200"] and tail[0].offset > before[-1].offset
    delete(broker, q)


def test_stream_survives_and_declare_ok_counts(restartable):
    broker = restartable
    q = unique("count")
    declare(broker, q, stream_args())
    c = broker.connect()
    fill(c, q, range(25), headers=False)
    c.close()
    broker.restart()
    ready(broker, q)
    assert eventually(lambda: message_count(broker, q) == (25, 0), timeout=20), message_count(broker, q)
    delete(broker, q)
