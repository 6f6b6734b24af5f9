"""Shared fixtures and helpers for the pika end-to-end suite.

The suite is written against real RabbitMQ (3.x) first and encodes its exact
behaviour; it is then pointed at warren.  Broker address:

    WARREN_AMQP_HOST  (default 127.0.0.1)
    WARREN_AMQP_PORT  (default 5672)

Every test gets unique queue/exchange names (``names`` fixture, uuid suffix)
so the suite can run against a shared broker, and whatever a test declared
through ``names`` is deleted afterwards.

Helpers in this module are imported by the test modules with
``from conftest import ...`` (pytest puts this directory on sys.path).
"""

import os
import signal
import time
import uuid

import pika
import pytest

HOST = os.environ.get("WARREN_AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_AMQP_PORT", "5672"))
USER = os.environ.get("WARREN_AMQP_USER", "guest")
PASSWORD = os.environ.get("WARREN_AMQP_PASSWORD", "guest")

# Hard upper bound for a single test, so a hanging broker cannot hang the run.
TEST_TIMEOUT_S = int(os.environ.get("WARREN_TEST_TIMEOUT", "30"))

# Default time to wait for something that must happen.
WAIT_S = 5.0
# Time to keep listening when asserting that something does NOT happen.
QUIET_S = 0.3


def params(**overrides):
    """ConnectionParameters for the broker under test."""
    kw = dict(
        host=HOST,
        port=PORT,
        credentials=pika.PlainCredentials(USER, PASSWORD),
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=10,
        blocked_connection_timeout=10,
    )
    kw.update(overrides)
    return pika.ConnectionParameters(**kw)


def new_connection(**overrides):
    return pika.BlockingConnection(params(**overrides))


# ---------------------------------------------------------------------------
# per-test timeout
# ---------------------------------------------------------------------------


class PerTestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _per_test_timeout():
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise PerTestTimeout("test exceeded %ss" % TEST_TIMEOUT_S)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# unique names + cleanup
# ---------------------------------------------------------------------------


class Names:
    """Hands out unique queue/exchange names and remembers them for cleanup."""

    def __init__(self):
        self.queues = []
        self.exchanges = []

    @staticmethod
    def unique(base):
        return "%s-%s" % (base, uuid.uuid4().hex[:12])

    def queue(self, base="q"):
        name = self.unique(base)
        self.queues.append(name)
        return name

    def exchange(self, base="x"):
        name = self.unique(base)
        self.exchanges.append(name)
        return name

    def track_queue(self, name):
        """Register a (server-named) queue for cleanup."""
        self.queues.append(name)
        return name

    def cleanup(self):
        if not self.queues and not self.exchanges:
            return
        try:
            conn = new_connection()
        except Exception:
            return
        try:
            ch = None
            for kind, name in [("q", n) for n in self.queues] + [
                ("x", n) for n in self.exchanges
            ]:
                try:
                    if ch is None or not ch.is_open:
                        ch = conn.channel()
                    if kind == "q":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
                except Exception:
                    ch = None
        finally:
            try:
                conn.close()
            except Exception:
                pass


@pytest.fixture
def names():
    n = Names()
    yield n
    n.cleanup()


# ---------------------------------------------------------------------------
# connections / channels
# ---------------------------------------------------------------------------


@pytest.fixture
def connect(names):
    """Factory: connect(**param_overrides) -> BlockingConnection.

    Every connection opened through it is closed at teardown (before the
    ``names`` cleanup runs, because this fixture depends on ``names``).
    """
    opened = []

    def _connect(**overrides):
        c = new_connection(**overrides)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


# ---------------------------------------------------------------------------
# event pumping helpers
# ---------------------------------------------------------------------------


def _as_list(conns):
    if isinstance(conns, (list, tuple)):
        return list(conns)
    return [conns]


def pump(conns, seconds):
    """Process I/O on all given connections for (about) `seconds`."""
    conns = _as_list(conns)
    deadline = time.monotonic() + seconds
    while True:
        for c in conns:
            if c.is_open:
                c.process_data_events(time_limit=0.01)
        if time.monotonic() >= deadline:
            return


def pump_until(conns, predicate, timeout=WAIT_S):
    """Process I/O on `conns` until predicate() is truthy or timeout.

    Returns the final value of predicate().
    """
    conns = _as_list(conns)
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return predicate()
        for c in conns:
            if c.is_open:
                c.process_data_events(time_limit=0.01)


def eventually(predicate, timeout=WAIT_S, interval=0.02):
    """Poll predicate() (which may do its own I/O) until truthy or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


class Delivery:
    __slots__ = ("channel", "method", "properties", "body")

    def __init__(self, channel, method, properties, body):
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body

    def __repr__(self):
        return "Delivery(%r, tag=%s, redelivered=%s)" % (
            self.body,
            self.method.delivery_tag,
            self.method.redelivered,
        )


class Collector:
    """A basic_consume callback that records every delivery.

    ack=True acks each message from inside the callback.
    """

    def __init__(self, ack=False):
        self.ack = ack
        self.deliveries = []

    def __call__(self, channel, method, properties, body):
        self.deliveries.append(Delivery(channel, method, properties, body))
        if self.ack:
            channel.basic_ack(delivery_tag=method.delivery_tag)

    @property
    def bodies(self):
        return [d.body for d in self.deliveries]

    def __len__(self):
        return len(self.deliveries)


def queue_exists(queue):
    """True if `queue` can be passively declared from a fresh connection.

    Returns False on 404, True on success or on 405 (exclusive queue owned by
    another connection), and raises on any other channel error.
    """
    c = new_connection()
    try:
        ch = c.channel()
        try:
            ch.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return False
            if e.reply_code == 405:
                return True
            raise
    finally:
        if c.is_open:
            c.close()


def message_count(ch, queue):
    """Ready message count of `queue` via passive declare on `ch`."""
    return ch.queue_declare(queue, passive=True).method.message_count


def consumer_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.consumer_count


def drain(ch, queue, limit=10000):
    """basic_get (auto-ack) until get-empty; returns list of bodies."""
    out = []
    for _ in range(limit):
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)
    raise AssertionError("queue %s did not drain" % queue)


def wait_count(ch, queue, expected, timeout=WAIT_S):
    """Wait until the queue's ready count equals `expected`; return it."""
    last = [None]

    def check():
        last[0] = message_count(ch, queue)
        return last[0] == expected

    eventually(check, timeout=timeout)
    return last[0]
