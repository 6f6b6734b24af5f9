"""RabbitMQ's official Python (pika) tutorials 1-7, each as a test, with the
programs kept close to the tutorial code and the outcomes asserted exactly.
Queue/exchange names get a unique suffix so the suite can share a broker.
"""

import re
import time
import uuid

import pika
import pytest

from conftest import (
    QUIET_S,
    WAIT_S,
    Collector,
    drain,
    message_count,
    pump,
    pump_until,
    queue_exists,
    eventually,
)

SERVER_NAMED = re.compile(r"amq\.gen-[A-Za-z0-9_-]+")


# ---------------------------------------------------------------------------
# 1. "Hello World!"
# ---------------------------------------------------------------------------


def test_t1_hello_world(connect, names):
    queue = names.queue("hello")

    # send.py
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=queue)
    channel.basic_publish(exchange="", routing_key=queue, body="Hello World!")
    connection.close()

    # receive.py
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=queue)
    received = Collector()
    channel.basic_consume(queue=queue, on_message_callback=received, auto_ack=True)
    assert pump_until(connection, lambda: len(received) == 1)
    pump(connection, QUIET_S)
    assert received.bodies == [b"Hello World!"]
    method = received.deliveries[0].method
    assert (method.exchange, method.routing_key, method.delivery_tag) == ("", queue, 1)
    connection.close()

    # auto_ack: nothing left behind
    assert message_count(connect().channel(), queue) == 0


# ---------------------------------------------------------------------------
# 2. Work queues
# ---------------------------------------------------------------------------


def new_task(connect, queue, message):
    """new_task.py"""
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )
    connection.close()


class Worker:
    """worker.py, with time.sleep(body.count('.')) replaced by a simulated
    work time: the ack is sent `work_s` seconds after delivery, while the
    test keeps pumping every connection (single-threaded)."""

    def __init__(self, connect, queue, work_s, prefetch=None):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=queue, durable=True)
        if prefetch is not None:
            self.channel.basic_qos(prefetch_count=prefetch)
        self.work_s = work_s
        self.received = []  # bodies in delivery order
        self.pending = []  # (ack_at, delivery_tag)
        self.acked = 0
        self.max_in_flight = 0
        self.delivery_modes = set()
        self.channel.basic_consume(queue=queue, on_message_callback=self.callback)

    def callback(self, ch, method, properties, body):
        self.received.append(body)
        self.delivery_modes.add(properties.delivery_mode)
        self.pending.append((time.monotonic() + self.work_s, method.delivery_tag))
        self.max_in_flight = max(self.max_in_flight, len(self.pending))
        self.tick()

    def tick(self):
        now = time.monotonic()
        while self.pending and self.pending[0][0] <= now:
            _, tag = self.pending.pop(0)
            self.channel.basic_ack(delivery_tag=tag)
            self.acked += 1


