"""The broker under test, chosen by MQTT_TARGET:

- `warren` (default): $WARREN_BIN as a child process on free ports (AMQP,
  MQTT, MQTT over WebSocket at /ws, management API), so that it can be
  restarted gracefully (SIGTERM) or killed with -9 and started again on
  the same data directory. Nothing is skipped.
- `mosquitto`: Debian's mosquitto 2.x with a TCP and a WebSocket listener
  and persistence in a temporary directory. It exists to check that the
  tests themselves are right: tests marked `amqp` (they need the AMQP side)
  or `warren_only` (where mosquitto legitimately differs from what warren
  must do; each such mark says why) are skipped.
- `rabbitmq`: Debian's RabbitMQ (3.10, MQTT 3.1.1 only) with rabbitmq_mqtt,
  rabbitmq_web_mqtt and rabbitmq_management on private ports, to check the
  `amqp` tests against the behaviour warren copies. Tests marked `v5` (or
  parametrized with MQTT 5) and `warren_only` are skipped.

Every test uses its own topics and client ids (the `uid` fixture), so one
broker serves the whole session; `mk` makes paho clients and `raw` raw
socket clients that are closed after the test.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from mqttutil import Client, V311, V5
from mqttraw import Raw

TARGET = os.environ.get("MQTT_TARGET", "warren")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, timeout=30, what="broker", log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            if log is not None:
                with open(log, "rb") as f:
                    tail = "\n" + f.read()[-2000:].decode(errors="replace")
            raise AssertionError(f"{what} exited at start: {proc.returncode}{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


class Broker:
    """What the tests see of a broker: its ports, restart() (graceful),
    kill9_restart(), api() (management HTTP API) and amqp() (pika)."""

    kind = "?"
    amqp_port = http_port = None

    def __init__(self, base):
        self.base = base
        self.mqtt_port, self.ws_port = free_port(), free_port()

    def restart(self):
        self.stop()
        self.start()

    def kill9_restart(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, method, path, body=None, user="guest", password="guest"):
        """The management API: (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method=method)
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", "Basic " + cred)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, None

    def amqp(self, vhost="/", user="guest", password="guest"):
        import pika
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.amqp_port, vhost, pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10))


class Warren(Broker):
    kind = "warren"

    def __init__(self, base):
        super().__init__(base)
        self.bin = os.environ["WARREN_BIN"]
        self.amqp_port, self.http_port = free_port(), free_port()
        self.data = os.path.join(base, "data")
        self.log_path = os.path.join(base, "warren.log")
        self.log = open(self.log_path, "ab")
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
                self.mqtt_port, self.ws_port = free_port(), free_port()

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--listen", f"127.0.0.1:{self.amqp_port}",
             "--mqtt-listen", f"127.0.0.1:{self.mqtt_port}",
             "--mqtt-ws-listen", f"127.0.0.1:{self.ws_port}",
             "--management-listen", f"127.0.0.1:{self.http_port}",
             "--no-prometheus", "--data-dir", self.data],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        for port in (self.mqtt_port, self.ws_port, self.http_port, self.amqp_port):
            wait_listening(port, self.proc, what="warren", log=self.log_path)


