"""Protocol errors (channel and connection closes, with RabbitMQ's exact
reply codes and texts) and the less common AMQP 0-9-1 features: purge/delete
counts, basic.get, nack/reject, recover, qos, transactions, channel.flow,
exchange-to-exchange bindings, headers exchanges, auto-delete / exclusive
queue lifetimes, server-sent basic.cancel.

All expectations were taken from RabbitMQ 3.10.
"""

import contextlib

import pika
import pytest
from pika import spec
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

from conftest import (
    QUIET_S,
    Collector,
    consumer_count,
    drain,
    eventually,
    message_count,
    new_connection,
    params,
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


@contextlib.contextmanager
def connection_closed(code, text):
    with pytest.raises(ConnectionClosedByBroker) as err:
        yield err
    assert (err.value.reply_code, err.value.reply_text) == (code, text)


def locked_text(queue):
    return (
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' "
        "in vhost '/'. It could be originally declared on another connection or "
        "the exclusive property value does not match that of the original "
        "declaration." % queue
    )


def sync_op(ch):
    """A synchronous round trip on `ch`: surfaces an asynchronous channel
    close caused by an earlier asynchronous method (publish, ack...)."""
    ch.queue_declare(queue="", exclusive=True)


def publish_confirmed(ch, queue, bodies, exchange=""):
    for b in bodies:
        ch.basic_publish(exchange=exchange, routing_key=queue, body=b)
    # a round trip on the same channel orders the publishes before it
    sync_op(ch)


# ===========================================================================
# channel errors
# ===========================================================================


def test_passive_declare_missing_queue_404(conn, names):
    queue = names.queue("missing")
    ch = conn.channel()
    with channel_closed(404, "NOT_FOUND - no queue '%s' in vhost %s" % (queue, V)):
        ch.queue_declare(queue=queue, passive=True)
    assert ch.is_closed
    # a channel error leaves the connection and other channels usable
    assert conn.is_open
    ch2 = conn.channel()
    assert ch2.queue_declare(queue=queue).method.queue == queue


def test_passive_declare_missing_exchange_404(conn, names):
    exchange = names.exchange("missing")
    with channel_closed(404, "NOT_FOUND - no exchange '%s' in vhost %s" % (exchange, V)):
        conn.channel().exchange_declare(exchange=exchange, passive=True)
    # passive declare of an existing exchange works, whatever type is given
    ok = conn.channel().exchange_declare(exchange="amq.topic", exchange_type="direct", passive=True)
    assert isinstance(ok.method, spec.Exchange.DeclareOk)


def test_redeclare_queue_with_different_durable_406(conn, names):
    queue = names.queue("durable")
    conn.channel().queue_declare(queue=queue, durable=True)
    with channel_closed(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in vhost %s: "
        "received 'false' but current is 'true'" % (queue, V),
    ):
        conn.channel().queue_declare(queue=queue, durable=False)
    # an equivalent redeclare is fine
    assert conn.channel().queue_declare(queue=queue, durable=True).method.queue == queue


def test_redeclare_queue_with_different_auto_delete_or_arguments_406(conn, names):
    queue = names.queue("ad")
    conn.channel().queue_declare(queue=queue, auto_delete=True)
    with channel_closed(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '%s' in vhost %s: "
        "received 'false' but current is 'true'" % (queue, V),
    ):
        conn.channel().queue_declare(queue=queue)

    queue = names.queue("args")
    conn.channel().queue_declare(queue=queue, arguments={"x-max-length": 10})
    with channel_closed(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '%s' in vhost %s: "
        "received '11' but current is '10'" % (queue, V),
    ):
        conn.channel().queue_declare(queue=queue, arguments={"x-max-length": 11})
    # passive declare ignores flags and arguments
    assert conn.channel().queue_declare(queue=queue, passive=True).method.queue == queue


@pytest.mark.parametrize("op", ["declare", "passive", "consume", "get", "purge", "delete"])
def test_exclusive_queue_from_another_connection_405(connect, names, op):
    owner = connect().channel()
    queue = names.queue("excl")
    owner.queue_declare(queue=queue, exclusive=True)
    other = connect().channel()
    actions = {
        "declare": lambda: other.queue_declare(queue=queue),
        "passive": lambda: other.queue_declare(queue=queue, passive=True),
        "consume": lambda: other.basic_consume(queue, lambda *a: None),
        "get": lambda: other.basic_get(queue),
        "purge": lambda: other.queue_purge(queue),
        "delete": lambda: other.queue_delete(queue),
    }
    with channel_closed(405, locked_text(queue)):
        actions[op]()
    # the owner still has it
    assert owner.queue_declare(queue=queue, passive=True).method.queue == queue


def test_redeclare_exclusive_flag_mismatch_on_same_connection_405(conn, names):
    queue = names.queue("excl")
    conn.channel().queue_declare(queue=queue, exclusive=True)
    with channel_closed(405, locked_text(queue)):
        conn.channel().queue_declare(queue=queue, exclusive=False)
    # exclusive queues can be used from any channel of the owning connection
    other_channel = conn.channel()
    other_channel.basic_publish(exchange="", routing_key=queue, body=b"x")
    assert drain(other_channel, queue) == [b"x"]


def test_publish_to_missing_exchange_404(conn, names):
    exchange = names.exchange("missing")
    ch = conn.channel()
    ch.basic_publish(exchange=exchange, routing_key="k", body=b"x")
    # basic.publish has no reply: the close shows up on the next round trip
    with channel_closed(404, "NOT_FOUND - no exchange '%s' in vhost %s" % (exchange, V)):
        sync_op(ch)
    assert conn.is_open


def test_publish_to_missing_queue_via_default_exchange_is_dropped_silently(conn, names):
    ch = conn.channel()
    ch.basic_publish(exchange="", routing_key=names.unique("nobody"), body=b"x")
    sync_op(ch)
    assert ch.is_open


def test_publish_to_internal_exchange_403(conn, names):
    exchange = names.exchange("internal")
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="fanout", internal=True)
    ch.basic_publish(exchange=exchange, routing_key="", body=b"x")
    with channel_closed(
        403, "ACCESS_REFUSED - cannot publish to internal exchange '%s' in vhost %s" % (exchange, V)
    ):
        sync_op(ch)


