"""MQTT 5 features: message expiry, properties carried end to end, topic
aliases, subscription identifiers, subscription options, shared
subscriptions, reason codes, receive maximum."""

import time
import urllib.parse

import pytest

import mqttraw as r
from mqttutil import V5, props
from paho.mqtt.subscribeoptions import SubscribeOptions

pytestmark = pytest.mark.v5


def test_message_expiry_while_queued(mk, uid):
    cid, topic = f"{uid}-sub", f"mexp/{uid}"
    sub = mk(cid, V5, clean=False, session_expiry=300)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = mk(f"{uid}-pub", V5)
    pub.publish(topic, b"short", 1, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish(topic, b"long", 1, properties=props("PUBLISH", MessageExpiryInterval=60))
    pub.publish(topic, b"forever", 1)
    time.sleep(2.2)
    sub = mk(cid, V5, clean=False, session_expiry=300)
    assert sub.session_present is True
    got = sub.take(2)
    assert [m.payload for m in got] == [b"long", b"forever"]
    # The remaining lifetime goes with it (MQTT-3.3.2-6): at most 60 s,
    # less the time it waited (checked loosely).
    left = got[0].properties.MessageExpiryInterval
    assert 50 <= left <= 60, left
    assert not hasattr(got[1].properties, "MessageExpiryInterval")
    sub.none()
    sub.disconnect()
    mk(cid, V5, clean=True).disconnect()


def test_properties_round_trip(mk, uid):
    topic = f"props/{uid}"
    sub = mk(f"{uid}-sub", V5)
    sub.subscribe(topic, 1)
    pub = mk(f"{uid}-pub", V5)
    user = [("z-first", "1"), ("a-second", "2"), ("z-first", "again"), ("ünï", "cödé ✓")]
    pub.publish(topic, "{\"t\": 21.5}".encode(), 1, properties=props(
        "PUBLISH", ContentType="application/json", PayloadFormatIndicator=1,
        ResponseTopic=f"reply/{uid}", CorrelationData=b"\x00\x01corr\xff",
        UserProperty=user))
    m = sub.get()
    p = m.properties
    assert m.payload == b'{"t": 21.5}'
    assert p.ContentType == "application/json"
    assert p.PayloadFormatIndicator == 1
    assert p.ResponseTopic == f"reply/{uid}"
    assert p.CorrelationData == b"\x00\x01corr\xff"
    # Order kept, repeated keys kept (MQTT-3.3.2-17, -18).
    assert p.UserProperty == user


def test_request_response(mk, uid):
    """A responder answers on the request's response topic with its
    correlation data; the requester matches the answer."""
    req_topic, reply_topic = f"rpc/{uid}/req", f"rpc/{uid}/reply"
    responder = mk(f"{uid}-responder", V5)
    responder.subscribe(req_topic, 1)
    requester = mk(f"{uid}-requester", V5)
    requester.subscribe(reply_topic, 1)
    for n in (1, 2):
        requester.publish(req_topic, f"question {n}".encode(), 1, properties=props(
            "PUBLISH", ResponseTopic=reply_topic, CorrelationData=f"id-{n}".encode()))
    for _ in (1, 2):
        q = responder.get()
        responder.publish(q.properties.ResponseTopic, b"answer to " + q.payload, 1,
                          properties=props("PUBLISH", CorrelationData=q.properties.CorrelationData))
    got = {m.properties.CorrelationData: m.payload for m in requester.take(2)}
    assert got == {b"id-1": b"answer to question 1", b"id-2": b"answer to question 2"}


def test_topic_alias_from_client(mk, raw, uid):
    topic, topic2 = f"alias/{uid}/one", f"alias/{uid}/two"
    sub = mk(f"{uid}-sub", V5)
    sub.subscribe(f"alias/{uid}/+", 1)
    c = raw(5)
    ack = c.connect(f"{uid}-alias")
    # The broker must allow aliases for the client to use them
    # (MQTT-3.3.2-9: at most Topic Alias Maximum).
    assert ack.props.get("topic_alias_maximum", 0) >= 2, ack
    c.send(r.publish(topic, b"with topic", 1, pid=1, version=5, props={"topic_alias": 1}))
    assert c.expect(r.PUBACK).pid == 1
    c.send(r.publish("", b"alias only", 1, pid=2, version=5, props={"topic_alias": 1}))
    assert c.expect(r.PUBACK).pid == 2
    # An alias can be set again to another topic.
    c.send(r.publish(topic2, b"reassigned", 1, pid=3, version=5, props={"topic_alias": 1}))
    c.send(r.publish("", b"alias only 2", 1, pid=4, version=5, props={"topic_alias": 1}))
    assert [c.expect(r.PUBACK).pid for _ in range(2)] == [3, 4]
    got = [(m.topic, m.payload) for m in sub.take(4)]
    assert got == [(topic, b"with topic"), (topic, b"alias only"), (topic2, b"reassigned"),
                   (topic2, b"alias only 2")]
    # The subscriber sees topics, not the publisher's aliases.
    c.send(r.disconnect(5, 0))


def test_subscription_identifiers(mk, uid):
    c = mk(f"{uid}-sub", V5)
    c.subscribe(f"sid/{uid}/+", 1, properties=props("SUBSCRIBE", SubscriptionIdentifier=7))
    c.subscribe(f"sid/{uid}/#", 1, properties=props("SUBSCRIBE", SubscriptionIdentifier=268435455))
    c.subscribe(f"sid/{uid}/x/none", 1)
    pub = mk(f"{uid}-pub", V5)
    pub.publish(f"sid/{uid}/x", b"both", 1)
    # One copy with both identifiers, or one copy per subscription, each
    # with its own (MQTT-3.3.4-3, -4, -5).
    copies = c.drain()
    assert 1 <= len(copies) <= 2
    ids = [sorted(m.properties.SubscriptionIdentifier) for m in copies]
    assert sorted(i for l in ids for i in l) == [7, 268435455]
    if len(copies) == 2:
        assert sorted(ids) == [[7], [268435455]]
    pub.publish(f"sid/{uid}/x/y", b"hash only", 1)
    m = c.get()
    assert (m.payload, m.properties.SubscriptionIdentifier) == (b"hash only", [268435455])
    c.none()
    # A subscription without an identifier adds none.
    pub.publish(f"sid/{uid}/x/none", b"none", 1)
    got = c.drain()
    assert sorted(i for m in got for i in getattr(m.properties, "SubscriptionIdentifier", [])) \
        == [268435455]


def test_no_local(mk, uid):
    topic = f"nolocal/{uid}"
    c = mk(f"{uid}-self", V5)
    c.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    c.publish(topic, b"mine", 1)
    c.none()
    mk(f"{uid}-other", V5).publish(topic, b"theirs", 1)
    assert c.get().payload == b"theirs"
    c.none()


def test_retain_as_published(mk, uid):
    topic = f"rap/{uid}"
    keep = mk(f"{uid}-keep", V5)
    keep.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
    clear = mk(f"{uid}-clear", V5)
    clear.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=False))
    pub = mk(f"{uid}-pub", V5)
    pub.publish(topic, b"retained", 1, retain=True)
    pub.publish(topic, b"plain", 1)
    assert [(m.payload, m.retain) for m in keep.take(2)] == [(b"retained", True), (b"plain", False)]
    assert [(m.payload, m.retain) for m in clear.take(2)] == [(b"retained", False),
                                                             (b"plain", False)]
    pub.publish(topic, b"", 1, retain=True)


