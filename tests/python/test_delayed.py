"""The delayed message plugin's exchange type, ``x-delayed-message``, over
a real socket with pika.

RabbitMQ 3.10 from Debian does not ship rabbitmq-delayed-message-exchange,
so these tests encode the plugin's behaviour as its source and issues
describe it (see README) and run against warren only: a message with a
positive ``x-delay`` arrives once the delay has passed (within 50 ms), in
delay order, with ``x-delay`` negated; the plugin's codes for bad input,
after which other clients carry on.
"""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conftest import Collector, new_connection, pump_until

TOLERANCE_S = 0.050


def delayed_exchange(ch, names, kind="direct", durable=False):
    x = names.exchange("delayed")
    ch.exchange_declare(
        x,
        exchange_type="x-delayed-message",
        durable=durable,
        arguments={"x-delayed-type": kind},
    )
    return x


def props(delay):
    headers = {} if delay is None else {"x-delay": delay}
    return pika.BasicProperties(headers=headers)


def publish_timed(ch, x, key, body, delay):
    """Publish with a confirm: the broker took the message between the two
    times returned, so its due time lies between them plus the delay."""
    before = time.monotonic()
    ch.basic_publish(x, key, body, props(delay))
    return before, time.monotonic()


def test_delayed_messages_arrive_after_their_delay_in_delay_order(connect, names):
    pub = connect()
    pch = pub.channel()
    pch.confirm_delivery()
    x = delayed_exchange(pch, names)
    q = names.queue()
    pch.queue_declare(q)
    pch.queue_bind(q, x, routing_key="k")
    conn = connect()
    ch = conn.channel()
    arrived = {}

    def on_message(channel, method, properties, body):
        arrived[body] = (time.monotonic(), properties.headers)

    ch.basic_consume(q, on_message, auto_ack=True)
    delays = [900, 300, 600, 450, None, -100]
    sent = {}
    for d in delays:
        body = ("d%s" % d).encode()
        sent[body] = (publish_timed(pch, x, "k", body, d), d)
    assert pump_until(conn, lambda: len(arrived) == len(delays), timeout=5)
    order = [b for b, _ in sorted(arrived.items(), key=lambda kv: kv[1][0])]
    assert order[:2] in ([b"dNone", b"d-100"], [b"d-100", b"dNone"])
    assert order[2:] == [b"d300", b"d450", b"d600", b"d900"]
    for body, ((before, after), d) in sent.items():
        if d is None or d <= 0:
            continue
        at = arrived[body][0]
        assert at >= before + d / 1000.0 - 0.001, (body, at - before)
        assert at <= after + d / 1000.0 + TOLERANCE_S, (body, at - after - d / 1000.0)
        assert arrived[body][1]["x-delay"] == -d


def test_routes_as_a_topic_exchange(conn, ch, names):
    x = delayed_exchange(ch, names, kind="topic")
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="orders.*")
    got = Collector()
    ch.basic_consume(q, got, auto_ack=True)
    ch.basic_publish(x, "orders.new", b"match", props(200))
    ch.basic_publish(x, "invoices.new", b"no match", props(100))
    assert pump_until(conn, lambda: len(got) >= 1, timeout=3)
    pump_until(conn, lambda: False, timeout=0.3)
    assert got.bodies == [b"match"]


def test_many_delays_come_out_in_due_order(connect, names):
    pub = connect()
    pch = pub.channel()
    pch.confirm_delivery()
    x = delayed_exchange(pch, names, kind="fanout")
    q = names.queue()
    pch.queue_declare(q)
    pch.queue_bind(q, x)
    conn = connect()
    ch = conn.channel()
    got = Collector()
    ch.basic_consume(q, got, auto_ack=True)
    delays = [(i * 37) % 500 + 10 for i in range(200)]
    due = {}
    for i, d in enumerate(delays):
        body = ("%d:%d" % (d, i)).encode()
        before, after = publish_timed(pch, x, "", body, d)
        due[body] = (before + d / 1000.0, after + d / 1000.0)
    assert pump_until(conn, lambda: len(got) == len(delays), timeout=5)
    # Due order: a message comes after one whose due time was surely
    # earlier (the broker's publish time is between our send and its
    # confirm; its clock is in whole milliseconds).
    for i, b in enumerate(got.bodies):
        for a in got.bodies[i + 1 :]:
            assert due[a][1] + 0.001 >= due[b][0], (b, a)


def test_missing_delayed_type_is_406_and_the_connection_stays(conn, names):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.exchange_declare(names.exchange("bad"), exchange_type="x-delayed-message")
    assert err.value.reply_code == 406
    assert err.value.reply_text == (
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
    )
    ch = conn.channel()
    x = delayed_exchange(ch, names)
    ch.exchange_declare(x, passive=True)


def test_unknown_delayed_type_closes_the_connection_with_503(names):
    c = new_connection()
    try:
        ch = c.channel()
        with pytest.raises(ConnectionClosedByBroker) as err:
            ch.exchange_declare(
                names.exchange("bad"),
                exchange_type="x-delayed-message",
                arguments={"x-delayed-type": "nonesuch"},
            )
        assert err.value.reply_code == 503
        assert err.value.reply_text == "COMMAND_INVALID - unknown exchange type 'nonesuch'"
    finally:
        if c.is_open:
            c.close()
    other = new_connection()
    try:
        other.channel().queue_declare("", exclusive=True)
    finally:
        other.close()


def test_non_numeric_delay_closes_the_connection_with_541_others_carry_on(names):
    setup = new_connection()
    sch = setup.channel()
    x = delayed_exchange(sch, names)
    q = names.queue()
    sch.queue_declare(q)
    sch.queue_bind(q, x, routing_key="k")
    setup.close()

    bad = new_connection()
    try:
        ch = bad.channel()
        ch.basic_publish(x, "k", b"bad", props("soon"))
        with pytest.raises(ConnectionClosedByBroker) as err:
            ch.queue_declare(q, passive=True)
        assert err.value.reply_code == 541
        assert err.value.reply_text == "INTERNAL_ERROR"
    finally:
        if bad.is_open:
            bad.close()

    good = new_connection()
    try:
        ch = good.channel()
        got = Collector()
        ch.basic_consume(q, got, auto_ack=True)
        ch.basic_publish(x, "k", b"fine", props("150"))
        assert pump_until(good, lambda: len(got) == 1, timeout=3)
        assert got.bodies == [b"fine"]
    finally:
        good.close()


def test_mandatory_is_returned_at_once_and_still_delivered(conn, ch, names):
    x = delayed_exchange(ch, names)
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="k")
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a[3]))
    got = Collector()
    ch.basic_consume(q, got, auto_ack=True)
    ch.basic_publish(x, "k", b"m", props(300), mandatory=True)
    assert pump_until(conn, lambda: returned, timeout=0.25)
    assert got.bodies == []
    assert pump_until(conn, lambda: len(got) == 1, timeout=3)
    assert returned == [b"m"]