def test_redeclare_exchange_with_different_type_406(conn, names):
    exchange = names.exchange("typed")
    conn.channel().exchange_declare(exchange=exchange, exchange_type="direct")
    with channel_closed(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '%s' in vhost %s: "
        "received 'fanout' but current is 'direct'" % (exchange, V),
    ):
        conn.channel().exchange_declare(exchange=exchange, exchange_type="fanout")
    with channel_closed(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '%s' in vhost %s: "
        "received 'true' but current is 'false'" % (exchange, V),
    ):
        conn.channel().exchange_declare(exchange=exchange, exchange_type="direct", durable=True)


def test_declare_exchange_with_unknown_type_closes_connection_503(conn, names):
    exchange = names.exchange("badtype")
    with connection_closed(503, "COMMAND_INVALID - unknown exchange type 'no-such-type'"):
        conn.channel().exchange_declare(exchange=exchange, exchange_type="no-such-type")
    assert conn.is_closed


def test_reserved_amq_prefix_403(conn, names):
    exchange = names.unique("amq.foo")
    with channel_closed(
        403, "ACCESS_REFUSED - exchange name '%s' contains reserved prefix 'amq.*'" % exchange
    ):
        conn.channel().exchange_declare(exchange=exchange, exchange_type="direct")
    queue = names.unique("amq.foo")
    with channel_closed(
        403, "ACCESS_REFUSED - queue name '%s' contains reserved prefix 'amq.*'" % queue
    ):
        conn.channel().queue_declare(queue=queue)
    # redeclaring an existing amq.* exchange equivalently is allowed
    ok = conn.channel().exchange_declare(exchange="amq.direct", exchange_type="direct", durable=True)
    assert isinstance(ok.method, spec.Exchange.DeclareOk)


def test_default_and_system_exchanges_are_protected_403(conn, names):
    queue = names.queue("q")
    conn.channel().queue_declare(queue=queue)
    text = "ACCESS_REFUSED - operation not permitted on the default exchange"
    with channel_closed(403, text):
        conn.channel().queue_bind(queue=queue, exchange="", routing_key="k")
    with channel_closed(403, text):
        conn.channel().exchange_declare(exchange="", exchange_type="direct")
    with channel_closed(
        403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost %s not allowed" % V
    ):
        conn.channel().exchange_delete(exchange="amq.direct")


@pytest.mark.parametrize("method", ["ack", "nack", "reject"])
def test_unknown_delivery_tag_406(conn, method):
    ch = conn.channel()
    getattr(ch, "basic_" + method)(delivery_tag=42)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 42"):
        sync_op(ch)
    assert conn.is_open


def test_double_ack_406(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"a"])
    method, _, body = ch.basic_get(queue)
    assert (method.delivery_tag, body) == (1, b"a")
    ch.basic_ack(delivery_tag=1)
    ch.basic_ack(delivery_tag=1)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 1"):
        sync_op(ch)


def test_ack_multiple_zero_with_nothing_outstanding_is_ok(conn):
    ch = conn.channel()
    ch.basic_ack(delivery_tag=0, multiple=True)
    sync_op(ch)
    assert ch.is_open
    ch.basic_ack(delivery_tag=0, multiple=False)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 0"):
        sync_op(ch)