def run_workers(workers, done, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for w in workers:
            w.connection.process_data_events(time_limit=0.005)
            w.tick()
    return done()


def test_t2_work_queue_round_robin_without_prefetch(connect, names):
    """Without basic_qos RabbitMQ dispatches blindly in turn: the slow worker
    gets every other task even though it is still busy."""
    queue = names.queue("task_queue")
    slow = Worker(connect, queue, work_s=0.4)
    fast = Worker(connect, queue, work_s=0.0)
    tasks = [("task %d%s" % (i, "." * i)).encode() for i in range(1, 11)]
    for t in tasks:
        new_task(connect, queue, t)

    assert run_workers([slow, fast], lambda: slow.acked + fast.acked == 10)
    assert slow.received == tasks[0::2]
    assert fast.received == tasks[1::2]
    assert slow.max_in_flight > 1  # tasks were pushed while it was busy
    assert slow.delivery_modes == {2} and fast.delivery_modes == {2}
    assert message_count(connect().channel(), queue) == 0


def test_t2_fair_dispatch_with_prefetch_one(connect, names):
    """basic_qos(prefetch_count=1): a busy worker gets no new task until it
    acked the previous one, so the fast worker does most of the work."""
    queue = names.queue("task_queue")
    slow = Worker(connect, queue, work_s=0.5, prefetch=1)
    fast = Worker(connect, queue, work_s=0.0, prefetch=1)
    tasks = [("task %d" % i).encode() for i in range(1, 11)]
    for t in tasks:
        new_task(connect, queue, t)

    assert run_workers([slow, fast], lambda: slow.acked + fast.acked == 10)
    assert slow.max_in_flight == 1
    assert fast.max_in_flight == 1
    assert len(fast.received) > len(slow.received)
    assert len(fast.received) >= 8
    assert 1 <= len(slow.received) <= 2
    assert sorted(slow.received + fast.received) == sorted(tasks)
    assert slow.received[0] == b"task 1"  # slow registered first
    assert message_count(connect().channel(), queue) == 0


def test_t2_manual_ack_unacked_task_redelivered_to_other_worker(connect, names):
    """Message acknowledgment: a worker that dies mid-task loses nothing."""
    queue = names.queue("task_queue")
    dying = Worker(connect, queue, work_s=60, prefetch=1)
    new_task(connect, queue, b"important task")
    assert run_workers([dying], lambda: len(dying.received) == 1)
    dying.connection.close()

    survivor = Worker(connect, queue, work_s=0.0, prefetch=1)
    assert run_workers([survivor], lambda: survivor.acked == 1)
    assert survivor.received == [b"important task"]
    assert message_count(connect().channel(), queue) == 0


# ---------------------------------------------------------------------------
# 3. Publish/Subscribe
# ---------------------------------------------------------------------------


class LogReceiver:
    """receive_logs.py (and its direct/topic variants)."""

    def __init__(self, connect, exchange, exchange_type, binding_keys=("",)):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.queue_name = result.method.queue
        for key in binding_keys:
            self.channel.queue_bind(exchange=exchange, queue=self.queue_name, routing_key=key)
        self.received = Collector()
        self.channel.basic_consume(
            queue=self.queue_name, on_message_callback=self.received, auto_ack=True
        )

    @property
    def bodies(self):
        return self.received.bodies

    @property
    def keys(self):
        return [d.method.routing_key for d in self.received.deliveries]


def emit(connect, exchange, exchange_type, messages):
    """emit_log.py / emit_log_direct.py / emit_log_topic.py: list of
    (routing_key, body)."""
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
    for key, body in messages:
        channel.basic_publish(exchange=exchange, routing_key=key, body=body)
    connection.close()


def test_t3_publish_subscribe_fanout(connect, names):
    exchange = names.exchange("logs")

    # a log emitted before anyone listens is lost
    emit(connect, exchange, "fanout", [("", b"info: nobody hears this")])

    r1 = LogReceiver(connect, exchange, "fanout")
    r2 = LogReceiver(connect, exchange, "fanout")
    both = [r1.connection, r2.connection]
    assert SERVER_NAMED.fullmatch(r1.queue_name), r1.queue_name
    assert SERVER_NAMED.fullmatch(r2.queue_name), r2.queue_name
    assert r1.queue_name != r2.queue_name

    logs = [b"info: Hello World!", b"warning: disk 90%", b"error: disk full"]
    # fanout ignores the routing key
    emit(connect, exchange, "fanout", [("", logs[0]), ("whatever", logs[1]), ("x.y", logs[2])])
    assert pump_until(both, lambda: len(r1.received) == 3 and len(r2.received) == 3)
    pump(both, QUIET_S)
    assert r1.bodies == logs
    assert r2.bodies == logs
    assert all(d.method.exchange == exchange for d in r1.received.deliveries)

    # exclusive queue: deleted as soon as its consumer's connection closes
    r1.connection.close()
    assert eventually(lambda: not queue_exists(r1.queue_name))
    assert queue_exists(r2.queue_name)

    emit(connect, exchange, "fanout", [("", b"only r2")])
    assert pump_until([r2.connection], lambda: len(r2.received) == 4)
    assert r2.bodies[-1] == b"only r2"


def test_t3_server_named_queues_are_exclusive_and_unique(connect, names):
    connection = connect()
    channel = connection.channel()
    declared = [channel.queue_declare(queue="", exclusive=True).method for _ in range(5)]
    queues = [m.queue for m in declared]
    assert all(SERVER_NAMED.fullmatch(q) for q in queues), queues
    assert len(set(queues)) == 5
    assert all(m.message_count == 0 and m.consumer_count == 0 for m in declared)

    other = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.queue_declare(queue=queues[0], passive=True)
    assert err.value.reply_code == 405


# ---------------------------------------------------------------------------
# 4. Routing
# ---------------------------------------------------------------------------


def test_t4_routing_direct_with_multiple_bindings(connect, names):
    exchange = names.exchange("direct_logs")
    # receive_logs_direct.py warning error > logs_from_rabbit.log
    to_file = LogReceiver(connect, exchange, "direct", ["warning", "error"])
    # receive_logs_direct.py info warning error
    to_screen = LogReceiver(connect, exchange, "direct", ["info", "warning", "error"])
    # binding the same key twice is idempotent (no duplicate delivery)
    to_screen.channel.queue_bind(exchange=exchange, queue=to_screen.queue_name, routing_key="error")
    both = [to_file.connection, to_screen.connection]

    emit(
        connect,
        exchange,
        "direct",
        [
            ("info", b"info: Hello World!"),
            ("warning", b"warning: Hello World!"),
            ("error", b"error: Run. Run. Or it will explode."),
            ("debug", b"debug: nobody listens"),
            ("Error", b"Error: keys are case sensitive"),
            ("error ", b"error : keys are not trimmed"),
        ],
    )
    assert pump_until(both, lambda: len(to_file.received) == 2 and len(to_screen.received) == 3)
    pump(both, QUIET_S)
    assert to_file.bodies == [b"warning: Hello World!", b"error: Run. Run. Or it will explode."]
    assert to_file.keys == ["warning", "error"]
    assert to_screen.bodies == [
        b"info: Hello World!",
        b"warning: Hello World!",
        b"error: Run. Run. Or it will explode.",
    ]
    assert to_screen.keys == ["info", "warning", "error"]

    # unbinding one key stops just that key
    to_screen.channel.queue_unbind(queue=to_screen.queue_name, exchange=exchange, routing_key="info")
    emit(connect, exchange, "direct", [("info", b"info: 2"), ("error", b"error: 2")])
    assert pump_until(both, lambda: len(to_file.received) == 3 and len(to_screen.received) == 4)
    pump(both, QUIET_S)
    assert to_file.bodies[-1] == b"error: 2"
    assert to_screen.bodies[-1] == b"error: 2"
    assert len(to_screen.received) == 4


# ---------------------------------------------------------------------------
# 5. Topics
# ---------------------------------------------------------------------------


def test_t5_topics_tutorial_examples(connect, names):
    exchange = names.exchange("topic_logs")
    q1 = LogReceiver(connect, exchange, "topic", ["*.orange.*"])
    q2 = LogReceiver(connect, exchange, "topic", ["*.*.rabbit", "lazy.#"])
    both = [q1.connection, q2.connection]

    keys = [
        "quick.orange.rabbit",  # Q1, Q2
        "lazy.orange.elephant",  # Q1, Q2
        "quick.orange.fox",  # Q1
        "lazy.brown.fox",  # Q2
        "lazy.pink.rabbit",  # Q2 once, although it matches both bindings
        "quick.brown.fox",  # none
        "orange",  # none
        "quick.orange.new.rabbit",  # none
        "lazy.orange.new.rabbit",  # Q2
        "quick.orange.male.rabbit",  # none
        "lazy",  # Q2: '#' matches zero words
    ]
    emit(connect, exchange, "topic", [(k, k.encode()) for k in keys])
    expected_q1 = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
    expected_q2 = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "lazy.orange.new.rabbit",
        "lazy",
    ]
    assert pump_until(
        both,
        lambda: len(q1.received) == len(expected_q1) and len(q2.received) == len(expected_q2),
    )
    pump(both, QUIET_S)
    assert q1.keys == expected_q1
    assert q2.keys == expected_q2
    assert q2.bodies == [k.encode() for k in expected_q2]


