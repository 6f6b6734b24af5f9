"""Retention: x-max-length-bytes and x-max-age drop whole segments
(x-stream-max-segment-size-bytes), oldest first, when a segment rolls over;
a consumer asking for a deleted offset starts at the new first.

RabbitMQ takes one offset for an internal chunk at the start of every
segment after the first, so with small segments its offsets have gaps; the
tests here assert only what any correct log must show: increasing offsets
and a contiguous suffix of what was published."""

import time

from conftest import Reader, pump_until


def body(i):
    return b"%04d" % i + b"x" * 96


def index(d):
    return int(d.body[:4])


def fill(conn, q, rng):
    ch = conn.channel()
    ch.confirm_delivery()
    for i in rng:
        ch.basic_publish("", q, body(i))


def read_from(connect, q, offset, last_index, timeout=10):
    """Read from `offset` until the message with `last_index` arrived."""
    r = Reader(connect(), q, offset, 1000)
    pump_until(r.conn, lambda: r.got and index(r.got[-1]) >= last_index, timeout)
    r.quiet(0.3)
    return r.got


def assert_suffix(got, last_index):
    idx = [index(d) for d in got]
    assert idx and idx == list(range(idx[0], last_index + 1)), idx
    offs = [d.offset for d in got]
    assert offs == sorted(set(offs)), offs
    return idx[0], offs[0]


def test_max_length_bytes_drops_oldest_segments(conn, connect, stream):
    q = stream(x_stream_max_segment_size_bytes=1000, x_max_length_bytes=5000)
    fill(conn, q, range(200))
    got = read_from(connect, q, "first", 199)
    first_idx, first_off = assert_suffix(got, 199)
    assert first_off > 0 and first_idx > 0
    # No more than 5000 bytes of bodies alone are kept.
    assert len(got) <= 50, len(got)
    # A consumer at a deleted offset starts at the new first.
    for start in (0, 5, first_off - 1):
        again = read_from(connect, q, start, 199)
        assert [d.offset for d in again] == [d.offset for d in got], start
    # A numeric offset inside what is kept starts exactly there.
    mid = got[len(got) // 2]
    part = read_from(connect, q, mid.offset, 199)
    assert part[0].offset == mid.offset and index(part[0]) == index(mid)


def test_retention_keeps_dropping_as_the_log_grows(conn, connect, stream):
    q = stream(x_stream_max_segment_size_bytes=1000, x_max_length_bytes=5000)
    fill(conn, q, range(100))
    first1 = assert_suffix(read_from(connect, q, "first", 99), 99)
    fill(conn, q, range(100, 300))
    first2 = assert_suffix(read_from(connect, q, "first", 299), 299)
    assert first2[1] > first1[1] and first2[0] > first1[0]


def test_max_age_is_applied_when_a_segment_rolls(conn, connect, stream):
    """x-max-age is evaluated when a segment rolls over, not continuously:
    messages older than the age are still there until the next roll, then
    the segments holding only such messages are gone."""
    q = stream(x_stream_max_segment_size_bytes=1000, x_max_age="2s")
    fill(conn, q, range(30))
    time.sleep(3.2)
    got = read_from(connect, q, "first", 29)
    assert [index(d) for d in got] == list(range(30))
    assert got[0].offset == 0
    fill(conn, q, range(30, 45))
    got = read_from(connect, q, "first", 44)
    first_idx, first_off = assert_suffix(got, 44)
    assert first_off > 0 and 0 < first_idx <= 30, (first_idx, first_off)
    again = read_from(connect, q, 0, 44)
    assert again[0].offset == first_off


def test_no_retention_without_limits(conn, connect, stream):
    """Small segments alone delete nothing."""
    q = stream(x_stream_max_segment_size_bytes=1000)
    fill(conn, q, range(100))
    got = read_from(connect, q, "first", 99)
    assert [index(d) for d in got] == list(range(100))
    assert got[0].offset == 0