def test_duplicate_consumer_tag_closes_connection_530(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    ch.basic_consume(queue, lambda *a: None, consumer_tag="dup")
    # pika refuses a duplicate tag client-side, so send the frame ourselves
    with pytest.raises(pika.exceptions.DuplicateConsumerTag):
        ch.basic_consume(queue, lambda *a: None, consumer_tag="dup")
    ch._impl._send_method(spec.Basic.Consume(queue=queue, consumer_tag="dup"))
    with connection_closed(530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"):
        pump_until(conn, lambda: conn.is_closed)
    assert conn.is_closed


def test_same_consumer_tag_on_different_channels_is_fine(conn, names):
    queue = names.queue("q")
    ch1, ch2 = conn.channel(), conn.channel()
    ch1.queue_declare(queue=queue)
    assert ch1.basic_consume(queue, lambda *a: None, consumer_tag="same") == "same"
    assert ch2.basic_consume(queue, lambda *a: None, consumer_tag="same") == "same"
    assert consumer_count(conn.channel(), queue) == 2


def test_exclusive_consume_conflicts_403(connect, names):
    queue = names.queue("q")
    text = "ACCESS_REFUSED - queue '%s' in vhost %s in exclusive use" % (queue, V)
    a = connect().channel()
    a.queue_declare(queue=queue)
    a.basic_consume(queue, lambda *a: None)
    b = connect().channel()
    with channel_closed(403, text):
        b.basic_consume(queue, lambda *a: None, exclusive=True)

    queue2 = names.queue("q")
    text2 = "ACCESS_REFUSED - queue '%s' in vhost %s in exclusive use" % (queue2, V)
    a.queue_declare(queue=queue2)
    a.basic_consume(queue2, lambda *a: None, exclusive=True)
    b = connect().channel()
    with channel_closed(403, text2):
        b.basic_consume(queue2, lambda *a: None)
    # even from the same channel (which closes it, ending the exclusive
    # consumer with it)
    with channel_closed(403, text2):
        a.basic_consume(queue2, lambda *a: None)
    b = connect().channel()
    assert b.basic_consume(queue2, lambda *a: None, exclusive=True)


def test_queue_delete_if_unused_and_if_empty_406(connect, names):
    queue = names.queue("q")
    consumer = connect().channel()
    consumer.queue_declare(queue=queue)
    tag = consumer.basic_consume(queue, lambda *a: None)
    ch = connect().channel()
    with channel_closed(
        406, "PRECONDITION_FAILED - queue '%s' in vhost %s in use" % (queue, V)
    ):
        ch.queue_delete(queue=queue, if_unused=True)
    consumer.basic_cancel(tag)

    ch = connect().channel()
    publish_confirmed(ch, queue, [b"1", b"2"])
    with channel_closed(
        406, "PRECONDITION_FAILED - queue '%s' in vhost %s not empty" % (queue, V)
    ):
        ch.queue_delete(queue=queue, if_empty=True)

    # conditions met: if_unused succeeds and reports the messages deleted
    ch = connect().channel()
    ok = ch.queue_delete(queue=queue, if_unused=True)
    assert ok.method.message_count == 2
    assert not queue_exists(queue)

    queue = names.queue("q")
    ch.queue_declare(queue=queue)
    assert ch.queue_delete(queue=queue, if_empty=True, if_unused=True).method.message_count == 0
    assert not queue_exists(queue)


def test_operations_on_missing_entities(conn, names):
    queue = names.queue("missing")
    exchange = names.exchange("missing")
    text_q = "NOT_FOUND - no queue '%s' in vhost %s" % (queue, V)
    text_x = "NOT_FOUND - no exchange '%s' in vhost %s" % (exchange, V)
    with channel_closed(404, text_q):
        conn.channel().basic_consume(queue, lambda *a: None)
    with channel_closed(404, text_q):
        conn.channel().basic_get(queue)
    with channel_closed(404, text_q):
        conn.channel().queue_purge(queue)
    with channel_closed(404, text_q):
        conn.channel().queue_bind(queue=queue, exchange="amq.direct", routing_key="k")
    existing = conn.channel().queue_declare(queue="", exclusive=True).method.queue
    with channel_closed(404, text_x):
        conn.channel().queue_bind(queue=existing, exchange=exchange, routing_key="k")
    # deletes and unbinds of things that do not exist are idempotent in RabbitMQ
    ch = conn.channel()
    assert ch.queue_delete(queue=queue).method.message_count == 0
    assert isinstance(ch.exchange_delete(exchange=exchange).method, spec.Exchange.DeleteOk)
    assert isinstance(
        ch.queue_unbind(queue=queue, exchange="amq.direct", routing_key="k").method,
        spec.Queue.UnbindOk,
    )
    assert ch.is_open


def test_wrong_password_is_authentication_error():
    with pytest.raises(ProbableAuthenticationError) as err:
        new_connection(credentials=pika.PlainCredentials("guest", "wrong-password"))
    assert err.value.args == (
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using "
        "authentication mechanism PLAIN. For details see the broker logfile.'",
    )


def test_unknown_user_is_authentication_error():
    with pytest.raises(ProbableAuthenticationError) as err:
        new_connection(credentials=pika.PlainCredentials("no-such-user", "guest"))
    assert "(403) 'ACCESS_REFUSED - Login was refused" in err.value.args[0]


def test_unknown_vhost_is_access_denied_530():
    with pytest.raises(ProbableAccessDeniedError) as err:
        new_connection(virtual_host="no-such-vhost")
    assert err.value.args == (
        "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost no-such-vhost not found'",
    )


def test_tx_methods_without_select_406(conn):
    with channel_closed(406, "PRECONDITION_FAILED - channel is not transactional"):
        conn.channel().tx_commit()
    with channel_closed(406, "PRECONDITION_FAILED - channel is not transactional"):
        conn.channel().tx_rollback()


def test_tx_and_confirm_modes_are_exclusive_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_closed(406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        ch.tx_select()
    ch = conn.channel()
    ch.tx_select()
    ch.tx_select()  # selecting twice is fine
    with channel_closed(406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        ch.confirm_delivery()


def test_channel_flow(conn):
    ch = conn.channel()
    assert ch.flow(True) is True
    # RabbitMQ does not implement flow(active=false): hard connection error
    with connection_closed(540, "NOT_IMPLEMENTED - active=false"):
        ch.flow(False)
    assert conn.is_closed


def test_basic_recover_without_requeue_540(conn):
    ch = conn.channel()
    with connection_closed(540, "NOT_IMPLEMENTED - requeue=false"):
        ch.basic_recover(requeue=False)
    assert conn.is_closed


def test_qos_prefetch_size_540(conn):
    ch = conn.channel()
    ch.basic_qos(prefetch_size=0, prefetch_count=10)
    with connection_closed(540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)"):
        ch.basic_qos(prefetch_size=10)


# ===========================================================================
# counts, basic.get, nack/reject, recover
# ===========================================================================


def test_purge_and_delete_return_message_counts(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"%d" % i for i in range(7)])
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 7

    ok = ch.queue_purge(queue=queue)
    assert isinstance(ok.method, spec.Queue.PurgeOk)
    assert ok.method.message_count == 7
    assert message_count(ch, queue) == 0
    assert ch.queue_purge(queue=queue).method.message_count == 0

    # purge does not touch unacked messages
    publish_confirmed(ch, queue, [b"a", b"b", b"c"])
    method, _, body = ch.basic_get(queue)
    assert body == b"a"
    assert ch.queue_purge(queue=queue).method.message_count == 2

    publish_confirmed(ch, queue, [b"d", b"e"])
    ok = ch.queue_delete(queue=queue)
    assert isinstance(ok.method, spec.Queue.DeleteOk)
    assert ok.method.message_count == 2  # ready messages only
    assert not queue_exists(queue)


def test_basic_get_and_get_empty(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    assert ch.basic_get(queue) == (None, None, None)  # basic.get-empty

    props = pika.BasicProperties(
        content_type="text/plain",
        headers={"k": "v"},
        message_id="m-1",
        priority=3,
    )
    ch.basic_publish(exchange="", routing_key=queue, body=b"one", properties=props)
    publish_confirmed(ch, queue, [b"two", b"three"])

    method, got_props, body = ch.basic_get(queue)
    assert isinstance(method, spec.Basic.GetOk)
    assert (body, method.delivery_tag, method.redelivered) == (b"one", 1, False)
    assert (method.exchange, method.routing_key, method.message_count) == ("", queue, 2)
    assert got_props.content_type == "text/plain"
    assert got_props.headers == {"k": "v"}
    assert got_props.message_id == "m-1"
    assert got_props.priority == 3

    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert (body, method.delivery_tag, method.message_count) == (b"two", 2, 1)
    method, _, body = ch.basic_get(queue)
    assert (body, method.delivery_tag, method.message_count) == (b"three", 3, 0)
    assert ch.basic_get(queue) == (None, None, None)

    ch.basic_ack(delivery_tag=3)
    ch.close()
    # 'one' was never acked: back in the queue, flagged redelivered
    ch = conn.channel()
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered, method.delivery_tag, method.message_count) == (
        b"one",
        True,
        1,
        0,
    )
    assert ch.basic_get(queue) == (None, None, None)


def test_reject_and_nack(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"0", b"1", b"2", b"3", b"4"])

    # reject with requeue: back at the head, redelivered=True
    method, _, body = ch.basic_get(queue)
    assert (body, method.redelivered) == (b"0", False)
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(queue)
    assert (body, method.redelivered, method.delivery_tag) == (b"0", True, 2)

    # reject without requeue: dropped
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
    tags = [ch.basic_get(queue) for _ in range(3)]
    assert [b for _, _, b in tags] == [b"1", b"2", b"3"]
    assert [m.delivery_tag for m, _, _ in tags] == [3, 4, 5]

    # nack multiple with requeue: all three back, in their original order
    ch.basic_nack(delivery_tag=4, multiple=True, requeue=True)
    sync_op(ch)
    # (tag 5 -> '3' is still unacked)
    got = [ch.basic_get(queue, auto_ack=True) for _ in range(3)]
    assert [(b, m.redelivered) for m, _, b in got] == [(b"1", True), (b"2", True), (b"4", False)]
    assert ch.basic_get(queue) == (None, None, None)

    # nack without requeue drops
    ch.basic_nack(delivery_tag=5, requeue=False)
    sync_op(ch)
    ch.close()
    ch = conn.channel()
    assert message_count(ch, queue) == 0


def test_nack_requeue_redelivers_to_consumer(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    received = Collector()

    def on_message(channel, method, props, body):
        received(channel, method, props, body)
        if not method.redelivered:
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(delivery_tag=method.delivery_tag)

    ch.basic_consume(queue, on_message)
    publish_confirmed(ch, queue, [b"m"])
    assert pump_until(conn, lambda: len(received) == 2)
    pump(conn, QUIET_S)
    assert [(d.body, d.method.redelivered, d.method.delivery_tag) for d in received.deliveries] == [
        (b"m", False, 1),
        (b"m", True, 2),
    ]


def test_basic_recover_requeue(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    received = Collector()
    ch.basic_consume(queue, received)
    publish_confirmed(ch, queue, [b"a", b"b"])
    assert pump_until(conn, lambda: len(received) == 2)

    ch.basic_recover(requeue=True)
    assert pump_until(conn, lambda: len(received) == 4)
    pump(conn, QUIET_S)
    assert [(d.body, d.method.redelivered, d.method.delivery_tag) for d in received.deliveries] == [
        (b"a", False, 1),
        (b"b", False, 2),
        (b"a", True, 3),
        (b"b", True, 4),
    ]
    # the old tags are gone, the new ones are valid
    ch.basic_ack(delivery_tag=4, multiple=True)
    sync_op(ch)
    ch.close()
    assert message_count(conn.channel(), queue) == 0


def test_unacked_messages_requeued_when_channel_closes(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"a", b"b", b"c"])
    for _ in range(3):
        ch.basic_get(queue)
    ch.basic_ack(delivery_tag=2)
    ch.close()
    ch = conn.channel()
    got = [ch.basic_get(queue, auto_ack=True) for _ in range(2)]
    assert [(b, m.redelivered) for m, _, b in got] == [(b"a", True), (b"c", True)]
    assert ch.basic_get(queue) == (None, None, None)


# ===========================================================================
# qos
# ===========================================================================


def _qos_setup(conn, names, nqueues=2, per_queue=5):
    ch = conn.channel()
    queues = []
    for _ in range(nqueues):
        q = names.queue("qos")
        ch.queue_declare(queue=q)
        publish_confirmed(ch, q, [b"%s-%d" % (q.encode(), i) for i in range(per_queue)])
        queues.append(q)
    return ch, queues


def test_qos_per_consumer(conn, names):
    ch, (q1, q2) = _qos_setup(conn, names)
    ch.basic_qos(prefetch_count=2)  # global_qos=False: per consumer
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    assert pump_until(conn, lambda: len(c1) == 2 and len(c2) == 2)
    pump(conn, QUIET_S)
    assert (len(c1), len(c2)) == (2, 2)

    # acking one of c1's frees exactly one slot for c1
    ch.basic_ack(delivery_tag=c1.deliveries[0].method.delivery_tag)
    assert pump_until(conn, lambda: len(c1) == 3)
    pump(conn, QUIET_S)
    assert (len(c1), len(c2)) == (3, 2)


def test_qos_global(conn, names):
    ch, (q1, q2) = _qos_setup(conn, names)
    ch.basic_qos(prefetch_count=3, global_qos=True)  # shared by the channel
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    assert pump_until(conn, lambda: len(c1) + len(c2) == 3)
    pump(conn, QUIET_S)
    assert len(c1) + len(c2) == 3
    assert len(c1) == 3  # c1 was first and filled the whole channel window

    ch.basic_ack(delivery_tag=0, multiple=True)
    assert pump_until(conn, lambda: len(c1) + len(c2) == 6)
    pump(conn, QUIET_S)
    assert len(c1) + len(c2) == 6


def test_qos_global_and_per_consumer_combined(conn, names):
    ch, (q1, q2) = _qos_setup(conn, names)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    assert pump_until(conn, lambda: len(c1) + len(c2) == 3)
    pump(conn, QUIET_S)
    # each consumer <= 2, the channel <= 3
    assert (len(c1), len(c2)) == (2, 1)


def test_qos_applies_only_to_later_consumers(conn, names):
    ch, (q1, q2) = _qos_setup(conn, names)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)  # unlimited
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q2, c2)  # limited to 1
    assert pump_until(conn, lambda: len(c1) == 5 and len(c2) == 1)
    pump(conn, QUIET_S)
    assert (len(c1), len(c2)) == (5, 1)


# ===========================================================================
# transactions
# ===========================================================================


def test_tx_rollback_discards_publishes_commit_delivers(connect, names):
    queue = names.queue("tx")
    ch = connect().channel()
    ch.queue_declare(queue=queue)
    observer = connect().channel()

    ch.tx_select()
    ch.basic_publish(exchange="", routing_key=queue, body=b"rolled back 1")
    ch.basic_publish(exchange="", routing_key=queue, body=b"rolled back 2")
    assert message_count(ch, queue) == 0  # nothing before commit
    ch.tx_rollback()
    assert message_count(observer, queue) == 0

    ch.basic_publish(exchange="", routing_key=queue, body=b"committed 1")
    ch.basic_publish(exchange="", routing_key=queue, body=b"committed 2")
    assert message_count(observer, queue) == 0
    ch.tx_commit()
    assert wait_count(observer, queue, 2) == 2
    assert drain(observer, queue) == [b"committed 1", b"committed 2"]

    # the channel stays transactional after commit
    ch.basic_publish(exchange="", routing_key=queue, body=b"after commit")
    ch.tx_rollback()
    assert message_count(observer, queue) == 0


def test_tx_rollback_of_ack_is_not_applied(connect, names):
    queue = names.queue("tx")
    ch = connect().channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"a", b"b"])

    ch.tx_select()
    method, _, body = ch.basic_get(queue)
    assert body == b"a"
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.tx_rollback()
    # still unacked (not requeued): the ack can be sent again and committed
    assert message_count(ch, queue) == 1
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.tx_commit()

    method, _, body = ch.basic_get(queue)
    assert body == b"b"
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.tx_rollback()
    ch.close()
    # the rolled back ack of 'b' was never applied: requeued on close
    ch = connect().channel()
    got = drain(ch, queue)
    assert got == [b"b"]


