"""Streams over AMQP 0-9-1 (issue 20): the broker under the pika suite.

The suite is written against RabbitMQ 3.10 first and encodes its exact
behaviour (RABBITMQ_FACTS.md beside this file); then it runs against warren.
STREAM_TARGET chooses the broker:

- `warren` (default): with WARREN_AMQP_PORT set, the broker at
  WARREN_AMQP_HOST:WARREN_AMQP_PORT (its management API at
  WARREN_MGMT_PORT when set); otherwise $WARREN_BIN as a child process on
  free ports (AMQP, management API) with its data directory under
  STREAM_TEST_BASE (default: target/python_streams/ of this repository), so
  that tests can restart it (SIGTERM) or kill it with -9 on the same data.
- `rabbitmq`: with WARREN_AMQP_PORT set, that RabbitMQ; otherwise a private
  Debian RabbitMQ node (rabbitmq_management enabled) with its own node
  name, ports and directories under STREAM_TEST_BASE, stopped at the end.

An external broker (WARREN_AMQP_PORT) can be restarted by the tests only
when STREAM_RESTART_CMD and STREAM_KILL9_CMD are set (shell commands that
return once the broker listens again); without them the restart tests are
skipped. `warren ctl`/`rabbitmqctl` tests need the management port (warren)
or the node name (STREAM_RABBITMQ_NODE) for an external broker.

Tests of RabbitMQ 3.13 features (stream filtering) are marked `rmq313` and
skipped with STREAM_TARGET=rabbitmq (the installed RabbitMQ is 3.10).

Helpers are imported by the test modules with `from conftest import ...`.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pika
import pytest

TARGET = os.environ.get("STREAM_TARGET", "warren")
assert TARGET in ("warren", "rabbitmq"), f"STREAM_TARGET={TARGET}: warren or rabbitmq"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEST_TIMEOUT_S = int(os.environ.get("STREAM_TEST_TIMEOUT", "120"))
WAIT_S = 10.0
QUIET_S = 0.5

S = {"x-queue-type": "stream"}


def stream_args(**kw):
    """{"x-queue-type": "stream"} plus kw with `_` as `-` (x_max_age -> x-max-age)."""
    a = dict(S)
    a.update({k.replace("_", "-"): v for k, v in kw.items()})
    return a


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, timeout=60, what="broker", log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            if log is not None and os.path.exists(log):
                with open(log, "rb") as f:
                    tail = "\n" + f.read()[-3000:].decode(errors="replace")
            raise AssertionError(f"{what} exited at start: {proc.returncode}{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


# ---------------------------------------------------------------------------
# brokers
# ---------------------------------------------------------------------------


class Broker:
    """What the tests see of a broker: host/amqp_port, connect(), api()
    (management HTTP API), ctl() (list commands), restart() (graceful) and
    kill9_restart(), can_restart."""

    kind = TARGET
    host = "127.0.0.1"
    amqp_port = http_port = None
    can_restart = True

    def params(self, **overrides):
        kw = dict(
            host=self.host,
            port=self.amqp_port,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=10,
            stack_timeout=15,
            blocked_connection_timeout=15,
        )
        kw.update(overrides)
        return pika.ConnectionParameters(**kw)

    def connect(self, **overrides):
        return pika.BlockingConnection(self.params(**overrides))

    def api(self, method, path, body=None):
        """The management API: (status, parsed JSON or None)."""
        if self.http_port is None:
            pytest.skip("no management port for this broker (WARREN_MGMT_PORT)")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.host}:{self.http_port}{path}", data=data, method=method
        )
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, None

    def ctl_list_queues(self, *columns):
        """`warren ctl -q list_queues COLS` or `rabbitmqctl -q list_queues
        COLS`: (exit code, stdout)."""
        raise NotImplementedError

    def restart(self):
        raise NotImplementedError

    def kill9_restart(self):
        raise NotImplementedError

    def stop(self):
        pass


class External(Broker):
    def __init__(self):
        self.host = os.environ.get("WARREN_AMQP_HOST", "127.0.0.1")
        self.amqp_port = int(os.environ["WARREN_AMQP_PORT"])
        mgmt = os.environ.get("WARREN_MGMT_PORT")
        self.http_port = int(mgmt) if mgmt else None
        self.restart_cmd = os.environ.get("STREAM_RESTART_CMD")
        self.kill9_cmd = os.environ.get("STREAM_KILL9_CMD")
        self.can_restart = bool(self.restart_cmd and self.kill9_cmd)

    def restart(self):
        subprocess.run(self.restart_cmd, shell=True, check=True, timeout=300)

    def kill9_restart(self):
        subprocess.run(self.kill9_cmd, shell=True, check=True, timeout=300)

    def ctl_list_queues(self, *columns):
        if TARGET == "warren":
            if self.http_port is None or not os.environ.get("WARREN_BIN"):
                pytest.skip("warren ctl needs WARREN_BIN and WARREN_MGMT_PORT")
            cmd = [os.environ["WARREN_BIN"], "ctl", "--host", self.host,
                   "--port", str(self.http_port), "-q", "list_queues", *columns]
        else:
            node = os.environ.get("STREAM_RABBITMQ_NODE")
            if not node:
                pytest.skip("rabbitmqctl needs STREAM_RABBITMQ_NODE")
            cmd = [RabbitMQ.BIN + "rabbitmqctl", "-n", node, "-q", "list_queues", *columns]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return out.returncode, out.stdout


class Warren(Broker):
    def __init__(self, base):
        self.base = base
        self.bin = os.environ.get("WARREN_BIN")
        if not self.bin:
            raise AssertionError(
                "STREAM_TARGET=warren needs WARREN_BIN (the warren binary) or WARREN_AMQP_PORT"
            )
        self.amqp_port, self.http_port = free_port(), free_port()
        self.data = os.path.join(base, "data")
        self.log_path = os.path.join(base, "warren.log")
        self.proc = None
        # A port free a moment ago may have been taken since (as another
        # test's client connection's own port): pick new ones and retry.
        for attempt in range(5):
            try:
                self.start()
                return
            except AssertionError as e:
                if "Address already in use" not in str(e) or attempt == 4:
                    raise
                self.amqp_port, self.http_port = free_port(), free_port()

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.bin, "--listen", f"127.0.0.1:{self.amqp_port}",
                 "--management-listen", f"127.0.0.1:{self.http_port}",
                 "--no-prometheus", "--data-dir", self.data],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        for port in (self.amqp_port, self.http_port):
            wait_listening(port, self.proc, what="warren", log=self.log_path)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def kill9_restart(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()

    def ctl_list_queues(self, *columns):
        out = subprocess.run(
            [self.bin, "ctl", "--host", "127.0.0.1", "--port", str(self.http_port),
             "-q", "list_queues", *columns],
            capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout


class RabbitMQ(Broker):
    """A private RabbitMQ node, as tests/common/rabbitmq.rs starts one."""

    BIN = "/usr/lib/rabbitmq/bin/"

    def __init__(self, base):
        if not os.path.exists(self.BIN + "rabbitmq-server"):
            raise AssertionError("STREAM_TARGET=rabbitmq needs Debian's rabbitmq-server")
        self.base = base
        self.amqp_port, self.http_port, self.dist = free_port(), free_port(), free_port()
        self.node = f"streamtest-{os.getpid()}@localhost"
        os.makedirs(os.path.join(base, "log"), exist_ok=True)
        with open(os.path.join(base, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        with open(os.path.join(base, "rabbitmq.conf"), "w") as f:
            f.write(f"management.tcp.port = {self.http_port}\n"
                    "management.tcp.ip = 127.0.0.1\n")
        self.proc = None
        self.start()

    def env(self):
        b = self.base
        return {**os.environ, "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.amqp_port),
                "RABBITMQ_DIST_PORT": str(self.dist),
                "RABBITMQ_MNESIA_BASE": os.path.join(b, "mnesia"),
                "RABBITMQ_LOG_BASE": os.path.join(b, "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(b, "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": os.path.join(b, "rabbitmq")}

    def rabbitmqctl(self, *args, timeout=120):
        return subprocess.run([self.BIN + "rabbitmqctl", "-n", self.node, *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def start(self):
        # start_new_session: a kill -9 of the node must not take pytest along.
        self.proc = subprocess.Popen([self.BIN + "rabbitmq-server"], env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_listening(self.amqp_port, self.proc, 120, "rabbitmq")
        out = self.rabbitmqctl("await_startup")
        assert out.returncode == 0, out.stderr
        wait_listening(self.http_port, self.proc, 120, "rabbitmq management")

    def stop(self):
        if self.proc is None:
            return
        self.rabbitmqctl("stop")
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def kill9_restart(self):
        out = self.rabbitmqctl("eval", "os:getpid().")
        beam = int(out.stdout.strip().strip('"'))
        os.kill(beam, signal.SIGKILL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # The node name must be free again in epmd before the restart.
        deadline = time.time() + 30
        while time.time() < deadline:
            names = subprocess.run(["epmd", "-names"], capture_output=True, text=True)
            if self.node.split("@")[0] not in names.stdout:
                break
            time.sleep(0.2)
        self.start()

    def ctl_list_queues(self, *columns):
        out = self.rabbitmqctl("-q", "list_queues", *columns)
        return out.returncode, out.stdout


def pytest_configure(config):
    config.addinivalue_line("markers", "rmq313: RabbitMQ 3.13 feature (skipped on RabbitMQ 3.10)")
    config.addinivalue_line("markers", "restart: restarts or kills the broker")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TARGET == "rabbitmq" and "rmq313" in item.keywords:
            item.add_marker(pytest.mark.skip(
                reason="stream filtering is RabbitMQ 3.13; the RabbitMQ here is 3.10"))


@pytest.fixture(scope="session")
def broker():
    if os.environ.get("WARREN_AMQP_PORT"):
        b = External()
        yield b
        return
    top = os.environ.get("STREAM_TEST_BASE") or os.path.join(ROOT, "target", "python_streams")
    base = os.path.join(top, f"{TARGET}-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    b = Warren(base) if TARGET == "warren" else RabbitMQ(base)
    try:
        yield b
    finally:
        b.stop()
        if os.environ.get("STREAM_KEEP_DATA"):
            print(f"\nbroker data and log kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def restartable(broker):
    if not broker.can_restart:
        pytest.skip("an external broker without STREAM_RESTART_CMD / STREAM_KILL9_CMD")
    return broker


# ---------------------------------------------------------------------------
# per-test timeout
# ---------------------------------------------------------------------------


class PerTestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _per_test_timeout():
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
# names, connections
# ---------------------------------------------------------------------------


def unique(base="s"):
    return "%s-%s" % (base, uuid.uuid4().hex[:10])


@pytest.fixture
def names(broker):
    """names(base) -> a unique queue name, deleted after the test."""
    made = []

    def make(base="s"):
        n = unique(base)
        made.append(n)
        return n

    yield make
    if not made:
        return
    try:
        c = broker.connect()
    except Exception:
        return
    try:
        for n in made:
            try:
                c.channel().queue_delete(n)
            except Exception:
                if not c.is_open:
                    c = broker.connect()
    finally:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture
def connect(broker):
    """connect() -> a BlockingConnection closed after the test."""
    opened = []

    def make(**overrides):
        c = broker.connect(**overrides)
        opened.append(c)
        return c

    yield make
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


@pytest.fixture
def stream(ch, names):
    """stream(**args) -> the name of a new stream (declared with x-queue-type
    stream plus args, `_` as `-` in their names)."""

    def make(**args):
        q = names("s")
        ch.queue_declare(q, durable=True, arguments=stream_args(**args))
        return q

    return make


# ---------------------------------------------------------------------------
# closes
# ---------------------------------------------------------------------------


def q_text(template, q):
    """A RABBITMQ_FACTS.md text with `<q>` replaced by the queue name."""
    return template.replace("<q>", q)


def closed_by(fn):
    """Run fn(); return ("channel"|"connection", code, text) for the close
    it provoked, or None when it returned normally."""
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as e:
        return ("channel", e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e:
        return ("connection", e.reply_code, e.reply_text)
    return None


def watch_channel(ch):
    """A list that gets the ChannelClosedByBroker of `ch` when the broker
    closes it (for asynchronous methods such as basic.ack)."""
    got = []
    ch._impl.add_on_close_callback(lambda _c, reason: got.append(reason))
    return got


def _poll(conns):
    """One round of I/O on every connection: a blocking wait of up to 20 ms
    for a single connection, non-blocking polls for several (so that an
    idle one does not hold back a busy one)."""
    if len(conns) == 1:
        if conns[0].is_open:
            conns[0].process_data_events(time_limit=0.02)
        return
    for c in conns:
        if c.is_open:
            c.process_data_events(time_limit=0)
    time.sleep(0.001)


def pump(conns, seconds):
    """Process I/O on `conns` for (about) `seconds`."""
    if not isinstance(conns, (list, tuple)):
        conns = [conns]
    deadline = time.monotonic() + seconds
    while True:
        _poll(conns)
        if time.monotonic() >= deadline:
            return


def pump_until(conns, predicate, timeout=WAIT_S):
    """Process I/O on `conns` until predicate() is truthy or `timeout` s
    passed; the last value of predicate()."""
    if not isinstance(conns, (list, tuple)):
        conns = [conns]
    deadline = time.monotonic() + timeout
    while True:
        r = predicate()
        if r or time.monotonic() >= deadline:
            return r
        _poll(conns)


def eventually(predicate, timeout=WAIT_S, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        r = predicate()
        if r or time.monotonic() >= deadline:
            return r
        time.sleep(interval)


# ---------------------------------------------------------------------------
# publishing and consuming
# ---------------------------------------------------------------------------


def publish(ch, q, bodies, props=None, exchange=""):
    """basic.publish each body to `q` (on a channel in confirm mode each
    publish waits for its ack)."""
    for b in bodies:
        ch.basic_publish(exchange, q, b, props)


def confirmed_channel(conn):
    c = conn.channel()
    c.confirm_delivery()
    return c


class Delivery:
    __slots__ = ("method", "props", "body")

    def __init__(self, method, props, body):
        self.method, self.props, self.body = method, props, body

    @property
    def offset(self):
        return (self.props.headers or {}).get("x-stream-offset")

    def __repr__(self):
        return "Delivery(offset=%r, %r)" % (self.offset, self.body)


class Reader:
    """A stream consumer on its own channel that records deliveries and
    (unless ack=False) acks each one when it arrives."""

    def __init__(self, conn, q, offset="unset", prefetch=100, ack=True, arguments=None,
                 exclusive=False):
        self.conn = conn
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.got = []
        self.ack = ack
        args = dict(arguments or {})
        if offset != "unset":
            args["x-stream-offset"] = offset
        self.tag = self.ch.basic_consume(q, self._on, auto_ack=False, arguments=args or None,
                                         exclusive=exclusive)

    def _on(self, ch, method, props, body):
        self.got.append(Delivery(method, props, body))
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    @property
    def offsets(self):
        return [d.offset for d in self.got]

    @property
    def bodies(self):
        return [d.body for d in self.got]

    def wait(self, n, timeout=WAIT_S):
        """Pump until n deliveries have arrived (or timeout); the list."""
        pump_until(self.conn, lambda: len(self.got) >= n, timeout)
        return self.got

    def quiet(self, seconds=QUIET_S):
        pump(self.conn, seconds)
        return self.got

    def cancel(self):
        if self.ch.is_open:
            self.ch.basic_cancel(self.tag)


def read(broker, q, n, offset="first", prefetch=100, timeout=WAIT_S, settle=QUIET_S):
    """A fresh connection reads `q` from `offset`: the first n deliveries,
    plus whatever else arrives within `settle` s."""
    c = broker.connect()
    try:
        r = Reader(c, q, offset, prefetch)
        r.wait(n, timeout)
        r.quiet(settle)
        return r.got
    finally:
        try:
            c.close()
        except Exception:
            pass


def assert_alive(broker):
    """Another client can still declare a stream, publish with a confirm
    and read the message back (after a test provoked the broker)."""
    c = broker.connect()
    q = unique("alive")
    try:
        ch = c.channel()
        ch.queue_declare(q, durable=True, arguments=dict(S))
        ch.confirm_delivery()
        ch.basic_publish("", q, b"still here")
        r = Reader(c, q, "first", 10)
        got = r.wait(1)
        assert [d.body for d in got] == [b"still here"], got
        assert got[0].offset == 0
        r.cancel()
        ch.queue_delete(q)
    finally:
        c.close()


def message_count(broker, q):
    c = broker.connect()
    try:
        r = c.channel().queue_declare(q, passive=True)
        return r.method.message_count, r.method.consumer_count
    finally:
        c.close()
