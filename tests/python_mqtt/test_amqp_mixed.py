"""MQTT and AMQP 0-9-1 together, as RabbitMQ's MQTT plugin maps them: MQTT
topics are routing keys on `amq.topic` ('/' <-> '.', '+' <-> '*', '#' <->
'#'), a session's subscriptions are queues named
`mqtt-subscription-<client id>qos<0|1>`, QoS 1 is persistent (delivery
mode 2), MQTT 5 user properties <-> AMQP headers, the management API lists
MQTT connections, and a `vhost:user` user name picks the virtual host."""

import urllib.parse

import pika
import pytest

from mqttutil import V311, V5, props, wait_for

pytestmark = pytest.mark.amqp


def get_one(ch, queue, timeout=5):
    """One message from `queue` (basic.get, acknowledged):
    (method, properties, body)."""
    got = wait_for(lambda: (lambda m: m if m[0] is not None else None)(ch.basic_get(queue)),
                   timeout=timeout, what=f"a message in {queue}")
    ch.basic_ack(got[0].delivery_tag)
    return got


@pytest.fixture
def amqp(broker):
    conn = broker.amqp()
    yield conn.channel()
    if conn.is_open:
        conn.close()


def bound_queue(ch, key):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", key)
    return q


def test_amqp_to_mqtt_topic_mapping(mk, amqp, uid, version):
    one = mk(f"{uid}-plus", version)
    one.subscribe(f"mx/{uid}/sensors/+/temp", 1)
    every = mk(f"{uid}-hash", version)
    every.subscribe(f"mx/{uid}/all/#", 0)
    amqp.basic_publish("amq.topic", f"mx.{uid}.sensors.room1.temp", b"21.5")
    amqp.basic_publish("amq.topic", f"mx.{uid}.sensors.room1.hum", b"40")
    amqp.basic_publish("amq.topic", f"mx.{uid}.all.a.b", b"deep")
    m = one.get()
    assert (m.topic, m.payload) == (f"mx/{uid}/sensors/room1/temp", b"21.5")
    one.none()
    m = every.get()
    assert (m.topic, m.payload, m.qos) == (f"mx/{uid}/all/a/b", b"deep", 0)


def test_mqtt_to_amqp_routing_key_and_persistence(mk, amqp, uid, version):
    q = bound_queue(amqp, f"mx.{uid}.a.*")
    c = mk(f"{uid}-pub", version)
    c.publish(f"mx/{uid}/a/b", b"qos1 body", 1)
    c.publish(f"mx/{uid}/a/c", b"qos0 body", 0)
    c.publish(f"mx/{uid}/a/b/deeper", b"not matched", 1)
    method, p, body = get_one(amqp, q)
    assert (method.exchange, method.routing_key, body) == ("amq.topic", f"mx.{uid}.a.b",
                                                         b"qos1 body")
    assert p.delivery_mode == 2
    method, p, body = get_one(amqp, q)
    assert (method.routing_key, body) == (f"mx.{uid}.a.c", b"qos0 body")
    assert p.delivery_mode in (None, 1)
    assert amqp.basic_get(q)[0] is None


def test_subscription_queues_visible_to_amqp(broker, mk, amqp, uid):
    cid = f"{uid}p"
    c = mk(cid, V311, clean=False)
    c.subscribe(f"mx/{uid}/q1", 1)
    c.subscribe(f"mx/{uid}/q0", 0)
    for qos in (0, 1):
        name = f"mqtt-subscription-{cid}qos{qos}"
        amqp.queue_declare(name, passive=True)
    c.disconnect()
    pub = mk(f"{uid}-pub", V311)
    for i in range(3):
        pub.publish(f"mx/{uid}/q1", f"{i}".encode(), 1)
    q1 = f"mqtt-subscription-{cid}qos1"
    wait_for(lambda: amqp.queue_declare(q1, passive=True).method.message_count == 3,
             what="3 messages in the session's queue")
    # A clean session removes them.
    mk(cid, V311, clean=True).disconnect()
    conn = broker.amqp()
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            wait_for(lambda: ch.queue_declare(q1, passive=True) and False, timeout=2,
                     what="never")
        assert e.value.reply_code == 404
    finally:
        if conn.is_open:
            conn.close()


