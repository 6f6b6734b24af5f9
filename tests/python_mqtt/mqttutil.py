"""A paho-mqtt (2.x) client wrapped for tests: connect and wait for the
CONNACK, publish and wait for the broker's acknowledgement, subscribe and
get the SUBACK codes, received messages in a queue. Each client runs its
own network loop thread that does NOT reconnect (paho's loop_start would),
so a connection the broker closes stays closed."""

import queue
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5

WAIT = 5.0    # seconds to wait for something that must happen
QUIET = 0.5   # seconds to listen when asserting that nothing arrives


def props(ptype, **kw):
    """paho Properties for packet type ptype ("PUBLISH", "CONNECT",
    "SUBSCRIBE", "WILLMESSAGE", "DISCONNECT") from keyword names (paho's
    own: MessageExpiryInterval, UserProperty=[(k, v)], ...)."""
    p = Properties(getattr(PacketTypes, ptype))
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def wait_for(cond, timeout=WAIT, what="condition", step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


class ConnectRefused(Exception):
    def __init__(self, code):
        super().__init__(f"CONNACK {code}")
        self.code = code


class Client:
    def __init__(self, broker, client_id, version=V5, clean=True, session_expiry=None,
                 will=None, username="guest", password="guest", transport="tcp",
                 keepalive=30, connect_props=None, port=None, connect=True):
        self.broker, self.version = broker, version
        self.client_id = client_id
        kw = {}
        if version != V5:
            kw["clean_session"] = clean
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=version, transport=transport, **kw)
        if transport == "websockets":
            self.c.ws_set_options(path="/ws")
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            self.c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                            will.get("retain", False), will.get("props"))
        self.messages = queue.Queue()
        self.connack = None
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.disconnect_reason = None
        self.suback = {}
        self.unsuback = {}
        self.puback = {}
        self._lock = threading.Lock()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish
        self._stop = False
        self._thread = None
        self.transport = transport
        if port is None:
            port = broker.ws_port if transport == "websockets" else broker.mqtt_port
        self.port = port
        cprops = connect_props
        if version == V5 and session_expiry is not None:
            cprops = cprops or props("CONNECT")
            cprops.SessionExpiryInterval = session_expiry
        self._connect_args = dict(clean_start=clean if version == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                  properties=cprops, keepalive=keepalive)
        if connect:
            self.connect()

    # -- callbacks (paho's network thread) --
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = (flags.session_present, reason_code.value, properties)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code.value if reason_code is not None else None
        self.disconnect_props = properties
        self.gone.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback[mid] = [rc.value for rc in reason_codes]

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self.unsuback[mid] = [rc.value for rc in reason_codes] if reason_codes else []

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.puback[mid] = reason_code.value if reason_code is not None else 0

    def _run(self):
        while not self._stop:
            rc = self.c.loop(0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break
        self.gone.set()

    # -- API --
    def connect(self):
        a = self._connect_args
        self.c.connect("127.0.0.1", self.port, a["keepalive"], clean_start=a["clean_start"],
                       properties=a["properties"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self.connected.wait(WAIT) and not self.gone.is_set():
            raise AssertionError(f"{self.client_id}: no CONNACK")
        if self.connack is None:
            raise AssertionError(f"{self.client_id}: closed before CONNACK")
        if self.connack[1] != 0:
            self.stop_loop()
            raise ConnectRefused(self.connack[1])
        return self

    @property
    def session_present(self):
        return self.connack[0]

    def subscribe(self, topic, qos=0, options=None, properties=None):
        """Subscribe to one filter (or a list of (filter, qos/options));
        the SUBACK reason codes."""
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        elif isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        return wait_for(lambda: self.suback.get(mid), what=f"SUBACK to {topic}")

    def unsubscribe(self, topic):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        return wait_for(lambda: mid in self.unsuback and (self.unsuback[mid] or [0]),
                        what=f"UNSUBACK to {topic}")

    def publish(self, topic, payload, qos=0, retain=False, properties=None, wait=True):
        """Publish; with QoS > 0 (and wait), the PUBACK/PUBCOMP's reason
        code once the broker has acknowledged it."""
        info = self.c.publish(topic, payload, qos, retain, properties)
        if wait and qos > 0:
            wait_for(lambda: info.mid in self.puback, what=f"ack of publish to {topic}")
            return self.puback[info.mid]
        return info

    def get(self, timeout=WAIT):
        """The next message (AssertionError if none in time)."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout} s") from None

    def take(self, n, timeout=WAIT):
        """n messages (waiting at most `timeout` s in all)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.001, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: {len(out)} of {n} messages within {timeout} s: "
                    f"{[m.payload[:40] for m in out[:10]]}") from None
        return out

    def none(self, quiet=QUIET):
        """Assert that no message arrives within `quiet` s."""
        try:
            m = self.messages.get(timeout=quiet)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m.topic} {m.payload!r}")

    def drain(self, quiet=QUIET):
        """Every message that arrives until `quiet` s pass without one."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def stop_loop(self):
        self._stop = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def disconnect(self, reason=None, properties=None):
        """A clean DISCONNECT (v5: with reason code `reason`)."""
        if self.gone.is_set():
            return
        if reason is not None:
            from paho.mqtt.reasoncodes import ReasonCode
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
            self.c.disconnect(rc, properties)
        else:
            self.c.disconnect(properties=properties)
        wait_for(lambda: self.gone.is_set(), what="disconnect")
        self.stop_loop()

    def drop(self):
        """Close the TCP connection without a DISCONNECT (an abnormal
        disconnection, as far as the broker knows)."""
        self.stop_loop()
        sock = self.c.socket()
        # Under paho's WebSocket wrapper, the TCP socket itself.
        sock = getattr(sock, "_socket", sock)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def is_connected(self):
        return self.c.is_connected() and not self.gone.is_set()
