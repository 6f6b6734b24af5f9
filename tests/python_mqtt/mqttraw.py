"""A raw-socket MQTT client for the tests that need exact control of the
bytes on the wire (dropping between PUBREC and PUBREL, malformed packets,
a client that never acknowledges). Packets are encoded by hand here, for
MQTT 3.1.1 (protocol level 4) and 5.0 (level 5)."""

import socket
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 properties: id -> (name, type).
PROPS = {
    0x01: ("payload_format", "byte"), 0x02: ("message_expiry", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"), 0x0B: ("subscription_id", "varint"),
    0x11: ("session_expiry", "u32"), 0x12: ("assigned_client_id", "str"),
    0x13: ("server_keep_alive", "u16"), 0x15: ("auth_method", "str"),
    0x16: ("auth_data", "bin"), 0x17: ("request_problem_info", "byte"),
    0x18: ("will_delay", "u32"), 0x19: ("request_response_info", "byte"),
    0x1A: ("response_info", "str"), 0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"), 0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"), 0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"), 0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"), 0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_sub_available", "byte"), 0x29: ("sub_id_available", "byte"),
    0x2A: ("shared_sub_available", "byte"),
}
PROP_IDS = {name: (pid, typ) for pid, (name, typ) in PROPS.items()}


class Closed(Exception):
    """The broker closed the connection."""


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def string(s):
    b = s if isinstance(s, (bytes, bytearray)) else s.encode()
    return struct.pack("!H", len(b)) + b


