"""The programs of the seed tutorial (Chinese RabbitMQ/pika intro,
/work/shared/seed/000_b09b520c1ec17933.txt), as written there, adapted only to
the broker port and to unique queue names instead of 'hello'.

The seed shows:
  * a producer: connect, channel, queue_declare('hello'), basic_publish to the
    default exchange with routing_key='hello', body 'Hello World!', close;
  * a consumer: connect, channel, queue_declare('hello') again (idempotent,
    "declare on both sides because you don't know who runs first"),
    basic_consume('hello', callback) without auto_ack and, in the first
    version, without ever acking; it prints the Basic.Deliver it gets
    (consumer_tag=ctag1.<hex>, delivery_tag=1, exchange='', redelivered=False,
    routing_key='hello');
  * three consumers run at once receive successive messages in turn;
  * a consumer killed before acking: the message goes to the next consumer;
    all three killed: the message stays and the first consumer restarted
    gets it;
  * the consumer that acks (ch.basic_ack) and then dies: nobody gets the
    message again;
  * no_ack/auto_ack (commented out in the seed): message is gone once sent;
  * durable=True queue on both sides + delivery_mode=2 messages, producer run
    three times, consumer acking all of them.
(The broker restart part of the seed is not in this file.)

The seed text itself contains no exchange (fanout/direct/topic) code: those
are covered by test_tutorials.py.
"""

import re

import pika
import pytest

from conftest import (
    QUIET_S,
    Collector,
    drain,
    eventually,
    message_count,
    pump,
    pump_until,
)


# ---------------------------------------------------------------------------
# The seed's programs
# ---------------------------------------------------------------------------


def run_producer(connect, queue, body=b"Hello World!", durable=False, persistent=False):
    """The seed's producer program (one run = one message)."""
    connection = connect()
    channel = connection.channel()
    if durable:
        channel.queue_declare(queue=queue, durable=True)
    else:
        channel.queue_declare(queue=queue)
    kwargs = {}
    if persistent:
        kwargs["properties"] = pika.BasicProperties(delivery_mode=2)
    channel.basic_publish(exchange="", routing_key=queue, body=body, **kwargs)
    connection.close()


class Consumer:
    """The seed's consumer program, started but driven by the test's pump."""

    def __init__(self, connect, queue, ack=False, auto_ack=False, durable=False, declare=True):
        self.connection = connect()
        self.channel = self.connection.channel()
        if declare:
            if durable:
                self.channel.queue_declare(queue=queue, durable=True)
            else:
                self.channel.queue_declare(queue=queue)
        self.collector = Collector(ack=ack)
        self.consumer_tag = self.channel.basic_consume(
            queue, self.collector, auto_ack=auto_ack
        )

    @property
    def deliveries(self):
        return self.collector.deliveries

    @property
    def bodies(self):
        return self.collector.bodies

    def kill(self):
        """The seed stops the consumer process (Ctrl+C / stop in PyCharm)."""
        self.connection.close()


def conns(*consumers):
    return [c.connection for c in consumers if c.connection.is_open]


# ---------------------------------------------------------------------------
# 2、基本示例: hello world
# ---------------------------------------------------------------------------


def test_hello_world_producer_then_consumer(connect, names):
    queue = names.queue("hello")
    run_producer(connect, queue)

    consumer = Consumer(connect, queue)
    assert pump_until(consumer.connection, lambda: len(consumer.deliveries) == 1)
    pump(consumer.connection, QUIET_S)
    assert consumer.bodies == [b"Hello World!"]

    d = consumer.deliveries[0]
    # What the seed prints: Basic.Deliver([consumer_tag=ctag1.<hex>,
    # delivery_tag=1, exchange=, redelivered=False, routing_key=hello])
    assert isinstance(d.method, pika.spec.Basic.Deliver)
    assert d.method.consumer_tag == consumer.consumer_tag
    assert re.fullmatch(r"ctag1\.[0-9a-f]{32}", d.method.consumer_tag)
    assert d.method.delivery_tag == 1
    assert d.method.exchange == ""
    assert d.method.redelivered is False
    assert d.method.routing_key == queue
    # published without properties -> <BasicProperties> with nothing set
    assert d.properties.delivery_mode is None
    assert d.properties.content_type is None
    assert d.properties.headers is None