# binding pattern -> routing keys (in publish order) RabbitMQ delivers.
# Words are split on '.', so '' is zero words, 'a.' is ['a', ''], '..' is
# ['', '', ''].  '*' matches exactly one (possibly empty) word, '#' zero or
# more words.
TOPIC_KEYS = [
    "", "a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..",
    "a.b.c", "x.a.b", "b.a", "a.a", "x.a.y", "a.b.b", "ab",
]
TOPIC_EXPECTED = {
    "#": TOPIC_KEYS,
    "#.#": TOPIC_KEYS,
    "*": ["a", "b", "ab"],
    "": [""],
    "a": ["a"],
    "a.#": ["a", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", "a.b.c", "a.a", "a.b.b"],
    "#.a": ["a", ".a", "b.a", "a.a"],
    "a.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"],
    "a.#.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"],
    "a.*.b": ["a.x.b", "a..b", "a.b.b"],
    "*.#": [k for k in TOPIC_KEYS if k != ""],
    "#.*": [k for k in TOPIC_KEYS if k != ""],
    "a.*": ["a.b", "a.", "a.a"],
    "*.a": [".a", "b.a", "a.a"],
    "*.*": ["a.b", "a.", ".a", ".", "b.a", "a.a"],
    "*.#.*": [
        "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "a.b.c",
        "x.a.b", "b.a", "a.a", "x.a.y", "a.b.b",
    ],
    "#.b.#": ["b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.c", "x.a.b", "b.a", "a.b.b"],
    "#.a.#": [
        "a", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", "a.b.c", "x.a.b",
        "b.a", "a.a", "x.a.y", "a.b.b",
    ],
    "a..b": ["a..b"],
    "a.": ["a."],
    ".a": [".a"],
    ".": ["."],
}


