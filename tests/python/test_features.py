"""Queue features beyond the core protocol: message TTL (per queue and per
message), queue expiry (x-expires), length limits and overflow behaviour,
dead-lettering (x-death history, x-first-death-*, cycle detection), priority
queues, single active consumer, consumer priorities, alternate exchanges,
direct reply-to, and the validation of queue arguments.

Every expectation here was taken from RabbitMQ 3.10 (reply codes, reply
texts, header shapes); the suite is then run against warren.  TTLs are kept
short (tens to a few hundred milliseconds) so the whole file stays fast.
"""

import contextlib
import datetime
import time

import pika
import pika.compat
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

from conftest import (
    QUIET_S,
    WAIT_S,
    Collector,
    eventually,
    message_count,
    pump,
    pump_until,
    queue_exists,
    wait_count,
)

V = "'/'"  # the default vhost as RabbitMQ quotes it in reply texts


@contextlib.contextmanager
def channel_closed(code, text):
    with pytest.raises(ChannelClosedByBroker) as err:
        yield err
    assert (err.value.reply_code, err.value.reply_text) == (code, text)


def sync_op(ch):
    """A synchronous round trip on `ch`: everything published before it on
    the channel has been routed, and an asynchronous channel close caused
    by an earlier publish surfaces here."""
    ch.queue_declare(queue="", exclusive=True)


def get(ch, queue, timeout=WAIT_S):
    """basic.get (auto-ack) until a message arrives or `timeout`; returns
    (method, properties, body) or (None, None, None)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None or time.monotonic() >= deadline:
            return method, props, body
        time.sleep(0.01)


def declare_dlx(ch, names, kind="fanout", key=""):
    """A dead-letter exchange with one queue bound to it; returns (dlx, dlq)."""
    dlx = names.exchange("dlx")
    dlq = names.queue("dlq")
    ch.exchange_declare(dlx, exchange_type=kind, auto_delete=False)
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, routing_key=key)
    return dlx, dlq


def recent(ts):
    """An x-death `time` (an AMQP timestamp, which pika decodes to a UTC
    datetime) close to now."""
    assert isinstance(ts, datetime.datetime), ts
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    return abs((now - ts).total_seconds()) < 60


def assert_death(entry, reason, queue, exchange, routing_keys, count=1, **extra):
    """One x-death table has exactly RabbitMQ's keys and values."""
    want_keys = {"count", "reason", "queue", "time", "exchange", "routing-keys"}
    want_keys |= set(k.replace("_", "-") for k in extra)
    assert set(entry) == want_keys, entry
    assert entry["count"] == count
    # a 64-bit 'l' field (pika decodes only that one into its `long`)
    assert isinstance(entry["count"], pika.compat.long)
    assert entry["reason"] == reason
    assert entry["queue"] == queue
    assert entry["exchange"] == exchange
    assert entry["routing-keys"] == routing_keys
    assert recent(entry["time"])
    for k, v in extra.items():
        assert entry[k.replace("_", "-")] == v


# ===========================================================================
# per-queue message TTL
# ===========================================================================


def test_queue_ttl_expired_messages_are_removed_and_never_delivered(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 200})
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i)
    assert message_count(ch, q) == 3
    # removed promptly with nobody consuming: the ready count drops to 0
    assert wait_count(ch, q, 0, timeout=2) == 0
    got = Collector(ack=True)
    ch.basic_consume(q, got)
    pump(conn, QUIET_S)
    assert got.bodies == []
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_queue_ttl_messages_live_until_they_expire(conn, names):
    ch = conn.channel()
    q = names.queue("ttl-live")
    ch.queue_declare(q, arguments={"x-message-ttl": 5000})
    ch.basic_publish("", q, b"fresh")
    method, _, body = get(ch, q)
    assert body == b"fresh"