class Mosquitto(Broker):
    kind = "mosquitto"

    def __init__(self, base):
        super().__init__(base)
        self.conf = os.path.join(base, "mosquitto.conf")
        passwd = os.path.join(base, "passwd")
        # guest/guest as warren's default user; no username is still let in.
        subprocess.run(["mosquitto_passwd", "-b", "-c", passwd, "guest", "guest"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(passwd, 0o600)
        with open(self.conf, "w") as f:
            # Run as whoever runs the tests (as root, mosquitto would
            # switch to a `mosquitto` user that cannot use the temp dir).
            user = "user root\n" if os.geteuid() == 0 else ""
            f.write(f"""{user}persistence true
persistence_location {base}/
log_dest file {base}/mosquitto.log
log_type all
allow_anonymous true
password_file {passwd}
set_tcp_nodelay true
max_queued_messages 10000
listener {self.mqtt_port} 127.0.0.1
listener {self.ws_port} 127.0.0.1
protocol websockets
""")
        self.proc = None
        self.start()

    def start(self):
        with open(os.path.join(self.base, "mosquitto.stderr"), "ab") as err:
            self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        for port in (self.mqtt_port, self.ws_port):
            wait_listening(port, self.proc, what="mosquitto")


class RabbitMQ(Broker):
    """A private RabbitMQ node, as tests/common/rabbitmq.rs starts one."""

    kind = "rabbitmq"
    BIN = "/usr/lib/rabbitmq/bin/"

    def __init__(self, base):
        super().__init__(base)
        self.amqp_port, self.http_port = free_port(), free_port()
        self.dist = free_port()
        self.node = f"warren-mqtt-test-{os.getpid()}@localhost"
        os.makedirs(os.path.join(base, "log"), exist_ok=True)
        with open(os.path.join(base, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_mqtt,rabbitmq_web_mqtt,rabbitmq_management].\n")
        with open(os.path.join(base, "rabbitmq.conf"), "w") as f:
            f.write(f"""mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}
web_mqtt.tcp.port = {self.ws_port}
web_mqtt.tcp.ip = 127.0.0.1
management.tcp.port = {self.http_port}
management.tcp.ip = 127.0.0.1
""")
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

    def start(self):
        self.proc = subprocess.Popen([self.BIN + "rabbitmq-server"], env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(self.amqp_port, self.proc, 90, "rabbitmq")
        subprocess.run([self.BIN + "rabbitmqctl", "-n", self.node, "await_startup"],
                       env=self.env(), check=True, stdout=subprocess.DEVNULL, timeout=120)
        for port in (self.mqtt_port, self.ws_port, self.http_port):
            wait_listening(port, self.proc, 60, "rabbitmq")

    def stop(self):
        subprocess.run([self.BIN + "rabbitmqctl", "-n", self.node, "stop"], env=self.env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        super().stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "amqp: needs the AMQP side (warren or RabbitMQ)")
    config.addinivalue_line("markers",
                            "warren_only: mosquitto legitimately differs here (the mark says why)")
    config.addinivalue_line("markers", "v5: MQTT 5 only (RabbitMQ 3.10 has no MQTT 5)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        is_v5 = ("v5" in item.keywords or params.get("version") == V5 or params.get("proto") == 5
                 or params.get("cli_version") == "mqttv5")
        if TARGET == "mosquitto":
            for mark in ("amqp", "warren_only"):
                if mark in item.keywords:
                    item.add_marker(pytest.mark.skip(reason=f"{mark}: not checked on mosquitto"))
        elif TARGET == "rabbitmq":
            if is_v5:
                item.add_marker(pytest.mark.skip(reason="MQTT 5: RabbitMQ 3.10 has none"))
            elif "warren_only" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="warren_only"))


@pytest.fixture(scope="session")
def broker():
    base = tempfile.mkdtemp(prefix=f"mqtt-{TARGET}-")
    cls = {"warren": Warren, "mosquitto": Mosquitto, "rabbitmq": RabbitMQ}[TARGET]
    b = cls(base)
    try:
        yield b
    finally:
        b.stop()
        if os.environ.get("MQTT_KEEP_DATA"):
            print(f"\nbroker data and log kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def uid():
    """A short unique tag for a test's topics and client ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=[V311, V5], ids=["v311", "v5"])
def version(request):
    return request.param


@pytest.fixture
def mk(broker):
    """mk(client_id, version=V5, **kw): a connected paho Client; all are
    dropped after the test."""
    made = []

    def make(client_id, version=V5, **kw):
        c = Client(broker, client_id, version, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.drop()
        except Exception:
            pass


@pytest.fixture
def raw(broker):
    """raw(version=4): a raw socket to the broker's MQTT port; all are
    closed after the test."""
    made = []

    def make(version=4, port=None):
        r = Raw(port or broker.mqtt_port, version=version)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def check_alive(broker, mk, uid):
    """check_alive(): another client can still connect and exchange a
    message (after a test provoked the broker with bad input)."""

    def check():
        c = mk(f"{uid}-alive", V311)
        c.subscribe(f"alive/{uid}", 1)
        c.publish(f"alive/{uid}", b"still here", 1)
        assert c.get().payload == b"still here"
        c.disconnect()

    return check
