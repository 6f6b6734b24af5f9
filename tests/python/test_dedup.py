"""Message deduplication as the rabbitmq-message-deduplication plugin does
it: the exchange type ``x-message-deduplication`` (a message whose
``x-deduplication-header`` value it saw within ``x-cache-ttl`` is not
routed, still confirmed), and the queue argument
``x-message-deduplication: true`` (a message is not enqueued while a message
with the same value is in the queue).

The plugin is not part of Debian's RabbitMQ 3.10: these expectations come
from the plugin's README and its test suites (queue_SUITE.erl,
exchange_SUITE.erl), and run against warren only.
"""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import drain, message_count, wait_count

HEADER = "x-deduplication-header"


def props(key=None, ttl=None, expiration=None):
    headers = {}
    if key is not None:
        headers[HEADER] = key
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    return pika.BasicProperties(headers=headers or None, expiration=expiration)


def dedup_exchange(ch, names, **args):
    x = names.exchange("dedup")
    ch.exchange_declare(x, exchange_type="x-message-deduplication", arguments=args)
    return x


def bound_queue(ch, names, exchange, routing_key=""):
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, exchange, routing_key=routing_key)
    return q


def dedup_queue(ch, names, **more):
    q = names.queue("dq")
    args = {"x-message-deduplication": True}
    args.update(more)
    ch.queue_declare(q, arguments=args)
    return q


def test_dedup_exchange_drops_a_repeated_value_and_forgets_it_after_its_ttl(ch, names):
    x = dedup_exchange(ch, names, **{"x-cache-size": 100, "x-cache-ttl": 400})
    q = bound_queue(ch, names, x, "ignored")
    for key in ["k1", "k1", "k2", "k1"]:
        ch.basic_publish(x, "any.key", b"m", props(key))
    # No header: never a duplicate.
    ch.basic_publish(x, "any.key", b"no key")
    ch.basic_publish(x, "any.key", b"no key")
    assert wait_count(ch, q, 4) == 4
    time.sleep(0.6)
    # The argument's TTL ran out; a message's x-cache-ttl header wins over
    # the argument.
    ch.basic_publish(x, "", b"again", props("k1", ttl=60000))
    ch.basic_publish(x, "", b"again", props("k2"))
    time.sleep(0.6)
    ch.basic_publish(x, "", b"still a duplicate", props("k1"))
    ch.basic_publish(x, "", b"new again", props("k2"))
    # Integer values are keys too.
    ch.basic_publish(x, "", b"int", props(42))
    ch.basic_publish(x, "", b"int", props(42))
    assert wait_count(ch, q, 8) == 8
    assert drain(ch, q)[4:] == [b"again", b"again", b"new again", b"int"]


def test_dedup_exchange_duplicates_are_still_confirmed(ch, names):
    x = dedup_exchange(ch, names, **{"x-cache-size": 10})
    q = bound_queue(ch, names, x)
    ch.confirm_delivery()
    for _ in range(3):
        # A nack would raise NackError.
        ch.basic_publish(x, "", b"m", props("same"))
    assert message_count(ch, q) == 1


def test_dedup_exchange_cache_size_lets_the_oldest_go(ch, names):
    x = dedup_exchange(ch, names, **{"x-cache-size": 2})
    q = bound_queue(ch, names, x)
    ch.confirm_delivery()
    for key in ["a", "b", "c", "c", "a"]:
        ch.basic_publish(x, "", key.encode(), props(key))
    assert drain(ch, q) == [b"a", b"b", b"c", b"a"]


@pytest.mark.parametrize(
    "args,text",
    [
        (
            {},
            "'x-cache-size' must be an integer greater than 0",
        ),
        (
            {"x-cache-size": 0},
            "'x-cache-size' must be an integer greater than 0",
        ),
        (
            {"x-cache-size": 5, "x-cache-ttl": -1},
            "'x-cache-ttl' must be an integer greater than 0",
        ),
        (
            {"x-cache-size": 5, "x-cache-persistence": "tape"},
            "'x-cache-persistence' must be either 'disk' or 'memory'",
        ),
    ],
)
def test_dedup_exchange_bad_arguments_are_406_and_others_go_on(connect, names, args, text):
    conn = connect()
    ch = conn.channel()
    x = names.exchange("bad")
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.exchange_declare(x, exchange_type="x-message-deduplication", arguments=args)
    assert err.value.reply_code == 406
    assert text in err.value.reply_text, err.value.reply_text
    # The connection and another client still work.
    other = connect().channel()
    good = dedup_exchange(other, names, **{"x-cache-size": "5"})
    q = bound_queue(other, names, good)
    other.basic_publish(good, "", b"m", props("k"))
    assert wait_count(other, q, 1) == 1
    assert conn.channel().is_open