def test_queue_ttl_expiry_dead_letters(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("ttl-dlx")
    ch.queue_declare(q, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": dlx})
    props = pika.BasicProperties(
        content_type="text/plain", message_id="id-1", headers={"custom": "kept"}
    )
    ch.basic_publish("", q, b"expire me", props)
    method, p, body = get(ch, dlq)
    assert body == b"expire me"
    # republished to the DLX with the original routing key
    assert (method.exchange, method.routing_key) == (dlx, q)
    assert (p.content_type, p.message_id) == ("text/plain", "id-1")
    h = p.headers
    assert h["custom"] == "kept"
    assert h["x-first-death-reason"] == "expired"
    assert h["x-first-death-queue"] == q
    assert h["x-first-death-exchange"] == ""
    assert len(h["x-death"]) == 1
    assert_death(h["x-death"][0], "expired", q, "", [q])
    assert p.expiration is None
    assert message_count(ch, q) == 0


# ===========================================================================
# per-message TTL (expiration property)
# ===========================================================================


def test_message_ttl_expired_message_removed(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("msg-ttl")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", q, b"forever")
    assert wait_count(ch, q, 1, timeout=2) == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"forever"
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_message_ttl_only_removed_at_the_head(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("msg-ttl-head")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"first")
    ch.basic_publish("", q, b"second", pika.BasicProperties(expiration="50"))
    time.sleep(0.2)
    # 'second' has expired, but it is not at the head: still counted
    assert message_count(ch, q) == 2
    assert ch.basic_get(q, auto_ack=True)[2] == b"first"
    # now it is the head, and it is never delivered
    assert ch.basic_get(q, auto_ack=True)[0] is None
    assert message_count(ch, q) == 0


def test_message_ttl_shorter_of_queue_and_message_ttl_wins(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("ttl-min")
    ch.queue_declare(q, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    assert wait_count(ch, q, 0, timeout=2) == 0


def test_message_ttl_dead_lettered_with_original_expiration(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("msg-ttl-dlx")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="60"))
    method, p, body = get(ch, dlq)
    assert body == b"x"
    # the expiration property is removed, and recorded in x-death
    assert p.expiration is None
    assert len(p.headers["x-death"]) == 1
    assert_death(p.headers["x-death"][0], "expired", q, "", [q], original_expiration="60")


def test_message_ttl_zero_delivered_only_to_a_waiting_consumer(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("ttl0")
    ch.queue_declare(q, arguments={"x-message-ttl": 0})
    # nobody waiting: gone at once
    ch.basic_publish("", q, b"nobody")
    assert ch.basic_get(q, auto_ack=True)[0] is None
    assert message_count(ch, q) == 0
    # a consumer waiting: delivered
    got = Collector(ack=True)
    ch.basic_consume(q, got)
    ch.basic_publish("", q, b"waiting")
    assert pump_until(conn, lambda: len(got) == 1)
    assert got.bodies == [b"waiting"]


def test_message_expiration_zero_delivered_only_to_a_waiting_consumer(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("exp0")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"nobody", pika.BasicProperties(expiration="0"))
    assert ch.basic_get(q, auto_ack=True)[0] is None
    got = Collector(ack=True)
    ch.basic_consume(q, got)
    ch.basic_publish("", q, b"waiting", pika.BasicProperties(expiration="0"))
    assert pump_until(conn, lambda: len(got) == 1)
    assert got.bodies == [b"waiting"]


@pytest.mark.parametrize(
    "expiration,detail",
    [
        ("abc", "no_integer"),
        ("", "no_integer"),
        (" 5", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("1.5", '{leftover_string,".5"}'),
        ("315360000001", "{value_too_large,315360000001}"),
    ],
)
def test_invalid_expiration_406(conn, names, expiration, detail):
    ch = conn.channel()
    q = names.queue("bad-exp")
    ch.queue_declare(q)
    with channel_closed(
        406, "PRECONDITION_FAILED - invalid expiration '%s': %s" % (expiration, detail)
    ):
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
        sync_op(ch)
    assert message_count(conn.channel(), q) == 0


# ===========================================================================
# queue expiry (x-expires)
# ===========================================================================


def test_x_expires_deletes_unused_queue(conn, names):
    ch = conn.channel()
    q = names.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 100})
    ch.basic_publish("", q, b"doomed")
    # (a passive declare renews the lease, as in RabbitMQ: look rarely)
    time.sleep(0.3)
    assert eventually(lambda: not queue_exists(q), timeout=3, interval=0.25)
    with channel_closed(404, "NOT_FOUND - no queue '%s' in vhost %s" % (q, V)):
        conn.channel().queue_declare(q, passive=True)


def test_x_expires_use_renews_the_lease(conn, names):
    ch = conn.channel()
    q = names.queue("expires-renew")
    ch.queue_declare(q, arguments={"x-expires": 500})
    # basic.get and passive declares count as use
    for _ in range(8):
        time.sleep(0.08)
        ch.basic_get(q, auto_ack=True)
    for _ in range(4):
        time.sleep(0.08)
        ch.queue_declare(q, passive=True)
    assert queue_exists(q)


def test_x_expires_consumer_keeps_queue_alive(conn, names):
    ch = conn.channel()
    q = names.queue("expires-consumed")
    ch.queue_declare(q, arguments={"x-expires": 100})
    tag = ch.basic_consume(q, Collector(ack=True))
    pump(conn, 0.4)
    assert consumer_alive(ch, q)
    ch.basic_cancel(tag)
    time.sleep(0.3)
    assert eventually(lambda: not queue_exists(q), timeout=3, interval=0.25)


def consumer_alive(ch, q):
    return ch.queue_declare(q, passive=True).method.consumer_count == 1


# ===========================================================================
# length limits
# ===========================================================================


def test_max_length_drop_head_dead_letters_with_reason_maxlen(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("maxlen")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    for b in (b"1", b"2", b"3", b"4"):
        ch.basic_publish("", q, b)
    assert message_count(ch, q) == 2
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"3", b"4"]
    m1, p1, b1 = get(ch, dlq)
    m2, p2, b2 = get(ch, dlq)
    assert (b1, b2) == (b"1", b"2")
    for p in (p1, p2):
        assert p.headers["x-first-death-reason"] == "maxlen"
        assert len(p.headers["x-death"]) == 1
        assert_death(p.headers["x-death"][0], "maxlen", q, "", [q])


def test_max_length_zero_keeps_nothing(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("maxlen0")
    ch.queue_declare(q, arguments={"x-max-length": 0})
    ch.basic_publish("", q, b"x")
    assert message_count(ch, q) == 0


def test_max_length_reject_publish_nacks_and_does_not_dead_letter(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("reject-pub")
    ch.queue_declare(
        q,
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": dlx,
        },
    )
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused")
    assert message_count(ch, q) == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"kept"
    # room again: accepted
    ch.basic_publish("", q, b"later")
    assert message_count(ch, q) == 1
    time.sleep(QUIET_S)
    assert message_count(ch, dlq) == 0


def test_max_length_reject_publish_dlx_nacks_and_dead_letters(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("reject-dlx")
    ch.queue_declare(
        q,
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": dlx,
        },
    )
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused")
    assert message_count(ch, q) == 1
    method, p, body = get(ch, dlq)
    assert body == b"refused"
    assert len(p.headers["x-death"]) == 1
    assert_death(p.headers["x-death"][0], "maxlen", q, "", [q])
    assert ch.basic_get(q, auto_ack=True)[2] == b"kept"


def test_max_length_bytes_drop_head(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    ch.basic_publish("", q, b"aaaaaa")
    ch.basic_publish("", q, b"bbbbbb")
    ch.basic_publish("", q, b"cccc")
    # 6 + 6 > 10: 'aaaaaa' dropped; 6 + 4 fits
    assert message_count(ch, q) == 2
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"bbbbbb", b"cccc"]


def test_max_length_bytes_reject_publish(conn, names):
    ch = conn.channel()
    q = names.queue("maxbytes-rej")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"aaaaaa")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"bbbbbb")
    ch.basic_publish("", q, b"cccc")
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"aaaaaa", b"cccc"]


# ===========================================================================
# dead-lettering
# ===========================================================================


@pytest.mark.parametrize("how", ["reject", "nack"])
def test_dead_letter_on_reject_and_nack_without_requeue(conn, names, how):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names, kind="direct", key="orig-key")
    src = names.exchange("src")
    ch.exchange_declare(src, exchange_type="direct")
    q = names.queue("rejected")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(q, src, routing_key="orig-key")
    ch.basic_publish(src, "orig-key", b"bad", pika.BasicProperties(headers={"a": 1}))
    method, _, body = get_noack(ch, q)
    assert body == b"bad"
    if how == "reject":
        ch.basic_reject(method.delivery_tag, requeue=False)
    else:
        ch.basic_nack(method.delivery_tag, requeue=False)
    m, p, body = get(ch, dlq)
    assert body == b"bad"
    assert (m.exchange, m.routing_key, m.redelivered) == (dlx, "orig-key", False)
    h = p.headers
    assert h["a"] == 1
    assert (h["x-first-death-reason"], h["x-first-death-queue"], h["x-first-death-exchange"]) == (
        "rejected",
        q,
        src,
    )
    assert len(h["x-death"]) == 1
    assert_death(h["x-death"][0], "rejected", q, src, ["orig-key"])
    assert message_count(ch, q) == 0


def get_noack(ch, queue):
    """basic.get without auto-ack, waiting for a message."""
    deadline = time.monotonic() + WAIT_S
    while True:
        r = ch.basic_get(queue, auto_ack=False)
        if r[0] is not None or time.monotonic() >= deadline:
            return r
        time.sleep(0.01)


def test_requeue_true_does_not_dead_letter(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names)
    q = names.queue("requeued")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"again")
    method, _, _ = get_noack(ch, q)
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = get_noack(ch, q)
    assert (body, method.redelivered, props.headers) == (b"again", True, None)
    ch.basic_ack(method.delivery_tag)
    assert message_count(ch, dlq) == 0