def test_retain_handling(mk, uid):
    topic = f"rh/{uid}"
    pub = mk(f"{uid}-pub", V5)
    pub.publish(topic, b"stored", 1, retain=True)
    # 2: no retained messages at subscribe time.
    none = mk(f"{uid}-rh2", V5)
    none.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
    none.none()
    pub.publish(topic, b"live", 1)
    assert none.get().payload == b"live"
    # 1: only when the subscription is new, not when it is replaced.
    once = mk(f"{uid}-rh1", V5)
    once.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    assert once.get().payload == b"stored"
    once.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    once.none()
    # 0: every time.
    every = mk(f"{uid}-rh0", V5)
    every.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=0))
    assert every.get().payload == b"stored"
    every.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=0))
    assert every.get().payload == b"stored"
    pub.publish(topic, b"", 1, retain=True)


def test_shared_subscription(mk, uid):
    topic = f"shared/{uid}"
    a = mk(f"{uid}-a", V5)
    b = mk(f"{uid}-b", V5)
    for c in (a, b):
        assert c.subscribe(f"$share/g{uid}/{topic}", 1) == [1]
    everyone = mk(f"{uid}-all", V5)
    everyone.subscribe(topic, 1)
    pub = mk(f"{uid}-pub", V5)
    infos = [pub.publish(topic, str(i).encode(), 1, wait=False) for i in range(100)]
    for info in infos:
        info.wait_for_publish(10)
    assert sorted(int(m.payload) for m in everyone.take(100)) == list(range(100))
    got_a = [int(m.payload) for m in a.drain(1.0)]
    got_b = [int(m.payload) for m in b.drain(0.2)]
    assert len(got_a) + len(got_b) == 100, (len(got_a), len(got_b))
    assert sorted(got_a + got_b) == list(range(100))
    # Split between both members of the group.
    assert got_a and got_b, (len(got_a), len(got_b))
    for c in (a, b):
        assert c.unsubscribe(f"$share/g{uid}/{topic}") == [0]


