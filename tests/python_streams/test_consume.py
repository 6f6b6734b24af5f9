"""basic.consume on a stream and what a stream refuses: prefetch, auto-ack,
bad x-stream-offset values, consumer arguments, basic.get, queue.purge,
nack/reject/recover; acks only move credit."""

import datetime
import decimal

import pytest

from conftest import (
    S,
    Reader,
    assert_alive,
    closed_by,
    pump,
    pump_until,
    q_text,
    watch_channel,
)

PREFETCH = "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '<q>' in vhost '/''"
NOT_IMPL = "NOT_IMPLEMENTED - %s not supported by stream queues queue '<q>' in vhost '/'"
BAD_OFFSET = ("PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '<q>' in vhost '/': "
              '{invalid_stream_offset_arg,{longstr,<<"%s">>}}')
ARG = ("PRECONDITION_FAILED - invalid arg '%s' for queue '<q>' in vhost '/' "
       "of queue type rabbit_stream_queue")


@pytest.fixture
def filled(stream, conn):
    """A stream holding m0..m4 (offsets 0..4), published with confirms."""
    q = stream()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    return q


def consume_closes(conn, q, qos=None, global_qos=False, auto_ack=False, arguments=None,
                   exclusive=False):
    ch = conn.channel()

    def go():
        if global_qos:
            ch.basic_qos(prefetch_count=5, global_qos=True)
        if qos is not None:
            ch.basic_qos(prefetch_count=qos)
        ch.basic_consume(q, lambda *a: None, auto_ack=auto_ack, arguments=arguments,
                         exclusive=exclusive)

    return closed_by(go)


@pytest.mark.parametrize(
    "qos,global_qos",
    [(None, False), (0, False), (None, True)],
    ids=["no_qos", "qos_0", "global_qos_only"],
)
def test_consume_needs_consumer_prefetch(broker, conn, filled, qos, global_qos):
    got = consume_closes(conn, filled, qos=qos, global_qos=global_qos,
                         arguments={"x-stream-offset": "first"})
    assert got == ("channel", 406, q_text(PREFETCH, filled))
    assert conn.is_open
    assert_alive(broker)


def test_consume_global_and_consumer_prefetch(conn, filled):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=5, global_qos=True)
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(filled, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)),
                     arguments={"x-stream-offset": "first"})
    pump_until(conn, lambda: len(got) >= 5)
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_consume_auto_ack_closes_connection(broker, connect, filled):
    conn = connect()
    got = consume_closes(conn, filled, qos=10, auto_ack=True,
                         arguments={"x-stream-offset": "first"})
    assert got == ("connection", 540,
                   q_text("NOT_IMPLEMENTED - automatic acknowledgement not supported by "
                          "stream queues queue '<q>' in vhost '/'", filled))
    assert_alive(broker)


def test_consume_auto_ack_without_prefetch(broker, connect, filled):
    """The prefetch is checked first."""
    conn = connect()
    got = consume_closes(conn, filled, auto_ack=True)
    assert got == ("channel", 406, q_text(PREFETCH, filled))
    assert_alive(broker)


@pytest.mark.parametrize("value", ["1X", "0s", "1d", "3"])
def test_consume_bad_offset_string(broker, conn, filled, value):
    got = consume_closes(conn, filled, qos=10, arguments={"x-stream-offset": value})
    assert got == ("channel", 406, q_text(BAD_OFFSET % value, filled))
    assert conn.is_open
    assert_alive(broker)


@pytest.mark.parametrize(
    "value",
    ["foo", "FIRST", "", "-1h", decimal.Decimal("1.5"), {"a": 1}, True, [1]],
    ids=["foo", "FIRST", "empty", "minus_1h", "decimal", "table", "bool", "array"],
)
def test_consume_unparsable_offset(broker, connect, filled, value):
    """RabbitMQ 3.10 crashes on these (connection.close 541 INTERNAL_ERROR);
    a channel.close 406 with the invalid_stream_offset_arg text is accepted
    too (for a string value, the text RabbitMQ gives for "1X")."""
    conn = connect()
    got = consume_closes(conn, filled, qos=10, arguments={"x-stream-offset": value})
    assert got is not None and (
        got == ("connection", 541, "INTERNAL_ERROR")
        or (got[:2] == ("channel", 406) and got[2].startswith(q_text(
            "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '<q>' in vhost '/': "
            "{invalid_stream_offset_arg,", filled)))
    ), got
    assert_alive(broker)