def test_dead_letter_routing_key_replaces_routing_key(conn, names):
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, names, kind="direct", key="dead")
    q = names.queue("dlrk")
    ch.queue_declare(
        q,
        arguments={
            "x-dead-letter-exchange": dlx,
            "x-dead-letter-routing-key": "dead",
            "x-message-ttl": 30,
        },
    )
    ch.basic_publish("", q, b"x")
    m, p, body = get(ch, dlq)
    assert body == b"x"
    assert (m.exchange, m.routing_key) == (dlx, "dead")
    # x-death keeps the original routing keys
    assert_death(p.headers["x-death"][0], "expired", q, "", [q])


def test_dead_letter_to_default_exchange(conn, names):
    ch = conn.channel()
    target = names.queue("dl-target")
    ch.queue_declare(target)
    q = names.queue("dl-default")
    ch.queue_declare(
        q,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
            "x-message-ttl": 30,
        },
    )
    ch.basic_publish("", q, b"x")
    m, p, body = get(ch, target)
    assert body == b"x"
    assert (m.exchange, m.routing_key) == ("", target)


def test_dead_letter_history_across_two_queues(conn, names):
    """Expired from A into B, rejected from B into C: x-death lists both,
    most recent first; x-first-death-* keep the first."""
    ch = conn.channel()
    c = names.queue("dl-c")
    b = names.queue("dl-b")
    a = names.queue("dl-a")
    ch.queue_declare(c)
    ch.queue_declare(b, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": c})
    ch.queue_declare(
        a,
        arguments={
            "x-message-ttl": 30,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": b,
        },
    )
    ch.basic_publish("", a, b"hop", pika.BasicProperties(expiration="10000"))
    method, props, _ = get_noack(ch, b)
    assert props.expiration is None
    ch.basic_reject(method.delivery_tag, requeue=False)
    m, p, body = get(ch, c)
    assert body == b"hop"
    h = p.headers
    assert [d["queue"] for d in h["x-death"]] == [b, a]
    assert_death(h["x-death"][0], "rejected", b, "", [b])
    assert_death(h["x-death"][1], "expired", a, "", [a], original_expiration="10000")
    assert (h["x-first-death-reason"], h["x-first-death-queue"], h["x-first-death-exchange"]) == (
        "expired",
        a,
        "",
    )


def test_dead_letter_count_increments_and_rejection_cycle_is_not_broken(conn, names):
    """A queue dead-lettering to itself: with a rejection in the cycle the
    message keeps coming back, and the x-death entry for (queue, reason)
    counts the deaths instead of growing the list."""
    ch = conn.channel()
    q = names.queue("reject-cycle")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    ch.basic_publish("", q, b"boomerang")
    for n in (1, 2, 3):
        method, props, body = get_noack(ch, q)
        assert body == b"boomerang"
        if n > 1:
            assert len(props.headers["x-death"]) == 1
            assert_death(props.headers["x-death"][0], "rejected", q, "", [q], count=n - 1)
        ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get_noack(ch, q)
    assert_death(props.headers["x-death"][0], "rejected", q, "", [q], count=3)
    assert props.headers["x-first-death-reason"] == "rejected"
    ch.basic_ack(method.delivery_tag)


def test_dead_letter_expiry_cycle_is_broken(conn, names):
    """A queue whose expired messages dead-letter back to itself: the second
    time round the cycle is detected and the message dropped."""
    ch = conn.channel()
    q = names.queue("expiry-cycle")
    ch.queue_declare(
        q,
        arguments={
            "x-message-ttl": 30,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": q,
        },
    )
    ch.basic_publish("", q, b"loop")
    time.sleep(0.3)
    assert message_count(ch, q) == 0
    time.sleep(0.1)
    assert message_count(ch, q) == 0
    assert ch.basic_get(q, auto_ack=True)[0] is None


def test_dead_letter_expiry_cycle_through_two_queues_is_broken(conn, names):
    """A expires into B, B expires back into A: delivered once to B (with
    A's death recorded), then dropped when it would re-enter A."""
    ch = conn.channel()
    dlx = names.exchange("cyc")
    ch.exchange_declare(dlx, exchange_type="direct")
    a = names.queue("cyc-a")
    b = names.queue("cyc-b")
    ch.queue_declare(
        a, arguments={"x-message-ttl": 30, "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "to-b"}
    )
    ch.queue_declare(b, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "to-a"})
    ch.queue_bind(a, dlx, "to-a")
    ch.queue_bind(b, dlx, "to-b")
    ch.basic_publish("", a, b"loop")
    assert wait_count(ch, b, 1, timeout=2) == 1
    # now let it expire from B too: per-queue TTL is on A only, so reject it
    # and watch it come back to A (rejections are not cycles) ...
    method, props, _ = get_noack(ch, b)
    assert [d["reason"] for d in props.headers["x-death"]] == ["expired"]
    ch.basic_reject(method.delivery_tag, requeue=False)
    # ... where it expires again: A -> B is no cycle as the rejection from B
    # is in between, so it is delivered to B once more, with A counted twice
    assert wait_count(ch, b, 1, timeout=2) == 1
    method, props, _ = get_noack(ch, b)
    deaths = props.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        (a, "expired", 2),
        (b, "rejected", 1),
    ]
    ch.basic_ack(method.delivery_tag)