def test_consumer_started_first_receives_each_new_message(connect, names):
    """"如果此时单独在运行一下生产者, 直接可以从消费者看到新收到的消息"."""
    queue = names.queue("hello")
    consumer = Consumer(connect, queue)
    pump(consumer.connection, QUIET_S)
    assert consumer.bodies == []

    for i in range(1, 4):
        run_producer(connect, queue, body=b"Hello World! %d" % i)
        assert pump_until(consumer.connection, lambda: len(consumer.deliveries) == i)
        d = consumer.deliveries[-1]
        assert d.body == b"Hello World! %d" % i
        assert d.method.delivery_tag == i
        assert d.method.redelivered is False
    pump(consumer.connection, QUIET_S)
    assert len(consumer.deliveries) == 3


def test_both_sides_declare_the_queue(connect, names):
    """Declaring 'hello' on both sides is idempotent; the second declare
    reports the messages already waiting."""
    queue = names.queue("hello")
    run_producer(connect, queue)
    run_producer(connect, queue)

    connection = connect()
    channel = connection.channel()
    ok = channel.queue_declare(queue=queue)
    assert ok.method.queue == queue
    assert ok.method.message_count == 2
    assert ok.method.consumer_count == 0


def test_consumer_first_without_declare_fails(connect, names):
    """"如果消费者没声明, 且消费者先运行的话, 就会报错"."""
    queue = names.queue("hello")
    connection = connect()
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        channel.basic_consume(queue, lambda *a: None)
    assert err.value.reply_code == 404
    assert err.value.reply_text == "NOT_FOUND - no queue '%s' in vhost '/'" % queue
    # only the channel is closed, the connection stays usable
    assert connection.is_open
    assert connection.channel().queue_declare(queue=queue).method.message_count == 0


def test_unacked_message_returns_to_queue_when_consumer_exits(connect, names):
    """The first consumer never acks (basic_ack commented out): after it
    exits the message is still in the queue."""
    queue = names.queue("hello")
    run_producer(connect, queue)
    consumer = Consumer(connect, queue)
    assert pump_until(consumer.connection, lambda: len(consumer.deliveries) == 1)

    check = connect().channel()
    assert message_count(check, queue) == 0  # delivered, unacked
    consumer.kill()

    again = Consumer(connect, queue)
    assert pump_until(again.connection, lambda: len(again.deliveries) == 1)
    assert again.bodies == [b"Hello World!"]
    assert again.deliveries[0].method.redelivered is True


# ---------------------------------------------------------------------------
# 运行三个接收者: round-robin
# ---------------------------------------------------------------------------


def test_three_consumers_receive_in_turn(connect, names):
    queue = names.queue("hello")
    c1 = Consumer(connect, queue)
    c2 = Consumer(connect, queue)
    c3 = Consumer(connect, queue)
    everyone = conns(c1, c2, c3)

    # "运行发送者, 可以看到被第一个接收者给收到信息了; 第二次运行发送者,
    # 第二个接收者收到信息了; 第三次 ... 第三个接收者"
    for i in range(1, 7):
        run_producer(connect, queue, body=b"msg %d" % i)
        assert pump_until(
            everyone,
            lambda: len(c1.deliveries) + len(c2.deliveries) + len(c3.deliveries) == i,
        )
    pump(everyone, QUIET_S)
    assert c1.bodies == [b"msg 1", b"msg 4"]
    assert c2.bodies == [b"msg 2", b"msg 5"]
    assert c3.bodies == [b"msg 3", b"msg 6"]
    for c in (c1, c2, c3):
        assert [d.method.delivery_tag for d in c.deliveries] == [1, 2]
        assert all(d.method.redelivered is False for d in c.deliveries)


# ---------------------------------------------------------------------------
# consumer killed before ack -> redelivered to the next consumer
# ---------------------------------------------------------------------------