def test_an_exchange_bound_to_a_dedup_exchange_routes_through_its_check(ch, names):
    x = dedup_exchange(ch, names, **{"x-cache-size": 10})
    q = bound_queue(ch, names, x)
    src = names.exchange("src")
    ch.exchange_declare(src, exchange_type="topic")
    ch.exchange_bind(x, src, routing_key="#")
    ch.confirm_delivery()
    ch.basic_publish(src, "a.b", b"1", props("k"))
    ch.basic_publish(src, "a.c", b"2", props("k"))
    ch.basic_publish(x, "", b"3", props("k"))
    ch.basic_publish(src, "a.b", b"4", props("other"))
    ch.basic_publish(src, "a.b", b"5")
    assert drain(ch, q) == [b"1", b"4", b"5"]


def test_dedup_queue_holds_a_value_while_its_message_is_queued(ch, names):
    q = dedup_queue(ch, names)
    plain = names.queue("plain")
    ch.queue_declare(plain)
    x = names.exchange("fan")
    ch.exchange_declare(x, exchange_type="fanout")
    ch.queue_bind(q, x)
    ch.queue_bind(plain, x)
    ch.confirm_delivery()
    ch.basic_publish(x, "", b"1", props("k"))
    ch.basic_publish(x, "", b"2", props("k"))
    ch.basic_publish(x, "", b"no key")
    ch.basic_publish(x, "", b"no key")
    assert message_count(ch, q) == 3
    assert message_count(ch, plain) == 4, "other queues get the duplicate"
    ch.queue_purge(plain)

    # Delivered, not yet acknowledged: still held; acknowledged: free.
    ch.queue_purge(q)
    ch.basic_publish("", q, b"a", props("k"))
    method, _, body = ch.basic_get(q)
    assert body == b"a"
    ch.basic_publish("", q, b"b", props("k"))
    assert message_count(ch, q) == 0
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", q, b"c", props("k"))
    assert drain(ch, q) == [b"c"]


def test_dedup_queue_accepts_a_value_again_after_purge_and_expiry(ch, names):
    q = dedup_queue(ch, names)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1", props("k"))
    ch.basic_publish("", q, b"2", props("k"))
    assert message_count(ch, q) == 1
    assert ch.queue_purge(q).method.message_count == 1
    ch.basic_publish("", q, b"3", props("k"))
    assert drain(ch, q) == [b"3"]

    # The queue's x-message-ttl (the plugin's test), and a message's own
    # expiration.
    t = dedup_queue(ch, names, **{"x-message-ttl": 300})
    ch.basic_publish("", t, b"1", props("k"))
    ch.basic_publish("", t, b"2", props("k"))
    assert message_count(ch, t) == 1
    time.sleep(0.5)
    ch.basic_publish("", t, b"3", props("k"))
    assert drain(ch, t) == [b"3"]
    e = dedup_queue(ch, names)
    ch.basic_publish("", e, b"1", props("k", expiration="300"))
    ch.basic_publish("", e, b"2", props("k"))
    time.sleep(0.5)
    ch.basic_publish("", e, b"3", props("k"))
    assert drain(ch, e) == [b"3"]


def test_dedup_queue_rejected_and_dropped_messages_free_their_value(ch, names):
    q = dedup_queue(ch, names)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1", props("k"))
    method, _, _ = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=True)
    ch.basic_publish("", q, b"2", props("k"))
    assert message_count(ch, q) == 1, "requeued: still held"
    method, _, _ = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=False)
    ch.basic_publish("", q, b"3", props("k"))
    assert drain(ch, q) == [b"3"]

    # x-max-length 1, drop-head (the plugin's queue_overflow test).
    m = dedup_queue(ch, names, **{"x-max-length": 1})
    ch.basic_publish("", m, b"this", props("this"))
    ch.basic_publish("", m, b"that", props("that"))
    ch.basic_publish("", m, b"this again", props("this"))
    assert drain(ch, m) == [b"this again"]