def test_dead_letter_to_missing_exchange_drops(conn, names):
    ch = conn.channel()
    q = names.queue("dlx-missing")
    ch.queue_declare(
        q, arguments={"x-message-ttl": 30, "x-dead-letter-exchange": names.unique("nope")}
    )
    ch.basic_publish("", q, b"x")
    assert wait_count(ch, q, 0, timeout=2) == 0


# ===========================================================================
# priority queues
# ===========================================================================


def test_priority_queue_orders_by_priority_then_fifo(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    msgs = [
        (b"a", 1),
        (b"b", 5),
        (b"c", None),
        (b"d", 5),
        (b"e", 10),
        (b"f", 200),  # above the maximum: treated as 10
        (b"g", 1),
        (b"h", 0),
        (b"i", 10),
    ]
    for body, prio in msgs:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert message_count(ch, q) == len(msgs)
    out = [ch.basic_get(q, auto_ack=True)[2] for _ in msgs]
    assert out == [b"e", b"f", b"i", b"b", b"d", b"a", b"g", b"c", b"h"]


def test_priority_queue_consumer_gets_highest_first(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("prio-consume")
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    for body, prio in [(b"low", 1), (b"high", 5), (b"mid", 3)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    got = Collector(ack=True)
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q, got)
    assert pump_until(conn, lambda: len(got) == 3)
    assert got.bodies == [b"high", b"mid", b"low"]
    # the priority property is delivered unchanged
    assert [d.properties.priority for d in got.deliveries] == [5, 3, 1]


def test_priority_ignored_without_max_priority(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("no-prio")
    ch.queue_declare(q)
    for body, prio in [(b"1", 1), (b"2", 9), (b"3", 5)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)] == [b"1", b"2", b"3"]


def test_priority_requeued_message_keeps_its_place(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()  # each publish has reached its queue on return
    q = names.queue("prio-requeue")
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    for body, prio in [(b"hi", 9), (b"lo", 1)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    method, _, body = get_noack(ch, q)
    assert body == b"hi"
    ch.basic_publish("", q, b"mid", pika.BasicProperties(priority=5))
    ch.basic_nack(method.delivery_tag, requeue=True)
    out = [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)]
    assert out == [b"hi", b"mid", b"lo"]


# ===========================================================================
# single active consumer
# ===========================================================================


def test_single_active_consumer(connect, names):
    c1, c2 = connect(), connect()
    ch1, ch2 = c1.channel(), c2.channel()
    q = names.queue("sac")
    ch1.queue_declare(q, arguments={"x-single-active-consumer": True})
    first, second = Collector(ack=True), Collector(ack=True)
    tag1 = ch1.basic_consume(q, first)
    ch2.basic_consume(q, second)
    pub = connect().channel()
    for i in range(6):
        pub.basic_publish("", q, b"%d" % i)
    assert pump_until([c1, c2], lambda: len(first) == 6)
    pump([c1, c2], QUIET_S)
    assert len(first) == 6 and len(second) == 0
    # both are counted as consumers
    assert ch1.queue_declare(q, passive=True).method.consumer_count == 2
    # the active one goes: the next takes over
    ch1.basic_cancel(tag1)
    for i in range(6, 10):
        pub.basic_publish("", q, b"%d" % i)
    assert pump_until([c1, c2], lambda: len(second) == 4)
    assert second.bodies == [b"6", b"7", b"8", b"9"]
    assert len(first) == 6


def test_single_active_consumer_takeover_on_connection_close(connect, names):
    c1, c2 = connect(), connect()
    ch1, ch2 = c1.channel(), c2.channel()
    q = names.queue("sac-close")
    ch1.queue_declare(q, arguments={"x-single-active-consumer": True})
    ch1.basic_qos(prefetch_count=10)
    first, second = Collector(ack=False), Collector(ack=True)
    ch1.basic_consume(q, first)
    ch2.basic_consume(q, second)
    pub = connect().channel()
    for i in range(3):
        pub.basic_publish("", q, b"%d" % i)
    assert pump_until([c1, c2], lambda: len(first) == 3)
    assert len(second) == 0
    # the active consumer dies with unacked messages: they are redelivered
    # to the new active consumer, in order
    c1.close()
    assert pump_until(c2, lambda: len(second) == 3)
    assert second.bodies == [b"0", b"1", b"2"]
    assert all(d.method.redelivered for d in second.deliveries)


def test_single_active_consumer_refuses_exclusive_consumers_403(conn, names):
    ch = conn.channel()
    q = names.queue("sac-excl")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    with channel_closed(
        403, "ACCESS_REFUSED - queue '%s' in vhost %s in exclusive use" % (q, V)
    ):
        ch.basic_consume(q, Collector(), exclusive=True)


# ===========================================================================
# consumer priorities
# ===========================================================================


def test_consumer_priority_high_gets_messages_while_it_has_room(connect, names):
    c = connect()
    hi_ch, lo_ch = c.channel(), c.channel()
    q = names.queue("cprio")
    hi_ch.queue_declare(q)
    hi_ch.basic_qos(prefetch_count=2)
    lo_ch.basic_qos(prefetch_count=100)
    hi, lo = Collector(ack=False), Collector(ack=False)
    # the low-priority consumer subscribes first: priority, not order, counts
    lo_ch.basic_consume(q, lo, arguments={"x-priority": 1})
    hi_ch.basic_consume(q, hi, arguments={"x-priority": 10})
    pub = connect().channel()
    for i in range(10):
        pub.basic_publish("", q, b"%d" % i)
    sync_op(pub)
    assert pump_until(c, lambda: len(hi) + len(lo) == 10)
    assert hi.bodies == [b"0", b"1"]
    assert lo.bodies == [b"%d" % i for i in range(2, 10)]
    # room again: the high-priority consumer is preferred again
    hi_ch.basic_ack(hi.deliveries[-1].method.delivery_tag, multiple=True)
    hi_ch.queue_declare(q, passive=True)  # the ack is in before the publishes
    for i in range(10, 12):
        pub.basic_publish("", q, b"%d" % i)
    assert pump_until(c, lambda: len(hi) == 4)
    assert hi.bodies[2:] == [b"10", b"11"]
    assert len(lo) == 8


def test_consumer_priority_no_ack_high_takes_everything(connect, names):
    c = connect()
    ch = c.channel()
    q = names.queue("cprio-noack")
    ch.queue_declare(q)
    hi, lo, default = Collector(), Collector(), Collector()
    ch.basic_consume(q, lo, auto_ack=True, arguments={"x-priority": -5})
    ch.basic_consume(q, default, auto_ack=True)
    ch.basic_consume(q, hi, auto_ack=True, arguments={"x-priority": 3})
    for i in range(20):
        ch.basic_publish("", q, b"%d" % i)
    assert pump_until(c, lambda: len(hi) == 20)
    pump(c, QUIET_S)
    assert (len(lo), len(default)) == (0, 0)


def test_consumer_priority_invalid_type_406(conn, names):
    ch = conn.channel()
    q = names.queue("cprio-bad")
    ch.queue_declare(q)
    with channel_closed(
        406,
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '%s' in vhost %s: "
        '"expected integer, got longstr"' % (q, V),
    ):
        ch.basic_consume(q, Collector(), arguments={"x-priority": "high"})


# ===========================================================================
# alternate exchanges
# ===========================================================================


def test_alternate_exchange_receives_unroutable(conn, names):
    ch = conn.channel()
    ae = names.exchange("ae")
    x = names.exchange("main")
    ch.exchange_declare(ae, exchange_type="fanout")
    ch.exchange_declare(x, exchange_type="direct", arguments={"alternate-exchange": ae})
    routed = names.queue("routed")
    aeq = names.queue("aeq")
    ch.queue_declare(routed)
    ch.queue_declare(aeq)
    ch.queue_bind(routed, x, "known")
    ch.queue_bind(aeq, ae)
    ch.confirm_delivery()
    # mandatory: not returned, because the AE routes it
    ch.basic_publish(x, "known", b"to-routed", mandatory=True)
    ch.basic_publish(x, "unknown", b"to-ae", mandatory=True)
    assert message_count(ch, routed) == 1
    assert message_count(ch, aeq) == 1
    m, _, body = ch.basic_get(aeq, auto_ack=True)
    # delivered with the exchange and key it was published with
    assert (body, m.exchange, m.routing_key) == (b"to-ae", x, "unknown")


def test_alternate_exchange_that_routes_nowhere_returns(conn, names):
    ch = conn.channel()
    ae = names.exchange("ae-empty")
    x = names.exchange("main2")
    ch.exchange_declare(ae, exchange_type="fanout")
    ch.exchange_declare(x, exchange_type="direct", arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    with pytest.raises(UnroutableError):
        ch.basic_publish(x, "whatever", b"lost", mandatory=True)


def test_alternate_exchange_chain(conn, names):
    ch = conn.channel()
    ae2 = names.exchange("ae2")
    ae1 = names.exchange("ae1")
    x = names.exchange("main3")
    ch.exchange_declare(ae2, exchange_type="fanout")
    ch.exchange_declare(ae1, exchange_type="direct", arguments={"alternate-exchange": ae2})
    ch.exchange_declare(x, exchange_type="topic", arguments={"alternate-exchange": ae1})
    q = names.queue("ae2q")
    ch.queue_declare(q)
    ch.queue_bind(q, ae2)
    ch.confirm_delivery()
    ch.basic_publish(x, "a.b", b"deep", mandatory=True)
    m, _, body = get(ch, q)
    assert (body, m.exchange, m.routing_key) == (b"deep", x, "a.b")


@pytest.mark.parametrize("value,type_name", [(5, "signedint"), (b"ae", "binary")])
def test_alternate_exchange_argument_must_be_a_string_406(conn, names, value, type_name):
    x = names.exchange("ae-bad")
    with channel_closed(
        406,
        "PRECONDITION_FAILED - invalid type '%s' for arg 'alternate-exchange' in "
        "exchange '%s' in vhost %s" % (type_name, x, V),
    ):
        conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": value})


def test_alternate_exchange_redeclare_must_match_406(conn, names):
    x = names.exchange("ae-redecl")
    ch = conn.channel()
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "ae-1", "x-other": 1})
    # other arguments are not compared
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "ae-1"})
    text = "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '%s' in vhost %s: " % (
        x,
        V,
    )
    with channel_closed(406, text + "received 'ae-2' but current is 'ae-1'"):
        conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae-2"})
    with channel_closed(
        406, text + "received none but current is the value 'ae-1' of type 'longstr'"
    ):
        conn.channel().exchange_declare(x, "direct")