def test_tx_reject_applies_only_on_commit(connect, names):
    queue = names.queue("tx")
    ch = connect().channel()
    ch.queue_declare(queue=queue)
    publish_confirmed(ch, queue, [b"a"])
    ch.tx_select()
    method, _, _ = ch.basic_get(queue)
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=True)
    assert message_count(ch, queue) == 0
    ch.tx_rollback()
    assert message_count(ch, queue) == 0
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=True)
    ch.tx_commit()
    assert wait_count(ch, queue, 1) == 1


# ===========================================================================
# exchange-to-exchange bindings, headers exchange
# ===========================================================================


def test_exchange_to_exchange_bindings(conn, names):
    ch = conn.channel()
    src = names.exchange("src")
    dst = names.exchange("dst")
    ch.exchange_declare(exchange=src, exchange_type="direct")
    ch.exchange_declare(exchange=dst, exchange_type="fanout")
    ch.exchange_bind(destination=dst, source=src, routing_key="k")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange=dst)

    ch.confirm_delivery()
    ch.basic_publish(exchange=src, routing_key="k", body=b"via e2e")
    ch.basic_publish(exchange=src, routing_key="other", body=b"not bound")
    ch.basic_publish(exchange=dst, routing_key="anything", body=b"direct to dst")
    assert drain(ch, q) == [b"via e2e", b"direct to dst"]

    # a queue reachable by two paths gets one copy
    ch.queue_bind(queue=q, exchange=src, routing_key="k")
    ch.basic_publish(exchange=src, routing_key="k", body=b"two paths")
    assert drain(ch, q) == [b"two paths"]

    # chained: topic -> direct(src) -> fanout(dst)
    top = names.exchange("top")
    ch.exchange_declare(exchange=top, exchange_type="topic")
    ch.exchange_bind(destination=src, source=top, routing_key="*.k")
    ch.queue_unbind(queue=q, exchange=src, routing_key="k")
    ch.basic_publish(exchange=top, routing_key="x.k", body=b"no: src wants 'k'")
    ch.exchange_bind(destination=src, source=top, routing_key="k")
    ch.basic_publish(exchange=top, routing_key="k", body=b"chained")
    assert drain(ch, q) == [b"chained"]

    # unbinding stops the flow
    ch.exchange_unbind(destination=dst, source=src, routing_key="k")
    ch.basic_publish(exchange=src, routing_key="k", body=b"after unbind")
    assert drain(ch, q) == []

    missing = names.exchange("missing")
    with channel_closed(404, "NOT_FOUND - no exchange '%s' in vhost %s" % (missing, V)):
        conn.channel().exchange_bind(destination=dst, source=missing, routing_key="k")