def test_killed_consumer_message_goes_to_next_consumer(connect, names):
    queue = names.queue("hello")
    # the seed's second consumer: callback sleeps 60s and never acks
    c1 = Consumer(connect, queue)
    c2 = Consumer(connect, queue)
    c3 = Consumer(connect, queue)

    run_producer(connect, queue)
    assert pump_until(conns(c1, c2, c3), lambda: len(c1.deliveries) == 1)
    pump(conns(c1, c2, c3), QUIET_S)
    assert (len(c1.deliveries), len(c2.deliveries), len(c3.deliveries)) == (1, 0, 0)
    assert c1.deliveries[0].method.redelivered is False

    # "执行producer后, 立即关闭第一个comsumer, 这样消息就会... 跑到第二个comsumer去"
    c1.kill()
    assert pump_until(conns(c2, c3), lambda: len(c2.deliveries) == 1)
    pump(conns(c2, c3), QUIET_S)
    assert c2.bodies == [b"Hello World!"]
    assert c2.deliveries[0].method.redelivered is True
    assert c3.bodies == []

    # "关闭第二个comsumer, 第三个comsumer收到信息"
    c2.kill()
    assert pump_until(conns(c3), lambda: len(c3.deliveries) == 1)
    assert c3.bodies == [b"Hello World!"]
    assert c3.deliveries[0].method.redelivered is True

    # all three closed: the message is still waiting in the queue
    c3.kill()
    check = connect().channel()
    assert eventually(lambda: message_count(check, queue) == 1)

    # "此时再去开启第一个comsumer, 这时第一个comsumer会将消息给接收过来"
    # this time it is the third version of the consumer, which acks
    c1 = Consumer(connect, queue, ack=True)
    assert pump_until(c1.connection, lambda: len(c1.deliveries) == 1)
    assert c1.bodies == [b"Hello World!"]
    assert c1.deliveries[0].method.redelivered is True
    assert c1.deliveries[0].method.delivery_tag == 1
    c1.kill()
    assert message_count(check, queue) == 0


def test_consumer_acks_then_dies_message_not_redelivered(connect, names):
    """Third consumer version: basic_ack at the end of the callback. Once it
    acked, killing it does not make the next consumer receive the message."""
    queue = names.queue("hello")
    c1 = Consumer(connect, queue, ack=True)
    c2 = Consumer(connect, queue, ack=True)

    run_producer(connect, queue, body=b"first")
    assert pump_until(conns(c1, c2), lambda: len(c1.deliveries) == 1)
    pump(conns(c1, c2), QUIET_S)  # let the ack reach the broker
    c1.kill()
    pump(conns(c2), QUIET_S)
    assert c2.bodies == []

    # c2 is alive and is now the only consumer: it gets the next message
    run_producer(connect, queue, body=b"second")
    assert pump_until(conns(c2), lambda: len(c2.deliveries) == 1)
    pump(conns(c2), QUIET_S)
    assert c2.bodies == [b"second"]
    assert c2.deliveries[0].method.redelivered is False
    check = connect().channel()
    assert message_count(check, queue) == 0


def test_no_ack_consumer_message_lost_when_it_dies(connect, names):
    """no_ack=True (auto_ack in pika 1.x): "如果接收消息, 机器宕机消息就丢了"."""
    queue = names.queue("hello")
    c1 = Consumer(connect, queue, auto_ack=True)
    c2 = Consumer(connect, queue, ack=True)
    run_producer(connect, queue, body=b"lost")
    assert pump_until(conns(c1, c2), lambda: len(c1.deliveries) == 1)
    assert c1.bodies == [b"lost"]
    c1.kill()  # dies before "processing" the message
    pump(conns(c2), QUIET_S)
    assert c2.bodies == []
    check = connect().channel()
    assert message_count(check, queue) == 0
    assert drain(check, queue) == []


# ---------------------------------------------------------------------------
# durable queue + delivery_mode=2
# ---------------------------------------------------------------------------


def test_durable_queue_and_persistent_messages(connect, names):
    queue = names.queue("hello")
    # "将producer代码执行三次, 将三个消息放入队列"
    for _ in range(3):
        run_producer(connect, queue, durable=True, persistent=True)

    # "要注意需要在producer端和comsumer端都要写durable=True": a consumer that
    # declares the queue without durable=True is refused
    wrong = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        wrong.queue_declare(queue=queue)
    assert err.value.reply_code == 406
    assert err.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in "
        "vhost '/': received 'false' but current is 'true'" % queue
    )

    consumer = Consumer(connect, queue, ack=True, durable=True)
    assert pump_until(consumer.connection, lambda: len(consumer.deliveries) == 3)
    pump(consumer.connection, QUIET_S)
    assert consumer.bodies == [b"Hello World!"] * 3
    assert [d.method.delivery_tag for d in consumer.deliveries] == [1, 2, 3]
    assert all(d.properties.delivery_mode == 2 for d in consumer.deliveries)
    assert all(d.method.redelivered is False for d in consumer.deliveries)

    consumer.kill()
    check = connect().channel()
    ok = check.queue_declare(queue=queue, durable=True)
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0