def test_alternate_exchange_missing_means_unroutable(conn, names):
    x = names.exchange("ae-missing")
    ch = conn.channel()
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": names.unique("nope")})
    ch.confirm_delivery()
    with pytest.raises(UnroutableError):
        ch.basic_publish(x, "k", b"x", mandatory=True)


# ===========================================================================
# direct reply-to
# ===========================================================================

REPLY_TO = "amq.rabbitmq.reply-to"


def test_direct_reply_to_rpc_round_trip(connect, names):
    client_conn, server_conn = connect(), connect()
    client = client_conn.channel()
    server = server_conn.channel()
    rpc = names.queue("rpc")
    server.queue_declare(rpc)

    replies = Collector()
    client.basic_consume(REPLY_TO, replies, auto_ack=True)
    for i in range(3):
        client.basic_publish(
            "",
            rpc,
            b"ping %d" % i,
            pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c%d" % i),
        )
    sync_op(client)

    for i in range(3):
        method, props, body = get(server, rpc)
        assert body == b"ping %d" % i
        # the pseudo-queue name is replaced by a per-channel address
        assert props.reply_to.startswith(REPLY_TO + ".")
        server.basic_publish(
            "",
            props.reply_to,
            b"pong %d" % i,
            pika.BasicProperties(correlation_id=props.correlation_id),
        )
    assert pump_until(client_conn, lambda: len(replies) == 3)
    assert replies.bodies == [b"pong 0", b"pong 1", b"pong 2"]
    assert [d.properties.correlation_id for d in replies.deliveries] == ["c0", "c1", "c2"]
    assert replies.deliveries[0].method.exchange == ""
    assert replies.deliveries[0].method.routing_key.startswith(REPLY_TO + ".")