def properties(props):
    """Encode a property list: a dict name -> value, or a list of (name,
    value) pairs (for repeated ones such as user_property)."""
    if props is None:
        return b"\x00"
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    for name, value in items:
        pid, typ = PROP_IDS[name]
        body += varint(pid)
        if typ == "byte":
            body += bytes([value])
        elif typ == "u16":
            body += struct.pack("!H", value)
        elif typ == "u32":
            body += struct.pack("!I", value)
        elif typ == "varint":
            body += varint(value)
        elif typ in ("str", "bin"):
            body += string(value)
        elif typ == "pair":
            body += string(value[0]) + string(value[1])
    return varint(len(body)) + bytes(body)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect(client_id, version=4, clean=True, keepalive=60, username="guest",
            password="guest", will=None, props=None):
    """A CONNECT packet. will: dict(topic, payload, qos=0, retain=False,
    props=None)."""
    flags = 0x02 if clean else 0
    payload = string(client_id)
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if version == 5:
            payload += properties(will.get("props"))
        payload += string(will["topic"]) + string(will["payload"])
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += string(password)
    body = string("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += properties(props)
    return packet(CONNECT, 0, body + payload)


def publish(topic, payload, qos=0, pid=None, retain=False, dup=False, version=4, props=None):
    flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    body = string(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += properties(props)
    return packet(PUBLISH, flags, body + (payload if isinstance(payload, bytes) else payload.encode()))


def ack(ptype, pid, reason=None):
    """PUBACK/PUBREC/PUBREL/PUBCOMP (PUBREL has the reserved flags 0010)."""
    body = struct.pack("!H", pid)
    if reason is not None:
        body += bytes([reason])
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def subscribe(pid, filters, version=4, props=None):
    """filters: list of (filter, options byte: QoS plus v5 option bits)."""
    body = struct.pack("!H", pid)
    if version == 5:
        body += properties(props)
    for f, opts in filters:
        body += string(f) + bytes([opts])
    return packet(SUBSCRIBE, 2, body)


def disconnect(version=4, reason=None):
    if version == 5 and reason is not None:
        return packet(DISCONNECT, 0, bytes([reason, 0]))
    return packet(DISCONNECT, 0, b"")


def decode_properties(data, pos):
    """(dict name -> value, with user_property a list of pairs and
    subscription_id a list), new position."""
    n, pos = read_varint(data, pos)
    end = pos + n
    out = {}
    while pos < end:
        pid, pos = read_varint(data, pos)
        name, typ = PROPS[pid]
        if typ == "byte":
            v, pos = data[pos], pos + 1
        elif typ == "u16":
            v, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif typ == "u32":
            v, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif typ == "varint":
            v, pos = read_varint(data, pos)
        elif typ in ("str", "bin"):
            ln = struct.unpack_from("!H", data, pos)[0]
            v = bytes(data[pos + 2:pos + 2 + ln])
            v = v.decode() if typ == "str" else v
            pos += 2 + ln
        else:
            k, pos = read_str(data, pos)
            val, pos = read_str(data, pos)
            v = (k, val)
        if name in ("user_property", "subscription_id"):
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    return out, end


def read_varint(data, pos):
    n, mult = 0, 1
    while True:
        b = data[pos]
        pos += 1
        n += (b & 0x7F) * mult
        if not b & 0x80:
            return n, pos
        mult *= 128


def read_str(data, pos):
    ln = struct.unpack_from("!H", data, pos)[0]
    return bytes(data[pos + 2:pos + 2 + ln]).decode(), pos + 2 + ln


class Packet:
    """A packet read from the broker, with its fields decoded by type."""

    def __init__(self, ptype, flags, body, version):
        self.type, self.flags, self.body = ptype, flags, body
        self.props = {}
        if ptype == CONNACK:
            self.session_present = bool(body[0] & 1)
            self.code = body[1]
            if version == 5 and len(body) > 2:
                self.props, _ = decode_properties(body, 2)
        elif ptype == PUBLISH:
            self.qos = (flags >> 1) & 3
            self.dup = bool(flags & 8)
            self.retain = bool(flags & 1)
            self.topic, pos = read_str(body, 0)
            self.pid = None
            if self.qos:
                self.pid = struct.unpack_from("!H", body, pos)[0]
                pos += 2
            if version == 5:
                self.props, pos = decode_properties(body, pos)
            self.payload = bytes(body[pos:])
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            self.pid = struct.unpack_from("!H", body, 0)[0]
            self.code = body[2] if len(body) > 2 else 0
        elif ptype == SUBACK:
            self.pid = struct.unpack_from("!H", body, 0)[0]
            pos = 2
            if version == 5:
                self.props, pos = decode_properties(body, pos)
            self.codes = list(body[pos:])
        elif ptype == DISCONNECT:
            self.code = body[0] if body else 0

    @property
    def name(self):
        return NAMES.get(self.type, str(self.type))

    def __repr__(self):
        extra = {k: v for k, v in self.__dict__.items() if k not in ("body", "type", "flags")}
        return f"<{self.name} {extra}>"


class Raw:
    """One TCP connection to the broker."""

    def __init__(self, port, host="127.0.0.1", version=4, timeout=5):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet in time") from None
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read(self, timeout=5):
        """The next packet; TimeoutError if none in time; Closed at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    n, pos = read_varint(self.buf, 1)
                except IndexError:
                    n, pos = None, None
                if n is not None and len(self.buf) >= pos + n:
                    first = self.buf[0]
                    body = bytes(self.buf[pos:pos + n])
                    del self.buf[:pos + n]
                    return Packet(first >> 4, first & 0x0F, body, self.version)
            self._fill(deadline)

    def expect(self, ptype, timeout=5):
        """The next packet, which must be of type ptype (PINGRESPs are
        skipped)."""
        while True:
            p = self.read(timeout)
            if p.type == PINGRESP:
                continue
            assert p.type == ptype, f"expected {NAMES[ptype]}, got {p!r}"
            return p

    def connect(self, client_id, clean=True, keepalive=60, **kw):
        """Send CONNECT and return the CONNACK."""
        self.send(connect(client_id, self.version, clean, keepalive, **kw))
        return self.expect(CONNACK)

    def closed_within(self, timeout):
        """Read (and collect) packets until the broker closes the
        connection: the packets, or None if it is still open after
        `timeout` s."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.read(max(0.001, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                return None

    def send_maybe_closed(self, data):
        """Send, tolerating a broker that already closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def quiet(self, seconds):
        """Packets that arrive within `seconds` (the connection must stay
        open)."""
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.read(max(0.001, deadline - time.monotonic())))
            except TimeoutError:
                break
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
