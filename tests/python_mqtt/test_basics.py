"""Connect, publish/subscribe at each QoS, wildcards, unsubscribe, QoS
downgrade, ordering, and the mosquitto_pub/mosquitto_sub command-line
clients. MQTT 3.1.1 and 5.0 where both apply."""

import subprocess

import pytest

from mqttutil import V311, V5


def test_connect_and_disconnect(mk, uid, version):
    c = mk(f"{uid}-c", version)
    assert c.connack[1] == 0
    assert c.session_present is False
    assert c.is_connected()
    c.disconnect()
    assert not c.is_connected()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pubsub_each_qos(mk, uid, version, qos):
    sub = mk(f"{uid}-s", version)
    pub = mk(f"{uid}-p", version)
    topic = f"basics/{uid}/q{qos}"
    # Granted QoS is the requested one: warren (like mosquitto) supports
    # QoS 2, and grants min(requested, 2).
    assert sub.subscribe(topic, qos) == [qos]
    payloads = [b"", b"x", bytes(range(256)), b"\x00" * 70000, "héllo ✓".encode()]
    for p in payloads:
        rc = pub.publish(topic, p, qos)
        if qos:
            assert rc == 0
    got = sub.take(len(payloads))
    assert [m.payload for m in got] == payloads
    for m in got:
        assert m.topic == topic
        assert m.qos == qos
        assert m.retain is False
    sub.none()


def test_subscribe_several_filters_in_one_packet(mk, uid, version):
    c = mk(f"{uid}-s", version)
    assert c.subscribe([(f"several/{uid}/a", 0), (f"several/{uid}/b", 1),
                        (f"several/{uid}/c", 2)]) == [0, 1, 2]
    for t in "abc":
        c.publish(f"several/{uid}/{t}", t.encode(), 1)
    got = {m.topic: (m.payload, m.qos) for m in c.take(3)}
    assert got == {f"several/{uid}/a": (b"a", 0), f"several/{uid}/b": (b"b", 1),
                   f"several/{uid}/c": (b"c", 1)}


def test_wildcards(mk, uid, version):
    plus = mk(f"{uid}-plus", version)
    hash_ = mk(f"{uid}-hash", version)
    mid = mk(f"{uid}-mid", version)
    pub = mk(f"{uid}-p", version)
    plus.subscribe(f"w/{uid}/+/temp", 1)
    hash_.subscribe(f"w/{uid}/#", 1)
    mid.subscribe(f"+/{uid}/+", 1)
    topics = [f"w/{uid}/room1/temp", f"w/{uid}/room2/temp", f"w/{uid}/room1/hum",
              f"w/{uid}/room1/temp/x", f"w/{uid}", f"w/{uid}/a"]
    for t in topics:
        pub.publish(t, t.encode(), 1)
    got_plus = sorted(m.topic for m in plus.take(2))
    assert got_plus == [f"w/{uid}/room1/temp", f"w/{uid}/room2/temp"]
    plus.none()
    # "#" also matches the parent level itself (MQTT-4.7.1.2).
    got_hash = sorted(m.topic for m in hash_.take(len(topics)))
    assert got_hash == sorted(topics)
    hash_.none(0.1)
    got_mid = sorted(m.topic for m in mid.take(1))
    assert got_mid == [f"w/{uid}/a"]
    mid.none(0.1)


def test_unsubscribe_stops_delivery(mk, uid, version):
    c = mk(f"{uid}-s", version)
    topic = f"unsub/{uid}"
    c.subscribe(topic, 1)
    c.publish(topic, b"one", 1)
    assert c.get().payload == b"one"
    assert c.unsubscribe(topic) == [0]
    c.publish(topic, b"two", 1)
    c.none()


@pytest.mark.parametrize("pub_qos,sub_qos,want", [(2, 1, 1), (0, 1, 0), (1, 0, 0), (2, 0, 0),
                                                    (1, 2, 1)])
def test_qos_downgrade(mk, uid, version, pub_qos, sub_qos, want):
    """Delivered at min(publish QoS, subscription QoS)."""
    sub = mk(f"{uid}-s", version)
    pub = mk(f"{uid}-p", version)
    topic = f"down/{uid}"
    sub.subscribe(topic, sub_qos)
    pub.publish(topic, b"payload", pub_qos)
    m = sub.get()
    assert (m.payload, m.qos) == (b"payload", want)


def test_order_of_1000_qos1_messages(mk, uid, version):
    sub = mk(f"{uid}-s", version)
    pub = mk(f"{uid}-p", version)
    topic = f"order/{uid}"
    sub.subscribe(topic, 1)
    infos = [pub.publish(topic, str(i).encode(), 1, wait=False) for i in range(1000)]
    for info in infos:
        info.wait_for_publish(10)
    got = [int(m.payload) for m in sub.take(1000, timeout=30)]
    assert got == list(range(1000))
    sub.none(0.2)


# warren_only for 3.1.1: mosquitto 2.0 sends a 3.1.1 client a single copy at
# the QoS of the first matching subscription (QoS 0 here), against
# MQTT-3.3.5-1; warren (one queue per QoS, as RabbitMQ) sends a copy per
# subscription QoS.
@pytest.mark.parametrize("version", [pytest.param(V311, id="v311", marks=pytest.mark.warren_only),
                                     pytest.param(V5, id="v5")])
def test_overlapping_subscriptions_one_client(mk, uid, version):
    """Two filters of one client matching one message: at least one copy
    at the larger QoS ("MUST deliver the message to the Client respecting
    the maximum QoS of all the matching subscriptions", MQTT-3.3.5-1; it
    MAY send a copy per subscription; 5.0 the same, MQTT-3.3.4-2/-3)."""
    c = mk(f"{uid}-s", version)
    pub = mk(f"{uid}-p", version)
    c.subscribe(f"ov/{uid}/+", 0)
    c.subscribe(f"ov/{uid}/#", 1)
    pub.publish(f"ov/{uid}/x", b"m", 1)
    got = c.drain()
    assert 1 <= len(got) <= 2
    assert max(m.qos for m in got) == 1
    assert all(m.payload == b"m" for m in got)


def cli(*args, timeout=15):
    return subprocess.run(list(args), capture_output=True, timeout=timeout)


@pytest.mark.parametrize("cli_version", ["mqttv311", "mqttv5"])
def test_mosquitto_cli_round_trip(broker, uid, cli_version):
    topic = f"cli/{uid}"
    common = ["-h", "127.0.0.1", "-p", str(broker.mqtt_port), "-u", "guest", "-P", "guest",
              "-V", cli_version]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-t", topic, "-q", "1", "-C", "1",
                            "-W", "10", "-v", "-i", f"{uid}-clisub"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Publish until the subscriber (starting up in parallel) has one:
        # -C 1 makes it exit after the first message.
        for _ in range(50):
            r = cli("mosquitto_pub", *common, "-t", topic, "-q", "1", "-m", "hello cli",
                    "-i", f"{uid}-clipub")
            assert r.returncode == 0, r.stderr
            try:
                out, err = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("mosquitto_sub got nothing")
        assert sub.returncode == 0, err
        assert out.decode() == f"{topic} hello cli\n"
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    # -W: mosquitto_sub gives up after the timeout when nothing comes.
    r = cli("mosquitto_sub", *common, "-t", f"cli/{uid}/nothing", "-C", "1", "-W", "1")
    assert r.stdout == b""
    assert r.returncode != 0