def test_direct_reply_to_without_consumer_406(conn, names):
    ch = conn.channel()
    q = names.queue("rpc-noconsumer")
    ch.queue_declare(q)
    with channel_closed(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO))
        sync_op(ch)
    assert message_count(conn.channel(), q) == 0


def test_direct_reply_to_consumer_must_be_no_ack_406(conn):
    ch = conn.channel()
    with channel_closed(406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"):
        ch.basic_consume(REPLY_TO, Collector(), auto_ack=False)


def test_direct_reply_to_consumer_only_once_406(conn):
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, Collector(), auto_ack=True)
    with channel_closed(406, "PRECONDITION_FAILED - reply consumer already set"):
        ch.basic_consume(REPLY_TO, Collector(), auto_ack=True)


def test_direct_reply_to_reply_after_requester_left_is_dropped(connect, names):
    client_conn, server_conn = connect(), connect()
    client = client_conn.channel()
    server = server_conn.channel()
    rpc = names.queue("rpc-gone")
    server.queue_declare(rpc)
    client.basic_consume(REPLY_TO, Collector(), auto_ack=True)
    client.basic_publish("", rpc, b"req", pika.BasicProperties(reply_to=REPLY_TO))
    sync_op(client)
    method, props, _ = get(server, rpc)
    client_conn.close()
    # the reply goes nowhere, and the replier's channel stays open
    server.basic_publish("", props.reply_to, b"late")
    sync_op(server)
    assert server.is_open


# ===========================================================================
# queue argument validation
# ===========================================================================


def invalid_arg(key, q, detail):
    return "PRECONDITION_FAILED - invalid arg '%s' for queue '%s' in vhost %s: %s" % (
        key,
        q,
        V,
        detail,
    )