HEADERS_BINDINGS = {
    "all": {"x-match": "all", "format": "pdf", "type": "report"},
    "any": {"x-match": "any", "format": "pdf", "type": "report"},
    "default_is_all": {"format": "pdf", "type": "report"},
    "no_args": {},
    "any_without_keys": {"x-match": "any"},
    "int": {"n": 1},
    "x_keys_ignored": {"x-match": "all", "x-foo": "bar"},
    "void_value": {"x-match": "all", "flag": None},
}
HEADERS_MESSAGES = [
    ("pdf+report", {"format": "pdf", "type": "report"}),
    ("pdf", {"format": "pdf"}),
    ("pdf+log", {"format": "pdf", "type": "log"}),
    ("zip+report", {"format": "zip", "type": "report"}),
    ("no-headers", None),
    ("empty-headers", {}),
    ("pdf+report+extra", {"format": "pdf", "type": "report", "other": 1}),
    ("n=1", {"n": 1}),
    ("n='1'", {"n": "1"}),
    ("x-foo", {"x-foo": "bar"}),
    ("flag=void", {"flag": None}),
    ("flag=str", {"flag": "x"}),
]
ALL_HEADER_MSGS = [b for b, _ in HEADERS_MESSAGES]
HEADERS_EXPECTED = {
    "all": ["pdf+report", "pdf+report+extra"],
    "any": ["pdf+report", "pdf", "pdf+log", "zip+report", "pdf+report+extra"],
    "default_is_all": ["pdf+report", "pdf+report+extra"],
    "no_args": ALL_HEADER_MSGS,
    "any_without_keys": [],
    "int": ["n=1"],  # value and type must match
    "x_keys_ignored": ALL_HEADER_MSGS,  # x-* binding keys are not matched
    "void_value": ["flag=void", "flag=str"],  # a void binding value = key present
}