def test_t5_topic_pattern_edge_cases(connect, names):
    connection = connect()
    channel = connection.channel()
    exchange = names.exchange("topic_edge")
    channel.exchange_declare(exchange=exchange, exchange_type="topic")
    queues = {}
    for pattern in TOPIC_EXPECTED:
        q = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(exchange=exchange, queue=q, routing_key=pattern)
        queues[pattern] = q

    channel.confirm_delivery()  # each publish is routed before the next
    for key in TOPIC_KEYS:
        channel.basic_publish(exchange=exchange, routing_key=key, body=key.encode())

    got = {p: [b.decode() for b in drain(channel, q)] for p, q in queues.items()}
    assert got == TOPIC_EXPECTED


def test_t5_topic_multiple_matching_bindings_deliver_once(connect, names):
    connection = connect()
    channel = connection.channel()
    exchange = names.exchange("topic_dup")
    channel.exchange_declare(exchange=exchange, exchange_type="topic")
    q = channel.queue_declare(queue="", exclusive=True).method.queue
    for pattern in ["#", "a.*", "*.b", "a.b", "a.#"]:
        channel.queue_bind(exchange=exchange, queue=q, routing_key=pattern)
    channel.confirm_delivery()
    channel.basic_publish(exchange=exchange, routing_key="a.b", body=b"once")
    channel.basic_publish(exchange=exchange, routing_key="zzz", body=b"hash only")
    assert drain(channel, q) == [b"once", b"hash only"]


# ---------------------------------------------------------------------------
# 6. RPC
# ---------------------------------------------------------------------------


def fib(n):
    if n == 0:
        return 0
    elif n == 1:
        return 1
    else:
        return fib(n - 1) + fib(n - 2)


class RpcServer:
    """rpc_server.py"""

    def __init__(self, connect, queue):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=queue)
        self.requests = []
        self.channel.basic_qos(prefetch_count=1)
        self.channel.basic_consume(queue=queue, on_message_callback=self.on_request)

    def on_request(self, ch, method, props, body):
        n = int(body)
        self.requests.append((n, props.reply_to, props.correlation_id))
        response = fib(n)
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(response),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)


class FibonacciRpcClient:
    """rpc_client.py, with the server's connection pumped alongside."""

    def __init__(self, connect, queue, server):
        self.queue = queue
        self.server = server
        self.connection = connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(
            queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
        )
        self.responses = {}
        self.ignored = []

    def on_response(self, ch, method, props, body):
        self.responses[props.correlation_id] = body
        if props.correlation_id not in self.pending:
            self.ignored.append(props.correlation_id)

    pending = ()

    def send(self, n):
        corr_id = str(uuid.uuid4())
        self.pending = set(self.pending) | {corr_id}
        self.channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=corr_id),
            body=str(n),
        )
        return corr_id

    def wait(self, corr_ids):
        conns = [self.connection, self.server.connection]
        assert pump_until(conns, lambda: all(c in self.responses for c in corr_ids))
        return [int(self.responses[c]) for c in corr_ids]

    def call(self, n):
        return self.wait([self.send(n)])[0]