BAD_ARGS = [
    ({"x-message-ttl": -1}, "x-message-ttl", "{value_negative,-1}"),
    ({"x-message-ttl": "100"}, "x-message-ttl", '"expected integer, got longstr"'),
    ({"x-message-ttl": True}, "x-message-ttl", '"expected integer, got bool"'),
    ({"x-message-ttl": 315360000001}, "x-message-ttl", "{value_too_large,315360000001}"),
    ({"x-expires": 0}, "x-expires", "{value_zero,0}"),
    ({"x-expires": -5}, "x-expires", "{value_negative,-5}"),
    ({"x-expires": "soon"}, "x-expires", '"expected integer, got longstr"'),
    ({"x-expires": 315360000001}, "x-expires", "{value_too_large,315360000001}"),
    ({"x-max-priority": 256}, "x-max-priority", "{max_value_exceeded,256}"),
    ({"x-max-priority": -1}, "x-max-priority", "{value_negative,-1}"),
    ({"x-max-priority": "10"}, "x-max-priority", '"expected integer, got longstr"'),
    ({"x-max-priority": [1]}, "x-max-priority", '"expected integer, got array"'),
    ({"x-max-priority": {"a": 1}}, "x-max-priority", '"expected integer, got table"'),
    ({"x-max-length": -1}, "x-max-length", "{value_negative,-1}"),
    ({"x-max-length": "ten"}, "x-max-length", '"expected integer, got longstr"'),
    ({"x-max-length-bytes": -1}, "x-max-length-bytes", "{value_negative,-1}"),
    ({"x-overflow": "bogus"}, "x-overflow", "invalid_overflow"),
    ({"x-overflow": 5}, "x-overflow", "{unacceptable_type,signedint}"),
    ({"x-overflow": b"drop-head"}, "x-overflow", "{unacceptable_type,binary}"),
    (
        {"x-dead-letter-routing-key": "rk"},
        "x-dead-letter-routing-key",
        "routing_key_but_no_dlx_defined",
    ),
    (
        {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": 5},
        "x-dead-letter-routing-key",
        "{unacceptable_type,signedint}",
    ),
    ({"x-single-active-consumer": "yes"}, "x-single-active-consumer", "{unacceptable_type,longstr}"),
    ({"x-single-active-consumer": 1}, "x-single-active-consumer", "{unacceptable_type,signedint}"),
    ({"x-queue-type": "bogus"}, "x-queue-type", "\"unsupported queue type 'bogus'\""),
    ({"x-queue-type": 5}, "x-queue-type", "{unacceptable_type,signedint}"),
    ({"x-queue-mode": "bogus"}, "x-queue-mode", "\"unsupported queue mode 'bogus'\""),
    # several wrong: the first in RabbitMQ's own order is reported
    (
        {"x-max-length": -1, "x-dead-letter-routing-key": "k"},
        "x-dead-letter-routing-key",
        "routing_key_but_no_dlx_defined",
    ),
    ({"x-message-ttl": -1, "x-expires": 0}, "x-expires", "{value_zero,0}"),
]


@pytest.mark.parametrize(
    "args,key,detail", BAD_ARGS, ids=["%d-%s" % (i, a[1]) for i, a in enumerate(BAD_ARGS)]
)
def test_invalid_queue_argument_406(conn, names, args, key, detail):
    q = names.queue("badarg")
    with channel_closed(406, invalid_arg(key, q, detail)):
        conn.channel().queue_declare(q, arguments=args)
    assert not queue_exists(q)


@pytest.mark.parametrize("value,type_name", [(5, "signedint"), (b"dlx", "binary")])
def test_invalid_dead_letter_exchange_type_406(conn, names, value, type_name):
    q = names.queue("baddlx")
    with channel_closed(
        406,
        "PRECONDITION_FAILED - invalid type '%s' for arg 'x-dead-letter-exchange' in "
        "queue '%s' in vhost %s" % (type_name, q, V),
    ):
        conn.channel().queue_declare(q, arguments={"x-dead-letter-exchange": value})


GOOD_ARGS = [
    {"x-max-priority": 0},
    {"x-max-priority": 255},
    {"x-message-ttl": 0},
    {"x-message-ttl": 315360000000},
    {"x-expires": 315360000000},
    {"x-max-length": 2**40},
    {"x-single-active-consumer": False},
    {"x-dead-letter-exchange": "does-not-exist-yet"},
    {"x-queue-mode": "lazy"},
    {"x-overflow": "reject-publish-dlx"},
    {"x-unknown-argument": "ignored"},
]


@pytest.mark.parametrize("args", GOOD_ARGS, ids=[next(iter(a)) for a in GOOD_ARGS])
def test_valid_queue_arguments_accepted(conn, names, args):
    q = names.queue("goodarg")
    assert conn.channel().queue_declare(q, arguments=args).method.queue == q


def test_redeclare_with_different_arguments_406(conn, names):
    q = names.queue("redecl")
    ch = conn.channel()
    args = {"x-message-ttl": 100, "x-max-length": 5, "x-foo": 1}
    ch.queue_declare(q, arguments=args)

    def inequivalent(detail):
        return "PRECONDITION_FAILED - inequivalent arg %s" % detail

    # same arguments: fine; unknown x- arguments are not compared
    ch.queue_declare(q, arguments=args)
    ch.queue_declare(q, arguments={"x-message-ttl": 100, "x-max-length": 5, "x-foo": 2})
    ch.queue_declare(q, arguments={"x-message-ttl": 100, "x-max-length": 5})
    cases = [
        (
            {"x-message-ttl": 200, "x-max-length": 5},
            "'x-message-ttl' for queue '%s' in vhost %s: received '200' but current is '100'",
        ),
        (
            {"x-max-length": 5},
            "'x-message-ttl' for queue '%s' in vhost %s: received none but current is the "
            "value '100' of type 'signedint'",
        ),
        (
            {"x-message-ttl": 100, "x-max-length": 5, "x-dead-letter-exchange": "d"},
            "'x-dead-letter-exchange' for queue '%s' in vhost %s: received the value 'd' of "
            "type 'longstr' but current is none",
        ),
        (
            # a string is not an integer, even when it reads the same
            {"x-message-ttl": "100", "x-max-length": 5},
            "'x-message-ttl' for queue '%s' in vhost %s: received '100' but current is '100'",
        ),
        (
            # several differ: RabbitMQ's argument order decides which is named
            {"x-max-length": 6, "x-message-ttl": 200},
            "'x-message-ttl' for queue '%s' in vhost %s: received '200' but current is '100'",
        ),
    ]
    for new_args, detail in cases:
        with channel_closed(406, inequivalent(detail % (q, V))):
            conn.channel().queue_declare(q, arguments=new_args)
    # the queue is unchanged
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-message-ttl": 100, "x-max-length": 5})


def test_sender_selected_distribution_cc_and_bcc(conn, names):
    """CC and BCC header keys route the message too (RabbitMQ's
    sender-selected distribution); BCC is stripped before delivery, CC is
    kept and shows up in x-death's routing-keys."""
    ch = conn.channel()
    x = names.exchange("cc")
    ch.exchange_declare(x, "direct")
    q1, q2, q3 = names.queue("to"), names.queue("cc"), names.queue("bcc")
    for q in (q1, q2, q3):
        ch.queue_declare(q)
        ch.queue_bind(q, x, q)
    ch.confirm_delivery()
    ch.basic_publish(x, q1, b"m", pika.BasicProperties(headers={"CC": [q2], "BCC": [q3]}))
    for q in (q1, q2, q3):
        method, props, body = get(ch, q)
        assert body == b"m", q
        assert props.headers == {"CC": [q2]}, q

    dlx = names.exchange("ccdlx")
    ch.exchange_declare(dlx, "fanout")
    dead = names.queue("ccdead")
    ch.queue_declare(dead)
    ch.queue_bind(dead, dlx)
    src = names.queue("ccsrc")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx})
    other = names.queue("ccother")
    ch.queue_declare(other)
    ch.basic_publish("", src, b"r", pika.BasicProperties(headers={"CC": [other]}))
    method, _, _ = ch.basic_get(src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    _, props, body = get(ch, dead)
    assert body == b"r"
    assert props.headers["x-death"][0]["routing-keys"] == [src, other]


@pytest.mark.parametrize(
    "flags, prop",
    [
        (dict(durable=False), "non-durable"),
        (dict(durable=True, exclusive=True), "exclusive-owner"),
        (dict(durable=True, auto_delete=True), "auto-delete"),
    ],
)
def test_quorum_queue_declaration_rules_406(connect, names, flags, prop):
    queue = names.queue("quorum")
    ch = connect().channel()
    with channel_closed(406, "PRECONDITION_FAILED - invalid property '%s' for queue '%s' in vhost %s" % (prop, queue, V)):
        ch.queue_declare(queue, arguments={"x-queue-type": "quorum"}, **flags)


def test_quorum_queue_declared_durable_works(conn, names):
    queue = names.queue("quorum")
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"q")
    assert get(ch, queue)[2] == b"q"


