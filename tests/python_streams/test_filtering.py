"""Stream filtering over AMQP 0-9-1 as RabbitMQ 3.13 defines it (skipped
against the RabbitMQ 3.10 installed here):

- publishing: the `x-stream-filter-value` header (a string) is the message's
  filter value; it stays in the delivered message's headers;
- consuming: the `x-stream-filter` consumer argument is a string or an
  array of strings; `x-stream-match-unfiltered` (bool, default false) also
  lets messages without a filter value through; without `x-stream-filter`
  there is no filtering (and `x-stream-match-unfiltered` alone changes
  nothing);
- declaring: `x-stream-filter-size-bytes` sizes RabbitMQ's Bloom filter.

RabbitMQ filters per chunk with a Bloom filter, so it may deliver
non-matching messages and its clients must filter again. warren filters
exactly, so these tests assert that only matching messages arrive (and,
with match-unfiltered, those without a filter value), at their own offsets,
in order."""

import pika
import pytest

from conftest import Reader, pump

pytestmark = pytest.mark.rmq313

VALUES = ["apple", "orange", None, "apple", "banana", None, "orange", "apple"]


def fill(conn, q, values=VALUES, rounds=3):
    """rounds x VALUES, published with confirms; [(offset, value)]."""
    ch = conn.channel()
    ch.confirm_delivery()
    out = []
    n = 0
    for _ in range(rounds):
        for v in values:
            headers = {"n": n}
            if v is not None:
                headers["x-stream-filter-value"] = v
            ch.basic_publish("", q, b"%d" % n, pika.BasicProperties(headers=headers))
            out.append((n, v))
            n += 1
    return out


def consume(connect, q, expect, prefetch=10, **args):
    arguments = {"x-stream-offset": "first"}
    arguments.update({k.replace("_", "-"): v for k, v in args.items()})
    r = Reader(connect(), q, arguments.pop("x-stream-offset"), prefetch, arguments=arguments)
    r.wait(len(expect))
    r.quiet(0.7)
    return r


def check(r, published, keep):
    want = [(o, v) for o, v in published if keep(v)]
    got = [(d.offset, (d.props.headers or {}).get("x-stream-filter-value")) for d in r.got]
    assert got == want
    assert [d.body for d in r.got] == [b"%d" % o for o, _ in want]
    assert [d.props.headers["n"] for d in r.got] == [o for o, _ in want]


def test_filter_one_value(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    r = consume(connect, q, [p for p in pub if p[1] == "apple"], x_stream_filter="apple")
    check(r, pub, lambda v: v == "apple")


def test_filter_array_of_values(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    keep = lambda v: v in ("apple", "orange")  # noqa: E731
    r = consume(connect, q, [p for p in pub if keep(p[1])], x_stream_filter=["apple", "orange"])
    check(r, pub, keep)


def test_filter_match_unfiltered(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    keep = lambda v: v in ("apple", None)  # noqa: E731
    r = consume(connect, q, [p for p in pub if keep(p[1])], x_stream_filter="apple",
                x_stream_match_unfiltered=True)
    check(r, pub, keep)


def test_filter_match_unfiltered_false(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    r = consume(connect, q, [p for p in pub if p[1] == "banana"], x_stream_filter="banana",
                x_stream_match_unfiltered=False)
    check(r, pub, lambda v: v == "banana")


def test_no_filter_gets_everything(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    r = consume(connect, q, pub)
    check(r, pub, lambda v: True)
    # match-unfiltered without a filter changes nothing.
    r = consume(connect, q, pub, x_stream_match_unfiltered=True)
    check(r, pub, lambda v: True)


def test_filter_value_nobody_published(conn, connect, stream):
    q = stream()
    fill(conn, q)
    r = consume(connect, q, [], x_stream_filter="kiwi")
    assert r.got == []


def test_filter_with_numeric_offset_and_live_messages(conn, connect, stream):
    q = stream(x_stream_filter_size_bytes=32)
    pub = fill(conn, q, rounds=2)
    start = 9
    r = consume(connect, q, [p for p in pub if p[0] >= start and p[1] == "orange"],
                x_stream_offset=start, x_stream_filter="orange")
    check(r, [p for p in pub if p[0] >= start], lambda v: v == "orange")
    before = len(r.got)
    fill(conn, q, values=["apple", "orange", None], rounds=1)
    r.wait(before + 1)
    r.quiet(0.5)
    # Only the new "orange" (offset len(pub) + 1) arrives.
    assert [d.offset for d in r.got[before:]] == [len(pub) + 1]


def test_filter_with_prefetch_1(conn, connect, stream):
    """Credit counts only delivered messages: prefetch 1 with acks still
    gets every matching message."""
    q = stream()
    pub = fill(conn, q, rounds=5)
    keep = lambda v: v == "banana"  # noqa: E731
    r = consume(connect, q, [p for p in pub if keep(p[1])], prefetch=1, x_stream_filter="banana")
    check(r, pub, keep)


def test_two_filtered_consumers_independent(conn, connect, stream):
    q = stream()
    pub = fill(conn, q)
    a = consume(connect, q, [p for p in pub if p[1] == "apple"], x_stream_filter="apple")
    b = consume(connect, q, [p for p in pub if p[1] == "orange"], x_stream_filter="orange")
    pump([a.conn, b.conn], 0.2)
    check(a, pub, lambda v: v == "apple")
    check(b, pub, lambda v: v == "orange")
