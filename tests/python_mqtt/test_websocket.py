"""MQTT over WebSocket (path /ws, subprotocol "mqtt"): paho's websockets
transport against TCP clients and AMQP, and the HTTP upgrade itself."""

import socket

import pytest

from mqttutil import V5


def ws(mk, cid, version, **kw):
    return mk(cid, version, transport="websockets", **kw)


def test_websocket_and_tcp_both_ways(mk, uid, version):
    w = ws(mk, f"{uid}-ws", version)
    t = mk(f"{uid}-tcp", version)
    assert w.subscribe(f"ws/{uid}/to-ws", 1) == [1]
    assert t.subscribe(f"ws/{uid}/to-tcp", 1) == [1]
    big = bytes(range(256)) * 400  # > 64 KiB: several WebSocket frames' worth
    t.publish(f"ws/{uid}/to-ws", b"from tcp", 1)
    t.publish(f"ws/{uid}/to-ws", big, 1)
    assert [m.payload for m in w.take(2)] == [b"from tcp", big]
    w.publish(f"ws/{uid}/to-tcp", b"from ws", 1)
    w.publish(f"ws/{uid}/to-tcp", big, 2)
    got = t.take(2)
    assert [(m.payload, m.qos) for m in got] == [(b"from ws", 1), (big, 1)]
    w.disconnect()


@pytest.mark.v5
def test_websocket_will_and_retained(mk, uid):
    topic = f"wsw/{uid}"
    watch = mk(f"{uid}-watch", V5)
    watch.subscribe(topic, 1)
    w = ws(mk, f"{uid}-ws", V5, will={"topic": topic, "payload": b"ws gone", "qos": 1})
    w.publish(f"{topic}/r", b"kept", 1, retain=True)
    w.drop()
    assert watch.get().payload == b"ws gone"
    late = ws(mk, f"{uid}-late", V5)
    late.subscribe(f"{topic}/r", 1)
    m = late.get()
    assert (m.payload, m.retain) == (b"kept", True)
    late.publish(f"{topic}/r", b"", 1, retain=True)


@pytest.mark.amqp
def test_websocket_and_amqp(broker, mk, uid):
    w = ws(mk, f"{uid}-ws", 4)
    w.subscribe(f"wsa/{uid}/in", 1)
    conn = broker.amqp()
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", f"wsa.{uid}.out")
        ch.basic_publish("amq.topic", f"wsa.{uid}.in", b"from amqp")
        m = w.get()
        assert (m.topic, m.payload) == (f"wsa/{uid}/in", b"from amqp")
        w.publish(f"wsa/{uid}/out", b"from ws", 1)
        for method, props, body in ch.consume(q, inactivity_timeout=5):
            assert method is not None, "nothing reached the AMQP queue"
            assert (method.routing_key, body) == (f"wsa.{uid}.out", b"from ws")
            ch.basic_ack(method.delivery_tag)
            break
        ch.cancel()
    finally:
        conn.close()


def upgrade(port, protocol):
    """A raw HTTP upgrade request to /ws: (status code, headers dict)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                 "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head and head[0].startswith("HTTP/") else None
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def test_upgrade_with_mqtt_subprotocol(broker):
    status, headers = upgrade(broker.ws_port, "mqtt")
    assert status == 101
    assert headers.get("sec-websocket-protocol") == "mqtt"
    # RFC 6455 4.2.2: the accept key for the RFC's sample key.
    assert headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# warren_only: mosquitto (libwebsockets) accepts an upgrade without any
# subprotocol; warren refuses it, as the issue asks.
@pytest.mark.warren_only
@pytest.mark.parametrize("protocol", [None, "chat"])
def test_upgrade_without_mqtt_subprotocol_is_refused(broker, protocol):
    status, _ = upgrade(broker.ws_port, protocol)
    assert status == 400