def get_unacked(ch, queue, timeout=WAIT_S):
    """basic.get with manual ack until a message arrives or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is not None or time.monotonic() >= deadline:
            return method, props, body
        time.sleep(0.01)


@pytest.mark.parametrize("dead_letter", [True, False])
def test_quorum_delivery_limit_and_delivery_count(conn, names, dead_letter):
    # A quorum queue counts returns: every redelivery carries
    # x-delivery-count (none the first time, as RabbitMQ 4; 3.10 sent 0),
    # and with x-delivery-limit 2 the third return dead-letters the message
    # (reason delivery_limit) or drops it. RabbitMQ delivers it three times.
    ch = conn.channel()
    args = {"x-queue-type": "quorum", "x-delivery-limit": 2}
    if dead_letter:
        dead = names.queue("qdead")
        ch.queue_declare(dead, durable=True)
        args["x-dead-letter-exchange"] = ""
        args["x-dead-letter-routing-key"] = dead
    queue = names.queue("qlimit")
    ch.queue_declare(queue, durable=True, arguments=args)
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"poison", pika.BasicProperties(headers={"a": 1}))
    counts = []
    for _ in range(3):
        method, props, body = get_unacked(ch, queue)
        assert body == b"poison"
        assert method.redelivered == bool(counts)
        counts.append(props.headers.get("x-delivery-count"))
        assert props.headers["a"] == 1
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert counts == [None, 1, 2]
    # Gone from the queue after the third return.
    sync_op(ch)
    assert get(ch, queue, timeout=QUIET_S)[0] is None
    if dead_letter:
        _, props, body = get(ch, dead)
        assert body == b"poison"
        death = props.headers["x-death"][0]
        assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", queue, 1)
        assert props.headers["x-first-death-reason"] == "delivery_limit"
        assert "x-delivery-count" not in props.headers


def test_quorum_returns_count_when_a_consumer_goes_away(connect, names):
    # Closing a channel with unacknowledged deliveries returns them too.
    queue = names.queue("qclose")
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"m")
    for expected in (None, 1):
        ch2 = c.channel()
        _, props, _ = get_unacked(ch2, queue)
        assert (props.headers or {}).get("x-delivery-count") == expected
        ch2.close()
