"""queue.declare of a stream: RabbitMQ's refusals (exact codes and texts),
accepted arguments, redeclares and the declare-ok counts."""

import decimal

import pytest

from conftest import (
    S,
    assert_alive,
    closed_by,
    eventually,
    message_count,
    q_text,
    stream_args,
)

PROP = "PRECONDITION_FAILED - invalid property '%s' for queue '<q>' in vhost '/'"
ARG = ("PRECONDITION_FAILED - invalid arg '%s' for queue '<q>' in vhost '/' "
       "of queue type rabbit_stream_queue")
BADVAL = "PRECONDITION_FAILED - invalid arg '%s' for queue '<q>' in vhost '/': %s"


def declare_closes(conn, q, **kw):
    kw.setdefault("durable", True)
    ch = conn.channel()
    return closed_by(lambda: ch.queue_declare(q, **kw))


def assert_channel_406(broker, conn, q, text, **kw):
    """The declare gets channel.close 406 with `text`; the connection lives
    on and the stream was not made; another client still works."""
    assert declare_closes(conn, q, **kw) == ("channel", 406, q_text(text, q))
    assert conn.is_open
    ch = conn.channel()
    gone = closed_by(lambda: ch.queue_declare(q, passive=True))
    assert gone == ("channel", 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")
    assert_alive(broker)


@pytest.mark.parametrize(
    "kw,prop",
    [
        (dict(exclusive=True), "exclusive-owner"),
        (dict(auto_delete=True), "auto-delete"),
        (dict(durable=False), "non-durable"),
        (dict(exclusive=True, auto_delete=True, durable=False), "auto-delete"),
        (dict(auto_delete=True, durable=False), "auto-delete"),
        (dict(exclusive=True, durable=False), "exclusive-owner"),
    ],
    ids=["exclusive", "auto_delete", "non_durable", "all_three", "autodel_nondurable",
         "exclusive_nondurable"],
)
def test_declare_refused_property(broker, conn, names, kw, prop):
    q = names()
    assert_channel_406(broker, conn, q, PROP % prop, arguments=dict(S), **kw)


@pytest.mark.parametrize(
    "arg,value",
    [
        ("x-message-ttl", 1000),
        ("x-max-length", 10),
        ("x-dead-letter-exchange", "dlx"),
        ("x-dead-letter-routing-key", "dlx"),
        ("x-max-priority", 5),
        ("x-overflow", "reject-publish"),
        ("x-overflow", "drop-head"),
        ("x-single-active-consumer", True),
        ("x-expires", 10000),
        ("x-queue-mode", "lazy"),
        ("x-queue-master-locator", "client-local"),
        ("x-quorum-initial-group-size", 1),
        ("x-delivery-limit", 3),
    ],
)
def test_declare_refused_argument(broker, conn, names, arg, value):
    q = names()
    assert_channel_406(broker, conn, q, ARG % arg, arguments=stream_args(**{arg: value}))


def test_declare_arguments_checked_before_properties(broker, conn, names):
    q = names()
    assert_channel_406(broker, conn, q, ARG % "x-message-ttl",
                       arguments=stream_args(x_message_ttl=5), exclusive=True)
    q = names()
    assert_channel_406(broker, conn, q, ARG % "x-message-ttl",
                       arguments=stream_args(x_message_ttl=5, x_max_length=3))


@pytest.mark.parametrize(
    "args",
    [
        {"x-initial-cluster-size": 1},
        {"x-foo-bar": 3},
        {"x-stream-filter-size-bytes": 32},
        {"x-max-length-bytes": 0},
        {"x-max-length-bytes": 5000},
        {"x-stream-max-segment-size-bytes": 0},
        {"x-stream-max-segment-size-bytes": 1000},
        {"x-stream-max-segment-size-bytes": 3000000000},
    ]
    + [{"x-max-age": v} for v in ["1h", "30m", "7D", "1Y", "1M", "10s", "1s", "01h", "100000Y"]],
    ids=lambda a: "%s=%s" % next(iter(a.items())),
)
def test_declare_accepted(conn, names, args):
    q = names()
    ch = conn.channel()
    ok = ch.queue_declare(q, durable=True, arguments=dict(S) | args)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    # The same declare again is fine, and so is a passive one.
    ch.queue_declare(q, durable=True, arguments=dict(S) | args)
    ch.queue_declare(q, passive=True)


@pytest.mark.parametrize(
    "arg,value,reason",
    [
        ("x-max-age", "1X", "invalid_max_age"),
        ("x-max-age", "1x", "invalid_max_age"),
        ("x-max-age", "1d", "invalid_max_age"),
        ("x-max-age", "1H", "invalid_max_age"),
        ("x-max-age", "1hh", "invalid_max_age"),
        ("x-max-age", "1ms", "invalid_max_age"),
        ("x-max-age", "1.5h", "invalid_max_age"),
        ("x-max-age", "0s", "invalid_max_age"),
        ("x-max-age", 5, "{unacceptable_type,signedint}"),
        ("x-max-age", True, "{unacceptable_type,bool}"),
        ("x-max-length-bytes", -1, "{value_negative,-1}"),
        ("x-max-length-bytes", "abc", '"expected integer, got longstr"'),
        ("x-max-length-bytes", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
        ("x-max-length-bytes", True, '"expected integer, got bool"'),
        ("x-stream-max-segment-size-bytes", -1, "{value_negative,-1}"),
        ("x-stream-max-segment-size-bytes", "abc", '"expected integer, got longstr"'),
        ("x-initial-cluster-size", 0, "{value_zero,0}"),
        ("x-initial-cluster-size", "a", '"expected integer, got longstr"'),
    ],
)
def test_declare_bad_value(broker, conn, names, arg, value, reason):
    q = names()
    assert_channel_406(broker, conn, q, BADVAL % (arg, reason),
                       arguments=stream_args(**{arg: value}))


def test_declare_segment_size_above_max(broker, conn, names):
    q = names()
    assert_channel_406(
        broker, conn, q,
        "PRECONDITION_FAILED - Exceeded max value for x-stream-max-segment-size-bytes",
        arguments=stream_args(x_stream_max_segment_size_bytes=3000000001))


@pytest.mark.parametrize("value", ["abc", "", "h", "-1h", " 1h"])
def test_declare_max_age_without_digits(broker, connect, names, value):
    """RabbitMQ 3.10 crashes on an x-max-age that does not start with a
    digit: connection.close 541 INTERNAL_ERROR. The 406 it gives every other
    malformed x-max-age is accepted too."""
    conn = connect()
    q = names()
    got = declare_closes(conn, q, arguments=stream_args(x_max_age=value))
    assert got in (
        ("connection", 541, "INTERNAL_ERROR"),
        ("channel", 406, q_text(BADVAL % ("x-max-age", "invalid_max_age"), q)),
    ), got
    assert_alive(broker)


@pytest.mark.parametrize(
    "value,shown",
    [("bogus", "'bogus'"), ("Stream", "'Stream'")],
)
def test_declare_unknown_queue_type(broker, conn, names, value, shown):
    q = names()
    assert_channel_406(broker, conn, q,
                       BADVAL % ("x-queue-type", '"unsupported queue type %s"' % shown),
                       arguments={"x-queue-type": value})


def test_declare_queue_type_not_a_string(broker, conn, names):
    q = names()
    assert_channel_406(broker, conn, q,
                       BADVAL % ("x-queue-type", "{unacceptable_type,signedint}"),
                       arguments={"x-queue-type": 1})


INEQ = "PRECONDITION_FAILED - inequivalent arg '%s' for queue '<q>' in vhost '/': %s"


@pytest.mark.parametrize(
    "args,kw,code,text",
    [
        (stream_args(x_max_age="1h"), {}, None, None),
        (stream_args(x_max_age="2h"), {}, 406, INEQ % ("x-max-age", "received '2h' but current is '1h'")),
        (dict(S), {}, 406, INEQ % ("x-max-age", "received none but current is the value '1h' of type 'longstr'")),
        (None, {}, 406, INEQ % ("x-queue-type", "received none but current is the value 'stream' of type 'longstr'")),
        ({"x-queue-type": "classic"}, {}, 406, INEQ % ("x-queue-type", "received 'classic' but current is 'stream'")),
        ({"x-queue-type": "quorum"}, {}, 406, INEQ % ("x-queue-type", "received 'quorum' but current is 'stream'")),
        (stream_args(x_max_age="1h", x_max_length_bytes=100), {}, 406,
         INEQ % ("x-max-length-bytes", "received the value '100' of type 'signedint' but current is none")),
        (stream_args(x_max_age="1h", x_stream_max_segment_size_bytes=100), {}, 406,
         INEQ % ("x-stream-max-segment-size-bytes", "received the value '100' of type 'signedint' but current is none")),
        (stream_args(x_max_age="1h"), {"exclusive": True}, 405,
         "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '<q>' in vhost '/'. "
         "It could be originally declared on another connection or the exclusive property "
         "value does not match that of the original declaration."),
        (stream_args(x_max_age="1h"), {"durable": False}, 406,
         INEQ % ("durable", "received 'false' but current is 'true'")),
        (stream_args(x_max_age="1h"), {"auto_delete": True}, 406,
         INEQ % ("auto_delete", "received 'true' but current is 'false'")),
        # Not compared, and not validated on a redeclare.
        (stream_args(x_max_age="1h", x_message_ttl=5), {}, None, None),
    ],
    ids=["same", "other_max_age", "no_max_age", "no_args", "classic", "quorum",
         "added_max_length_bytes", "added_segment_size", "exclusive", "non_durable",
         "auto_delete", "added_ttl"],
)
def test_redeclare(broker, conn, names, args, kw, code, text):
    q = names()
    conn.channel().queue_declare(q, durable=True, arguments=stream_args(x_max_age="1h"))
    got = declare_closes(conn, q, arguments=args, **kw)
    if code is None:
        assert got is None
    else:
        assert got == ("channel", code, q_text(text, q))
        assert conn.is_open
    # The stream is still there, unchanged.
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments=stream_args(x_max_age="1h"))
    ch.queue_declare(q, passive=True)
    ch.queue_declare(q, passive=True, exclusive=True)
    assert_alive(broker)


def test_classic_queue_redeclared_as_stream(broker, conn, names):
    q = names()
    conn.channel().queue_declare(q, durable=True)
    got = declare_closes(conn, q, arguments=dict(S))
    assert got == ("channel", 406, q_text(
        INEQ % ("x-queue-type", "received the value 'stream' of type 'longstr' but current is none"), q))
    assert_alive(broker)


def test_declare_ok_counts(broker, connect, names):
    """declare-ok: message_count reaches the number of messages (RabbitMQ
    reports it from stats collected every few seconds, so poll);
    consumer_count is 0 for a stream even with consumers attached."""
    conn = connect()
    q = names()
    ch = conn.channel()
    ok = ch.queue_declare(q, durable=True, arguments=dict(S))
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
    ch.confirm_delivery()
    for i in range(7):
        ch.basic_publish("", q, b"m%d" % i)
    assert eventually(lambda: message_count(broker, q)[0] == 7, timeout=15), message_count(broker, q)
    other = connect()
    for prefetch in (10, 1):
        c = other.channel()
        c.basic_qos(prefetch_count=prefetch)
        c.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})
    other.process_data_events(0.5)
    assert message_count(broker, q) == (7, 0)
    ok = conn.channel().queue_declare(q, durable=True, arguments=dict(S))
    assert (ok.method.message_count, ok.method.consumer_count) == (7, 0)