def test_headers_exchange_x_match_all_and_any(conn, names):
    ch = conn.channel()
    exchange = names.exchange("headers")
    ch.exchange_declare(exchange=exchange, exchange_type="headers")
    queues = {}
    for name, args in HEADERS_BINDINGS.items():
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(queue=q, exchange=exchange, routing_key="ignored", arguments=args)
        queues[name] = q
    ch.confirm_delivery()
    for body, headers in HEADERS_MESSAGES:
        ch.basic_publish(
            exchange=exchange,
            routing_key="rk-%s" % body,
            body=body.encode(),
            properties=pika.BasicProperties(headers=headers),
        )
    got = {name: [b.decode() for b in drain(ch, q)] for name, q in queues.items()}
    assert got == HEADERS_EXPECTED

    # unbinding needs the same arguments
    ch.queue_unbind(queue=queues["all"], exchange=exchange, routing_key="ignored",
                    arguments=HEADERS_BINDINGS["all"])
    ch.basic_publish(exchange=exchange, routing_key="", body=b"again",
                     properties=pika.BasicProperties(headers={"format": "pdf", "type": "report"}))
    assert drain(ch, queues["all"]) == []
    assert drain(ch, queues["any"]) == [b"again"]


# ===========================================================================
# queue / exchange lifetimes, server-sent cancel
# ===========================================================================