def test_t6_rpc(connect, names):
    queue = names.queue("rpc_queue")
    server = RpcServer(connect, queue)
    client = FibonacciRpcClient(connect, queue, server)
    assert SERVER_NAMED.fullmatch(client.callback_queue)

    # " [x] Requesting fib(30)" -- smaller n keeps the test fast
    assert client.call(10) == 55
    assert client.call(0) == 0
    assert client.call(1) == 1

    # several outstanding requests, answered by correlation id
    ns = [20, 2, 15, 7, 12]
    ids = [client.send(n) for n in ns]
    assert client.wait(ids) == [fib(n) for n in ns]
    assert len(set(ids)) == len(ids)

    assert [r[0] for r in server.requests] == [10, 0, 1] + ns
    assert all(r[1] == client.callback_queue for r in server.requests)
    assert client.ignored == []

    # a response with an unknown correlation id is ignored by the client
    server.channel.basic_publish(
        exchange="",
        routing_key=client.callback_queue,
        properties=pika.BasicProperties(correlation_id="bogus"),
        body=b"-1",
    )
    assert pump_until([client.connection, server.connection], lambda: client.ignored == ["bogus"])
    assert client.call(6) == 8
    assert message_count(connect().channel(), queue) == 0


# ---------------------------------------------------------------------------
# 7. Publisher confirms
# ---------------------------------------------------------------------------


def test_t7_publisher_confirms_individually(connect, names):
    queue = names.queue("confirms")
    channel = connect().channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()
    n = 200
    for i in range(n):
        # BlockingChannel.basic_publish waits for the broker's basic.ack and
        # raises NackError/UnroutableError otherwise
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=b"msg %d" % i,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    # confirmed means enqueued: the count is exact right away
    assert message_count(channel, queue) == n
    assert drain(channel, queue) == [b"msg %d" % i for i in range(n)]


def test_t7_mandatory_unroutable_raises(connect, names):
    queue = names.queue("confirms")
    exchange = names.exchange("confirm_direct")
    channel = connect().channel()
    channel.queue_declare(queue=queue)
    channel.exchange_declare(exchange=exchange, exchange_type="direct")
    channel.queue_bind(queue=queue, exchange=exchange, routing_key="routed")
    channel.confirm_delivery()

    channel.basic_publish(exchange=exchange, routing_key="routed", body=b"ok", mandatory=True)

    with pytest.raises(pika.exceptions.UnroutableError) as err:
        channel.basic_publish(
            exchange=exchange, routing_key="unroutable", body=b"returned", mandatory=True
        )
    assert len(err.value.messages) == 1
    returned = err.value.messages[0]
    assert isinstance(returned.method, pika.spec.Basic.Return)
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == exchange
    assert returned.method.routing_key == "unroutable"
    assert returned.body == b"returned"

    # same through the default exchange to a queue that does not exist
    with pytest.raises(pika.exceptions.UnroutableError) as err:
        channel.basic_publish(
            exchange="", routing_key=names.unique("no-such-queue"), body=b"r2", mandatory=True
        )
    assert err.value.messages[0].method.reply_code == 312

    # without mandatory an unroutable message is simply confirmed and dropped
    channel.basic_publish(exchange=exchange, routing_key="unroutable", body=b"dropped")

    # the channel is still fine and only the routable message was queued
    assert channel.is_open
    assert drain(channel, queue) == [b"ok"]


def test_t7_nack_when_queue_rejects_publish(connect, names):
    """A confirmed publish that the broker refuses (x-overflow=reject-publish
    on a full queue) comes back as basic.nack -> pika NackError."""
    queue = names.queue("bounded")
    channel = connect().channel()
    channel.queue_declare(
        queue=queue, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=queue, body=b"1")
    channel.basic_publish(exchange="", routing_key=queue, body=b"2")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish(exchange="", routing_key=queue, body=b"3")
    assert channel.is_open
    assert drain(channel, queue) == [b"1", b"2"]
