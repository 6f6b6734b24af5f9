"""Publishing to a stream and reading it: offsets, attach points
(first/last/next/numeric/timestamp/interval), delivery headers and
properties, many independent consumers, prefetch without skipped offsets."""

import datetime
import time

import pika
import pytest

from conftest import S, Reader, pump, pump_until, read


def confirmed(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def fill(conn, q, bodies):
    ch = confirmed(conn)
    for b in bodies:
        ch.basic_publish("", q, b)


def test_first_message_has_offset_0_and_offsets_count_up(conn, stream):
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(20)])
    r = Reader(conn, q, "first", 100)
    r.wait(20)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(i, b"m%d" % i) for i in range(20)]


def test_delivery_headers_and_properties(conn, stream, names):
    """x-stream-offset (AMQP long, signed 64-bit) is added to the headers,
    replacing a publisher's own; everything else is as published;
    redelivered is false; exchange and routing key are the published ones."""
    import pika.data as pdata

    q = stream()
    x = names("sx")
    ch = confirmed(conn)
    ch.exchange_declare(x, "direct")
    ch.queue_bind(q, x, "rk")
    ch.basic_publish("", q, b"plain")
    full = pika.BasicProperties(
        headers={"a": 1, "x-stream-offset": "mine"}, content_type="text/plain",
        delivery_mode=2, message_id="mid", timestamp=12345, priority=3,
        expiration="60000", correlation_id="cid", reply_to="rt", type="ty",
        user_id="guest", app_id="app")
    ch.basic_publish("", q, b"full", full)
    ch.basic_publish(x, "rk", b"via exchange", pika.BasicProperties(headers={"b": "x"}))

    kinds = []
    orig = pdata.decode_value

    def spy(encoded, offset):
        kinds.append(bytes(encoded[offset:offset + 1]))
        return orig(encoded, offset)

    pdata.decode_value = spy
    try:
        r = Reader(conn, q, "first", 10)
        r.wait(3)
        r.quiet()
    finally:
        pdata.decode_value = orig
    assert [d.body for d in r.got] == [b"plain", b"full", b"via exchange"]
    plain, fullmsg, via = r.got
    assert plain.props.headers == {"x-stream-offset": 0}
    assert (plain.method.redelivered, plain.method.exchange, plain.method.routing_key) == (
        False, "", q)
    p = fullmsg.props
    assert p.headers == {"a": 1, "x-stream-offset": 1}
    assert (p.content_type, p.delivery_mode, p.message_id, p.timestamp, p.priority,
            p.expiration, p.correlation_id, p.reply_to, p.type, p.user_id, p.app_id) == (
        "text/plain", 2, "mid", 12345, 3, "60000", "cid", "rt", "ty", "guest", "app")
    assert via.props.headers == {"b": "x", "x-stream-offset": 2}
    assert (via.method.redelivered, via.method.exchange, via.method.routing_key) == (
        False, x, "rk")
    # Every x-stream-offset value was encoded as 'l' (the only other values
    # decoded were the publisher's 'I' 1 and 'S' "x").
    assert sorted(kinds) == sorted([b"l", b"I", b"l", b"S", b"l"]), kinds


def test_publisher_confirms_and_mandatory(broker, conn, stream):
    q = stream()
    ch = confirmed(conn)
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    for i in range(5):
        ch.basic_publish("", q, b"c%d" % i, mandatory=True)
    pump(conn, 0.3)
    assert returned == []
    assert [d.offset for d in read(broker, q, 5)] == [0, 1, 2, 3, 4]


def test_transaction(conn, stream):
    q = stream()
    fill(conn, q, [b"before"])
    t = conn.channel()
    t.tx_select()
    t.basic_publish("", q, b"tx")
    r = Reader(conn, q, "first", 10)
    r.wait(1)
    r.quiet()
    assert r.bodies == [b"before"]
    t.tx_commit()
    r.wait(2)
    assert [(d.offset, d.body) for d in r.got] == [(0, b"before"), (1, b"tx")]