def test_amqp_consumer_on_a_subscription_queue(mk, amqp, uid):
    """The session's queue is an ordinary queue: what the MQTT session
    missed can be read with AMQP (here the queue of a persistent
    session)."""
    cid = f"{uid}c"
    c = mk(cid, V311, clean=False)
    c.subscribe(f"mx/{uid}/side", 1)
    c.disconnect()
    mk(f"{uid}-pub", V311).publish(f"mx/{uid}/side", b"read by amqp", 1)
    method, p, body = get_one(amqp, f"mqtt-subscription-{cid}qos1")
    assert (method.routing_key, body) == (f"mx.{uid}.side", b"read by amqp")
    mk(cid, V311, clean=True).disconnect()


@pytest.mark.v5
def test_user_properties_to_amqp_headers(mk, amqp, uid):
    q = bound_queue(amqp, f"mx.{uid}.up")
    c = mk(f"{uid}-pub", V5)
    c.publish(f"mx/{uid}/up", b"with props", 1,
              properties=props("PUBLISH", UserProperty=[("site", "north"), ("unit", "°C")]))
    _, p, body = get_one(amqp, q)
    assert body == b"with props"
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (p.headers or {}).items()}
    assert headers.get("site") == "north" and headers.get("unit") == "°C", p.headers


@pytest.mark.v5
def test_amqp_headers_to_user_properties(mk, amqp, uid):
    c = mk(f"{uid}-sub", V5)
    c.subscribe(f"mx/{uid}/hdr", 1)
    amqp.basic_publish("amq.topic", f"mx.{uid}.hdr", b"with headers",
                       pika.BasicProperties(headers={"site": "south", "count": "3"}))
    m = c.get()
    assert m.payload == b"with headers"
    user = dict(getattr(m.properties, "UserProperty", []))
    assert user.get("site") == "south" and user.get("count") == "3", user


def test_connections_listed_in_management_api(broker, mk, uid, version):
    c = mk(f"{uid}-listed", version)
    port = c.c.socket().getsockname()[1]
    want = "MQTT 3.1.1" if version == V311 else "MQTT 5.0"

    def listed():
        st, conns = broker.api("GET", "/api/connections")
        assert st == 200
        return [x for x in conns if x.get("peer_port") == port]

    # RabbitMQ refreshes connection stats every 5 s.
    found = wait_for(listed, timeout=15, what="the MQTT connection in /api/connections")
    assert found[0]["protocol"] == want, found[0]
    assert found[0]["vhost"] == "/"
    assert found[0]["user"] == "guest"


def test_vhost_in_user_name(broker, mk, uid):
    vhost = f"mqttv-{uid}"
    vq = urllib.parse.quote(vhost, safe="")
    st, _ = broker.api("PUT", f"/api/vhosts/{vq}", {})
    assert st in (201, 204), st
    try:
        st, _ = broker.api("PUT", f"/api/permissions/{vq}/guest",
                           {"configure": ".*", "write": ".*", "read": ".*"})
        assert st in (201, 204), st
        conn = broker.amqp(vhost)
        try:
            ch = conn.channel()
            q = bound_queue(ch, f"vh.{uid}.#")
            home = broker.amqp()
            home_ch = home.channel()
            home_q = bound_queue(home_ch, f"vh.{uid}.#")
            c = mk(f"{uid}-v2", V311, username=f"{vhost}:guest", password="guest")
            c.publish(f"vh/{uid}/x", b"in v2", 1)
            method, _, body = get_one(ch, q)
            assert (method.routing_key, body) == (f"vh.{uid}.x", b"in v2")
            # Not in the default vhost.
            assert home_ch.basic_get(home_q)[0] is None
            # And the other way: AMQP in v2 reaches the MQTT client in v2 only.
            c.subscribe(f"vh/{uid}/back", 1)
            home_ch.basic_publish("amq.topic", f"vh.{uid}.back", b"from /")
            ch.basic_publish("amq.topic", f"vh.{uid}.back", b"from v2")
            m = c.get()
            assert m.payload == b"from v2"
            c.none()
            home.close()
        finally:
            if conn.is_open:
                conn.close()
    finally:
        broker.api("DELETE", f"/api/vhosts/{vq}")
