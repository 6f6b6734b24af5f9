"""A stream in the management API (GET /api/queues/%2f/NAME, /api/queues)
and in `list_queues` (`warren ctl` / `rabbitmqctl`), with the fields
RabbitMQ 3.10 shows. Message counts come from periodically collected stats
on RabbitMQ, so they are polled."""

import urllib.parse

import pytest

from conftest import TARGET, Reader, eventually, stream_args


def fill(conn, q, n):
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, b"x" * 100)


def get_queue(broker, q):
    status, body = broker.api("GET", "/api/queues/%2F/" + urllib.parse.quote(q, safe=""))
    assert status == 200, status
    return body


def test_api_shows_a_stream(broker, conn, connect, stream):
    args = stream_args(x_max_age="1h", x_max_length_bytes=10_000_000)
    q = stream(x_max_age="1h", x_max_length_bytes=10_000_000)
    fill(conn, q, 30)
    r = Reader(connect(), q, "first", 5)
    r.wait(30)
    body = eventually(lambda: (lambda b: b if b.get("messages") == 30 and b.get("consumers") == 1
                               else None)(get_queue(broker, q)), timeout=20)
    assert body, get_queue(broker, q)
    assert body["name"] == q and body["vhost"] == "/"
    assert body["type"] == "stream"
    assert (body["durable"], body["auto_delete"], body["exclusive"]) == (True, False, False)
    assert body["arguments"] == args
    assert body["messages"] == 30
    assert body["messages_ready"] == 30
    assert body["messages_unacknowledged"] == 0
    assert body["consumers"] == 1
    details = body["consumer_details"]
    assert len(details) == 1
    d = details[0]
    assert d["consumer_tag"] == r.tag
    assert d["arguments"] == {"x-stream-offset": "first"}
    assert d["prefetch_count"] == 5
    assert d["ack_required"] is True
    assert d["exclusive"] is False
    assert d["queue"] == {"name": q, "vhost": "/"}


def test_api_lists_streams_with_type(broker, conn, stream):
    q = stream()
    classic = q + "-classic"
    ch = conn.channel()
    ch.queue_declare(classic)
    try:
        status, body = broker.api("GET", "/api/queues/%2F")
        assert status == 200
        types = {x["name"]: x.get("type") for x in body}
        assert types[q] == "stream"
        assert types[classic] == "classic"
    finally:
        ch.queue_delete(classic)


def test_api_consumer_arguments_with_numeric_offset(broker, connect, stream):
    q = stream()
    r = Reader(connect(), q, 7, 3)
    r.quiet(0.2)

    def found():
        status, body = broker.api("GET", "/api/consumers/%2F")
        return [c for c in body if c["queue"]["name"] == q] if status == 200 else None

    mine = eventually(found, timeout=15)
    assert mine and mine[0]["arguments"] == {"x-stream-offset": 7}
    assert mine[0]["prefetch_count"] == 3


def test_list_queues_shows_type_and_messages(broker, conn, stream):
    q = stream()
    fill(conn, q, 12)

    def row():
        code, out = broker.ctl_list_queues("name", "type", "messages")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].split("\t") == ["name", "type", "messages"], lines[:1]
        mine = [line for line in lines if line.split("\t")[0] == q]
        return mine if mine == [f"{q}\tstream\t12"] else None

    assert eventually(row, timeout=20), broker.ctl_list_queues("name", "type", "messages")


@pytest.mark.skipif(TARGET != "warren", reason="warren's own fields: RabbitMQ 3.10 shows no segments or offsets")
def test_warren_shows_segments_offsets_and_consumer_positions(broker, conn, connect, stream):
    """`/api/queues` and `warren ctl list_queues` show a stream's segments,
    first and committed offsets, bytes, and each consumer's next offset."""
    q = stream(x_stream_max_segment_size_bytes=2000)
    fill(conn, q, 50)
    r = Reader(connect(), q, "first", 20, ack=False)
    r.wait(20)
    body = eventually(lambda: (lambda b: b if b.get("consumer_offsets") else None)(get_queue(broker, q)),
                      timeout=10)
    assert body["segments"] >= 3, body
    assert body["first_offset"] == 0
    assert body["committed_offset"] == 49
    assert body["message_bytes"] > 50 * 100
    # It read 20 (prefetch 20, nothing acked): its next offset is 20.
    assert body["consumer_offsets"] == [{"consumer_tag": r.tag, "offset": 20}]
    code, out = broker.ctl_list_queues("name", "type", "messages", "segments", "committed_offset")
    assert code == 0, out
    mine = [line.split("\t") for line in out.splitlines() if line.split("\t")[0] == q]
    assert mine == [[q, "stream", "50", str(body["segments"]), "49"]], out