def test_puback_no_matching_subscribers(mk, uid):
    c = mk(f"{uid}-pub", V5)
    assert c.publish(f"nobody/{uid}/listens", b"x", 1) == 0x10
    c.subscribe(f"nobody/{uid}/+", 0)
    assert c.publish(f"nobody/{uid}/listens", b"x", 1) == 0x00


@pytest.mark.warren_only  # needs the management API for a user and its permissions
def test_suback_not_authorized(broker, mk, uid):
    user = f"mqtt-{uid}"
    path = urllib.parse.quote(user, safe="")
    st, _ = broker.api("PUT", f"/api/users/{path}", {"password": "pw", "tags": ""})
    assert st in (201, 204), st
    st, _ = broker.api("PUT", f"/api/permissions/%2F/{path}",
                       {"configure": "", "write": ".*", "read": ".*"})
    assert st in (201, 204), st
    try:
        c = mk(f"{uid}-limited", V5, username=user, password="pw")
        # No configure permission: the subscription's queue cannot be made.
        assert c.subscribe(f"denied/{uid}", 1) == [0x87]
        assert c.is_connected()
        # Publishing needs only write, which the user has.
        assert c.publish(f"denied/{uid}", b"x", 1) in (0x00, 0x10)
        c.disconnect()
    finally:
        broker.api("DELETE", f"/api/users/{path}")


def test_receive_maximum(broker, mk, raw, uid):
    """At most Receive Maximum unacknowledged QoS 1 deliveries at a time
    (MQTT-3.3.4-9)."""
    topic = f"rmax/{uid}"
    c = raw(5)
    assert c.connect(f"{uid}-slow", props={"receive_maximum": 5}).code == 0
    c.send(r.subscribe(1, [(topic, 1)], version=5))
    assert c.expect(r.SUBACK).codes == [1]
    pub = mk(f"{uid}-pub", V5)
    infos = [pub.publish(topic, str(i).encode(), 1, wait=False) for i in range(20)]
    for info in infos:
        info.wait_for_publish(10)
    first = c.quiet(1.0)
    assert [p.type for p in first] == [r.PUBLISH] * 5, first
    got = list(first)
    acked = 0
    # Each PUBACK lets exactly one more through. (mosquitto 2.0.11 sends
    # five more after the first PUBACK, nine outstanding: not checked there.)
    if broker.kind != "mosquitto":
        for _ in range(3):
            c.send(r.ack(r.PUBACK, got[acked].pid))
            acked += 1
            more = c.quiet(0.5)
            assert [p.type for p in more] == [r.PUBLISH], more
            got += more
    # Acknowledge everything; the rest arrive, in order.
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        while acked < len(got):
            c.send(r.ack(r.PUBACK, got[acked].pid))
            acked += 1
        got.append(c.expect(r.PUBLISH))
    assert [int(p.payload) for p in got] == list(range(20))
    for p in got[acked:]:
        c.send(r.ack(r.PUBACK, p.pid))
    assert c.quiet(0.3) == []