@pytest.mark.parametrize("arg,value", [("x-priority", 5), ("x-cancel-on-ha-failover", True)])
def test_consume_refused_consumer_argument(broker, conn, filled, arg, value):
    got = consume_closes(conn, filled, qos=10,
                         arguments={arg: value, "x-stream-offset": "first"})
    assert got == ("channel", 406, q_text(ARG % arg, filled))
    assert_alive(broker)


def test_consume_unknown_argument_ignored(conn, filled):
    r = Reader(conn, filled, "first", 10, arguments={"x-stream-foo": "last"})
    assert [d.body for d in r.wait(5)] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_consume_exclusive(connect, filled):
    """An exclusive consumer is allowed, and other consumers too."""
    a = Reader(connect(), filled, "first", 10)
    b = Reader(connect(), filled, "first", 10, exclusive=True)
    c = Reader(connect(), filled, "first", 10)
    for r in (a, b, c):
        assert [d.offset for d in r.wait(5)] == [0, 1, 2, 3, 4]


def test_stream_offset_on_classic_queue(broker, conn, names):
    q = names("classic")
    ch = conn.channel()
    ch.queue_declare(q)
    got = consume_closes(conn, q, qos=1, arguments={"x-stream-offset": "first"})
    assert got == ("channel", 406, q_text(
        "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '<q>' in vhost '/' "
        "of queue type rabbit_classic_queue", q))
    assert_alive(broker)


@pytest.mark.parametrize("no_ack", [False, True])
def test_basic_get_refused(broker, connect, filled, no_ack):
    conn = connect()
    ch = conn.channel()
    got = closed_by(lambda: ch.basic_get(filled, auto_ack=no_ack))
    assert got == ("connection", 540, q_text(NOT_IMPL % "basic.get", filled))
    assert_alive(broker)


def test_purge_refused(broker, connect, filled):
    conn = connect()
    ch = conn.channel()
    got = closed_by(lambda: ch.queue_purge(filled))
    assert got == ("connection", 540, q_text(NOT_IMPL % "queue.purge", filled))
    # Nothing was purged.
    r = Reader(connect(), filled, "first", 10)
    assert [d.offset for d in r.wait(5)] == [0, 1, 2, 3, 4]
    assert_alive(broker)


NACK = NOT_IMPL % "basic.nack and basic.reject"


@pytest.mark.parametrize(
    "how",
    ["nack_requeue", "nack", "reject_requeue", "reject", "nack_multiple"],
)
def test_nack_reject_close_connection(broker, connect, filled, how):
    conn = connect()
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    tag = r.got[0].method.delivery_tag
    op = {
        "nack_requeue": lambda: r.ch.basic_nack(tag, requeue=True),
        "nack": lambda: r.ch.basic_nack(tag, requeue=False),
        "reject_requeue": lambda: r.ch.basic_reject(tag, requeue=True),
        "reject": lambda: r.ch.basic_reject(tag, requeue=False),
        "nack_multiple": lambda: r.ch.basic_nack(0, multiple=True, requeue=False),
    }[how]
    got = closed_by(lambda: (op(), pump(conn, 2.0)))
    assert got == ("connection", 540, q_text(NACK, filled))
    # Nothing was redelivered before the close.
    assert [d.offset for d in r.got] == [0, 1]
    assert all(not d.method.redelivered for d in r.got)
    # The log is unchanged: each message once, none redelivered.
    again = Reader(connect(), filled, "first", 10)
    got = again.wait(5)
    again.quiet()
    assert [(d.offset, d.method.redelivered) for d in again.got] == [(i, False) for i in range(5)]
    assert_alive(broker)


def test_nack_unknown_tag(broker, conn, filled):
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    closes = watch_channel(r.ch)
    closed_by(lambda: r.ch.basic_nack(99, requeue=False))
    pump_until(conn, lambda: closes)
    assert [(e.reply_code, e.reply_text) for e in closes] == [
        (406, "PRECONDITION_FAILED - unknown delivery tag 99")]
    assert conn.is_open
    assert_alive(broker)


def test_recover_requeue(broker, connect, filled):
    """basic.recover(requeue=True) with unacked stream deliveries crashes
    RabbitMQ 3.10's channel: connection.close 541 INTERNAL_ERROR. The
    NOT_IMPLEMENTED connection.close that RabbitMQ gives nack, reject and
    recover(requeue=false) is accepted too. Nothing is redelivered."""
    conn = connect()
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    got = closed_by(lambda: (r.ch.basic_recover(requeue=True), pump(conn, 2.0)))
    assert got in (
        ("connection", 541, "INTERNAL_ERROR"),
        ("connection", 540, q_text(NOT_IMPL % "basic.recover", filled)),
    ), got
    assert [(d.offset, d.method.redelivered) for d in r.got] == [(0, False), (1, False)]
    assert_alive(broker)