def test_auto_delete_queue_deleted_when_last_consumer_cancels(connect, names):
    queue = names.queue("autodel")
    ch = connect().channel()
    ch.queue_declare(queue=queue, auto_delete=True)
    # never consumed: it stays
    pump(ch.connection, QUIET_S)
    assert queue_exists(queue)

    t1 = ch.basic_consume(queue, lambda *a: None)
    t2 = ch.basic_consume(queue, lambda *a: None)
    ch.basic_cancel(t1)
    assert consumer_count(connect().channel(), queue) == 1
    assert queue_exists(queue)
    ch.basic_cancel(t2)
    assert eventually(lambda: not queue_exists(queue))


def test_auto_delete_queue_deleted_when_consumer_connection_closes(connect, names):
    queue = names.queue("autodel")
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=queue, auto_delete=True)
    ch.basic_consume(queue, lambda *a: None)
    c.close()
    assert eventually(lambda: not queue_exists(queue))


def test_auto_delete_exchange_deleted_when_last_binding_goes(connect, names):
    exchange = names.exchange("autodel")
    ch = connect().channel()
    ch.exchange_declare(exchange=exchange, exchange_type="fanout", auto_delete=True)
    q1 = ch.queue_declare(queue="", exclusive=True).method.queue
    q2 = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q1, exchange=exchange)
    ch.queue_bind(queue=q2, exchange=exchange)
    ch.queue_unbind(queue=q1, exchange=exchange)
    ch.exchange_declare(exchange=exchange, passive=True)  # still there
    ch.queue_unbind(queue=q2, exchange=exchange)

    def gone():
        c = new_connection()
        try:
            c.channel().exchange_declare(exchange=exchange, passive=True)
            return False
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
        finally:
            if c.is_open:
                c.close()

    assert eventually(gone)