@pytest.mark.parametrize("prefetches", [(100, 1000)])
def test_two_consumers_read_the_same_10000(broker, connect, stream, prefetches):
    """Two consumers (prefetch 100 and 1000) each read all 10,000 messages
    from `first`, in order, every offset 0..9999 exactly once."""
    n = 10000
    q = stream()
    pub = connect()
    ch = pub.channel()
    for i in range(n):
        ch.basic_publish("", q, b"%d" % i)
    confirmed(pub).basic_publish("", q, b"end")
    conns = [connect(), connect()]
    readers = [Reader(c, q, "first", p) for c, p in zip(conns, prefetches)]
    pump_until(conns, lambda: all(len(r.got) >= n + 1 for r in readers), timeout=90)
    pump(conns, 0.5)
    for r in readers:
        assert len(r.got) == n + 1, len(r.got)
        assert r.offsets == list(range(n + 1))
        assert r.bodies[:n] == [b"%d" % i for i in range(n)]
        assert r.bodies[n] == b"end"
        assert [d.method.delivery_tag for d in r.got] == list(range(1, n + 2))


def test_prefetch_above_one_skips_nothing_while_publishing(connect, stream):
    """Consumers attached before and while messages arrive, with prefetch
    2, 10 and 250, see every offset exactly once (LavinMQ's #1171)."""
    q = stream()
    pub = connect()
    ch = pub.channel()
    conns = [connect() for _ in range(3)]
    readers = [Reader(c, q, "first", p) for c, p in zip(conns, (2, 10, 250))]
    for i in range(3000):
        ch.basic_publish("", q, b"%d" % i)
        if i % 500 == 0:
            pump(conns, 0.01)
    confirmed(pub).basic_publish("", q, b"3000")
    pump_until(conns, lambda: all(len(r.got) >= 3001 for r in readers), timeout=60)
    pump(conns, 0.3)
    for r in readers:
        assert r.offsets == list(range(3001))
        assert r.bodies == [b"%d" % i for i in range(3001)]


def test_default_offset_is_next(conn, connect, stream):
    """Without x-stream-offset a consumer gets only what is published after
    it attached (RabbitMQ's default `next`; LavinMQ's #1293)."""
    q = stream()
    fill(conn, q, [b"old%d" % i for i in range(5)])
    r = Reader(connect(), q, prefetch=10)
    n = Reader(connect(), q, "next", 10)
    pump([r.conn, n.conn], QUIET)
    assert r.got == [] and n.got == []
    fill(conn, q, [b"new0", b"new1"])
    for x in (r, n):
        x.wait(2)
        x.quiet()
        assert [(d.offset, d.body) for d in x.got] == [(5, b"new0"), (6, b"new1")]


QUIET = 0.7


def test_last_is_the_last_single_message_chunk(conn, connect, stream):
    """Published one at a time with a confirm each, every message is a
    chunk of its own: `last` starts at the last message and then follows."""
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(6)])
    r = Reader(connect(), q, "last", 10)
    r.wait(1)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(5, b"m5")]
    fill(conn, q, [b"m6"])
    r.wait(2)
    assert r.offsets == [5, 6]


def test_last_starts_inside_the_last_batch(conn, connect, stream):
    """A burst without confirms may be written as one or several chunks:
    `last` gives a contiguous tail of the burst, ending at its last
    message, and never anything from before it."""
    q = stream()
    fill(conn, q, [b"single"])
    burst = conn.channel()
    for i in range(50):
        burst.basic_publish("", q, b"b%d" % i)
    assert [d.offset for d in read_all(connect, q, 51)][-1] == 50
    r = Reader(connect(), q, "last", 100)
    r.wait(1)
    r.quiet()
    offs = r.offsets
    assert offs and offs[-1] == 50 and offs[0] >= 1, offs
    assert offs == list(range(offs[0], 51))
    assert r.bodies == [b"b%d" % (o - 1) for o in offs]