def test_recover_no_requeue(broker, connect, filled):
    conn = connect()
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    got = closed_by(lambda: (r.ch.basic_recover(requeue=False), pump(conn, 2.0)))
    assert got == ("connection", 540, "NOT_IMPLEMENTED - requeue=false")
    assert_alive(broker)


@pytest.mark.parametrize("how", ["unknown", "twice"])
def test_ack_unknown_tag(broker, conn, filled, how):
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    closes = watch_channel(r.ch)
    tag = 99 if how == "unknown" else 1

    def acks():
        if how == "unknown":
            r.ch.basic_ack(99)
        else:
            r.ch.basic_ack(1)
            r.ch.basic_ack(1)

    # The close may already be seen while pika flushes the second ack.
    closed_by(acks)
    pump_until(conn, lambda: closes)
    assert [(e.reply_code, e.reply_text) for e in closes] == [
        (406, "PRECONDITION_FAILED - unknown delivery tag %d" % tag)]
    assert conn.is_open
    assert_alive(broker)


def test_ack_after_cancel(conn, filled):
    r = Reader(conn, filled, "first", 2, ack=False)
    r.wait(2)
    r.ch.basic_cancel(r.tag)
    r.ch.basic_ack(1)
    r.ch.basic_ack(2)
    pump(conn, 0.5)
    assert r.ch.is_open
    r.ch.basic_qos(prefetch_count=3)


def test_acks_move_credit(conn, stream):
    """Prefetch 2 and no acks: 2 deliveries; each ack lets one more
    through; ack multiple frees all; a basic.qos after the consume does not
    change that consumer's prefetch."""
    q = stream()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", q, b"m%d" % i)
    r = Reader(conn, q, "first", 2, ack=False)
    r.wait(2)
    r.quiet()
    assert r.offsets == [0, 1]
    r.ch.basic_ack(r.got[0].method.delivery_tag)
    r.wait(3)
    r.quiet()
    assert r.offsets == [0, 1, 2]
    r.ch.basic_qos(prefetch_count=5)
    r.quiet()
    assert r.offsets == [0, 1, 2]
    r.ch.basic_ack(0, multiple=True)
    r.wait(5)
    r.quiet()
    assert r.offsets == [0, 1, 2, 3, 4]
    r.ch.basic_ack(0, multiple=True)
    r.wait(7)
    r.quiet()
    assert r.offsets == [0, 1, 2, 3, 4, 5, 6]
    assert [d.method.delivery_tag for d in r.got] == [1, 2, 3, 4, 5, 6, 7]
    assert all(not d.method.redelivered for d in r.got)


def test_delete_stream_with_consumers(conn, connect, names):
    """queue.delete (also with if_empty on a stream holding messages)
    deletes it, delete-ok message_count 0; its consumers get basic.cancel
    and their channels stay open."""
    q = names()
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=dict(S))
    ch.confirm_delivery()
    ch.basic_publish("", q, b"one")
    other = connect()
    r = Reader(other, q, "first", 10)
    cancelled = []
    r.ch.add_on_cancel_callback(lambda m: cancelled.append(m.method.consumer_tag))
    r.wait(1)
    ok = conn.channel().queue_delete(q, if_empty=True)
    assert ok.method.message_count == 0
    assert pump_until(other, lambda: cancelled, timeout=15) == [r.tag]
    assert r.ch.is_open
    r.ch.basic_qos(prefetch_count=3)
    c = conn.channel()
    assert closed_by(lambda: c.queue_declare(q, passive=True)) == (
        "channel", 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_delete_stream_if_unused(conn, names):
    q = names()
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=dict(S))
    ch.basic_publish("", q, b"one")
    assert ch.queue_delete(q, if_unused=True).method.message_count == 0


def test_consume_missing_stream(broker, conn):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    got = closed_by(lambda: ch.basic_consume("no-such-stream-xyz", lambda *a: None,
                                             arguments={"x-stream-offset": "first"}))
    assert got == ("channel", 404, "NOT_FOUND - no queue 'no-such-stream-xyz' in vhost '/'")
    assert_alive(broker)


def test_consume_timestamp_offset_type(conn, filled):
    """A pika datetime is an AMQP timestamp ('T', seconds)."""
    r = Reader(conn, filled, datetime.datetime(1971, 1, 1), 10)
    assert [d.offset for d in r.wait(5)] == [0, 1, 2, 3, 4]