def test_exclusive_queue_deleted_when_connection_closes(connect, names):
    queue = names.queue("excl")
    owner = connect()
    ch = owner.channel()
    ch.queue_declare(queue=queue, exclusive=True)
    ch.basic_publish(exchange="", routing_key=queue, body=b"dies with it")
    sync_op(ch)
    other = connect().channel()
    with channel_closed(405, locked_text(queue)):
        other.queue_declare(queue=queue, passive=True)
    # closing only the channel does not delete it
    ch.close()
    assert owner.channel().queue_declare(queue=queue, passive=True).method.message_count == 1
    owner.close()
    assert eventually(lambda: not queue_exists(queue))


def test_server_sent_cancel_when_consumed_queue_is_deleted(connect, names):
    queue = names.queue("cancelled")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame))
    received = Collector(ack=True)
    tag = ch.basic_consume(queue, received)
    assert ch.consumer_tags == [tag]

    admin = connect().channel()
    publish_confirmed(admin, queue, [b"before delete"])
    assert pump_until(conn, lambda: len(received) == 1)

    admin.queue_delete(queue=queue)
    assert pump_until(conn, lambda: len(cancels) == 1)
    pump(conn, QUIET_S)
    assert len(cancels) == 1
    method = cancels[0].method
    assert isinstance(method, spec.Basic.Cancel)
    assert method.consumer_tag == tag
    assert ch.consumer_tags == []

    # the channel is unaffected
    assert ch.is_open
    q2 = ch.queue_declare(queue="", exclusive=True).method.queue
    publish_confirmed(ch, q2, [b"still works"])
    assert drain(ch, q2) == [b"still works"]


def test_consumer_cancel_ok_and_unknown_cancel(conn, names):
    queue = names.queue("q")
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    tag = ch.basic_consume(queue, lambda *a: None, consumer_tag="mine")
    assert tag == "mine"
    assert consumer_count(conn.channel(), queue) == 1
    ch.basic_cancel("mine")
    assert consumer_count(conn.channel(), queue) == 0
    # cancelling an unknown tag is not an error in RabbitMQ (cancel-ok)
    ch._impl._send_method(spec.Basic.Cancel(consumer_tag="never-existed"))
    sync_op(ch)
    assert ch.is_open


def test_channel_max_counts_open_channels_not_channel_numbers():
    # RabbitMQ lets a client open any channel number (aiormq's tests open
    # 65535 with channel_max 2047) and refuses only the channel that would
    # exceed the negotiated count.
    c = new_connection(channel_max=3)
    try:
        c.channel(65535)
        c.channel(1)
        c.channel(2)
        with connection_closed(
            530,
            "NOT_ALLOWED - number of channels opened (3) has reached the "
            "negotiated channel_max (3)",
        ):
            c.channel(3)
    finally:
        if c.is_open:
            c.close()


@pytest.mark.parametrize("n", [10, 1000])
def test_select_connection_publish_burst_then_close(ch, names, n):
    """SelectConnection-style pipelining: a burst of publishes and the
    connection's close written back to back, without waiting for anything.
    The close completes normally (200, no error on either side) and every
    publish written before the close is queued (RabbitMQ 3.10: all of them).
    """
    q = names.queue("pipeline")
    ch.queue_declare(q)
    state = {}

    def on_channel(channel):
        for _ in range(n):
            channel.basic_publish("", q, b"x" * 512)
        channel.connection.close()

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_open_error(connection, error):
        state["error"] = error
        connection.ioloop.stop()

    def on_close(connection, reason):
        state["reason"] = reason
        connection.ioloop.stop()

    connection = pika.SelectConnection(
        params(),
        on_open_callback=on_open,
        on_open_error_callback=on_open_error,
        on_close_callback=on_close,
    )
    connection.ioloop.call_later(5.0, connection.ioloop.stop)
    connection.ioloop.start()
    assert "error" not in state, state
    reason = state.get("reason")
    assert isinstance(reason, pika.exceptions.ConnectionClosedByClient), reason
    assert reason.reply_code == 200, reason
    assert eventually(lambda: message_count(ch, q) == n), message_count(ch, q)