def read_all(connect, q, n):
    r = Reader(connect(), q, "first", 1000)
    r.wait(n)
    r.quiet(0.2)
    return r.got


def test_last_on_empty_stream_waits(conn, connect, stream):
    q = stream()
    r = Reader(connect(), q, "last", 10)
    r.quiet()
    assert r.got == []
    fill(conn, q, [b"one", b"two"])
    r.wait(2)
    assert [(d.offset, d.body) for d in r.got] == [(0, b"one"), (1, b"two")]


def test_first_on_empty_stream_follows(conn, connect, stream):
    q = stream()
    r = Reader(connect(), q, "first", 10)
    r.quiet()
    assert r.got == []
    fill(conn, q, [b"one", b"two", b"three"])
    r.wait(3)
    assert r.offsets == [0, 1, 2]


@pytest.mark.parametrize("start", [0, 3, 7, 9])
def test_numeric_offset_in_the_log(conn, connect, stream, start):
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(10)])
    r = Reader(connect(), q, start, 100)
    r.wait(10 - start)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(i, b"m%d" % i) for i in range(start, 10)]


def test_numeric_offset_beyond_the_end_waits_for_it(conn, connect, stream):
    """With the next offset 5, a consumer at 7 gets nothing until 7 is
    written, then starts exactly there."""
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(5)])
    r = Reader(connect(), q, 7, 10)
    far = Reader(connect(), q, 2 ** 40, 10)
    r.quiet()
    assert r.got == []
    fill(conn, q, [b"m5", b"m6"])
    r.quiet()
    assert r.got == []
    fill(conn, q, [b"m7", b"m8"])
    r.wait(2)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(7, b"m7"), (8, b"m8")]
    far.quiet(0.1)
    assert far.got == []


def test_negative_offset_is_first(conn, connect, stream):
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(3)])
    r = Reader(connect(), q, -1, 10)
    r.wait(3)
    assert r.offsets == [0, 1, 2]


def wait_past_whole_second():
    """Sleep until just after the next whole second; return it (int)."""
    t = int(time.time()) + 1
    time.sleep(max(0.0, t - time.time()) + 0.05)
    return t


def ts(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def test_timestamp_offset(conn, connect, stream):
    """An AMQP timestamp (seconds) attaches at the first chunk written at or
    after it; before the log: from the first; in the future: like next."""
    q = stream()
    fill(conn, q, [b"a%d" % i for i in range(5)])
    t = wait_past_whole_second()
    fill(conn, q, [b"b%d" % i for i in range(5)])
    r = Reader(connect(), q, ts(t), 100)
    r.wait(5)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(5 + i, b"b%d" % i) for i in range(5)]
    old = Reader(connect(), q, datetime.datetime(1970, 1, 2), 100)
    old.wait(10)
    assert old.offsets == list(range(10))
    future = Reader(connect(), q, datetime.datetime(2100, 1, 1), 100)
    future.quiet()
    assert future.got == []
    fill(conn, q, [b"c0"])
    future.wait(1)
    future.quiet()
    assert [(d.offset, d.body) for d in future.got] == [(10, b"c0")]


@pytest.mark.parametrize("interval", ["1h", "30m", "7D", "1Y", "1M", "10s"])
def test_interval_offset_covering_everything(conn, connect, stream, interval):
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(4)])
    r = Reader(connect(), q, interval, 100)
    r.wait(4)
    r.quiet()
    assert r.offsets == [0, 1, 2, 3]


def test_interval_offset_is_now_minus_interval(conn, connect, stream):
    q = stream()
    fill(conn, q, [b"old%d" % i for i in range(3)])
    time.sleep(3.2)
    fill(conn, q, [b"new%d" % i for i in range(3)])
    r = Reader(connect(), q, "2s", 100)
    r.wait(3)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(3 + i, b"new%d" % i) for i in range(3)]


def test_consumers_are_independent(conn, connect, stream):
    """A stalled consumer (prefetch 1, never acks) does not hold back
    another one, and what one acks does not move the other."""
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(50)])
    stalled = Reader(connect(), q, "first", 1, ack=False)
    fast = Reader(connect(), q, "first", 10)
    middle = Reader(connect(), q, 20, 5)
    fast.wait(50)
    middle.wait(30)
    pump([stalled.conn, fast.conn, middle.conn], QUIET)
    assert stalled.offsets == [0]
    assert fast.offsets == list(range(50))
    assert middle.offsets == list(range(20, 50))
    stalled.ch.basic_ack(1)
    stalled.wait(2)
    pump(stalled.conn, 0.3)
    assert stalled.offsets == [0, 1]


def test_same_channel_two_consumers(conn, stream):
    """Two consumers on one channel each get their own copy."""
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(5)])
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = {"a": [], "b": []}

    def on(key):
        def cb(c, m, p, b):
            got[key].append(p.headers["x-stream-offset"])
            c.basic_ack(m.delivery_tag)
        return cb

    ch.basic_consume(q, on("a"), arguments={"x-stream-offset": "first"})
    ch.basic_consume(q, on("b"), arguments={"x-stream-offset": 3})
    pump_until(conn, lambda: len(got["a"]) >= 5 and len(got["b"]) >= 2)
    pump(conn, 0.3)
    assert got == {"a": [0, 1, 2, 3, 4], "b": [3, 4]}


def test_cancel_and_reattach(conn, connect, stream):
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(10)])
    r = Reader(connect(), q, "first", 3, ack=False)
    r.wait(3)
    r.cancel()
    fill(conn, q, [b"m10"])
    r.quiet()
    assert r.offsets == [0, 1, 2]
    again = Reader(r.conn, q, 3, 100)
    again.wait(8)
    again.quiet()
    assert again.offsets == list(range(3, 11))


def test_stream_declared_arguments_keep_messages(conn, stream):
    """x-max-age and x-max-length-bytes far from being reached keep all."""
    q = stream(x_max_age="1h", x_max_length_bytes=10_000_000)
    fill(conn, q, [b"m%d" % i for i in range(5)])
    r = Reader(conn, q, "first", 10)
    r.wait(5)
    assert r.offsets == [0, 1, 2, 3, 4]


def test_big_and_empty_bodies(conn, connect, stream):
    """A 1 MB body (many frames) and an empty body keep their bytes."""
    q = stream()
    big = bytes(range(256)) * 4096
    fill(conn, q, [big, b"", b"after"])
    r = Reader(connect(), q, "first", 10)
    r.wait(3)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(0, big), (1, b""), (2, b"after")]


def test_unacked_deliveries_are_not_redelivered(conn, connect, stream):
    """Closing a connection that holds unacked stream deliveries changes
    nothing in the log: a new consumer sees each message once, not
    redelivered."""
    q = stream()
    fill(conn, q, [b"m%d" % i for i in range(5)])
    holder = connect()
    r = Reader(holder, q, "first", 3, ack=False)
    r.wait(3)
    holder.close()
    again = Reader(connect(), q, "first", 10)
    again.wait(5)
    again.quiet()
    assert [(d.offset, d.method.redelivered) for d in again.got] == [(i, False) for i in range(5)]


def test_redeclared_stream_starts_again_at_0(conn, connect, names):
    q = names()
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=dict(S))
    fill(conn, q, [b"old%d" % i for i in range(5)])
    ch.queue_delete(q)
    ch.queue_declare(q, durable=True, arguments=dict(S))
    fill(conn, q, [b"new"])
    r = Reader(connect(), q, "first", 10)
    r.wait(1)
    r.quiet()
    assert [(d.offset, d.body) for d in r.got] == [(0, b"new")]
