"""Policies, operator policies, limits, consumer timeout and delivery limit,
through the management API, rabbitmqadmin and pika, with RabbitMQ's
(3.13 / 4.x) replies and error texts.  Each test works in a vhost of its
own, so that its policies and limits touch nothing else.

Checked against RabbitMQ 4.0.5: the same behaviour throughout, except
where warren is deliberately different: its API shows changes at once
(RabbitMQ's queue stats lag by seconds, so run there these tests need a
wait before reading them back), its error reasons are not HTML-escaped
(RabbitMQ's /api/policies escapes `<<` as `&lt;&lt;`), a consumer may set
its own x-consumer-timeout (RabbitMQ ignores it), and an import keeps
policy keys RabbitMQ 4 no longer knows (`ha-mode`, reported as a warning;
RabbitMQ 4 refuses the whole import with 400) and answers with a report."""

import json
import os
import time

import pika
import pytest
from conftest import AMQP_PORT, HOST, Api, eventually, q, rabbitmqadmin

# A second broker whose global consumer_timeout is short (tests/mgmt_py.rs).
TIMEOUT_AMQP_PORT = int(os.environ.get("WARREN_TIMEOUT_AMQP_PORT", "0"))


@pytest.fixture
def vhost(api, names):
    v = names("vh")
    assert api.put(f"/api/vhosts/{q(v)}").status_code == 201
    return v


def connect(vhost, port=AMQP_PORT, user="guest", password="guest"):
    params = pika.ConnectionParameters(
        host=HOST, port=port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, heartbeat=0)
    return pika.BlockingConnection(params)


def put_policy(api, vhost, name, pattern, definition, priority=0, apply_to="queues",
               kind="policies"):
    r = api.put(f"/api/{kind}/{q(vhost)}/{q(name)}",
                {"pattern": pattern, "definition": definition,
                 "priority": priority, "apply-to": apply_to})
    assert r.status_code in (201, 204), r.text
    return r


def queue_info(api, vhost, name):
    return api.ok(f"/api/queues/{q(vhost)}/{q(name)}")


def depth(api, vhost, name):
    # RabbitMQ shows no counts until its first stats emission.
    return queue_info(api, vhost, name).get("messages")


def publish(ch, rk, n, body=b"m"):
    for i in range(n):
        ch.basic_publish("", rk, body + str(i).encode())


def drain(ch, queue):
    out = []
    while True:
        m, props, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((props, body))


# ---------------------------------------------------------------------------
# Policies


def test_policy_changes_existing_queue_at_runtime_and_reverts(api, vhost):
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare("work")
    ch.queue_declare("dlq")
    publish(ch, "work", 5)
    assert eventually("5 queued", lambda: depth(api, vhost, "work") == 5)
    # Applied to the existing queue, no redeclare: max-length drops from
    # the head (dead-lettered), message-ttl applies to new messages.
    put_policy(api, vhost, "limits", "^work$",
               {"max-length": 3, "message-ttl": 300, "dead-letter-exchange": "",
                "dead-letter-routing-key": "dlq"})
    info = queue_info(api, vhost, "work")
    assert info["policy"] == "limits"
    assert info["operator_policy"] is None
    assert info["effective_policy_definition"] == {
        "max-length": 3, "message-ttl": 300, "dead-letter-exchange": "",
        "dead-letter-routing-key": "dlq"}
    assert info["messages"] == 3
    dead = drain(ch, "dlq")
    assert [b for _, b in dead] == [b"m0", b"m1"]
    assert dead[0][0].headers["x-death"][0]["reason"] == "maxlen"
    drain(ch, "work")
    publish(ch, "work", 2, b"ttl")
    time.sleep(0.6)
    assert depth(api, vhost, "work") == 0
    dead = drain(ch, "dlq")
    assert [b for _, b in dead] == [b"ttl0", b"ttl1"]
    assert dead[0][0].headers["x-death"][0]["reason"] == "expired"
    # Deleting the policy reverts the queue.
    assert api.delete(f"/api/policies/{q(vhost)}/limits").status_code == 204
    assert queue_info(api, vhost, "work")["policy"] is None
    publish(ch, "work", 5, b"free")
    time.sleep(0.5)
    assert depth(api, vhost, "work") == 5
    assert drain(ch, "dlq") == []
    # A queue declared later gets a matching policy at once.
    put_policy(api, vhost, "later", "^late", {"max-length": 1})
    ch.queue_declare("late-q")
    publish(ch, "late-q", 3)
    assert [b for _, b in drain(ch, "late-q")] == [b"m2"]
    conn.close()


def test_highest_priority_policy_applies(api, vhost):
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare("prio.q")
    put_policy(api, vhost, "low", "^prio", {"max-length": 1}, priority=1)
    put_policy(api, vhost, "high", "^prio\\.", {"max-length": 2}, priority=5)
    assert queue_info(api, vhost, "prio.q")["policy"] == "high"
    publish(ch, "prio.q", 4)
    assert depth(api, vhost, "prio.q") == 2
    # Lowering its priority hands the queue to the other one.
    put_policy(api, vhost, "high", "^prio\\.", {"max-length": 2}, priority=0)
    info = queue_info(api, vhost, "prio.q")
    assert info["policy"] == "low" and info["messages"] == 1
    # apply-to exchanges does not touch queues.
    put_policy(api, vhost, "xonly", ".*", {"alternate-exchange": "ae"}, priority=99,
               apply_to="exchanges")
    assert queue_info(api, vhost, "prio.q")["policy"] == "low"
    listed = api.ok(f"/api/policies/{q(vhost)}")
    assert {p["name"] for p in listed} == {"low", "high", "xonly"}
    one = api.ok(f"/api/policies/{q(vhost)}/low")
    assert one == {"vhost": vhost, "name": "low", "pattern": "^prio", "apply-to": "queues",
                   "definition": {"max-length": 1}, "priority": 1}
    conn.close()


def test_argument_policy_and_operator_policy_precedence(api, vhost):
    conn = connect(vhost)
    ch = conn.channel()
    for n in ("arg-dlq", "pol-dlq"):
        ch.queue_declare(n)
    ch.queue_declare("prec", arguments={"x-max-length": 10, "x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": "arg-dlq"})
    put_policy(api, vhost, "p", "^prec$",
               {"max-length": 5, "dead-letter-exchange": "",
                "dead-letter-routing-key": "pol-dlq"})
    publish(ch, "prec", 7)
    # The lower limit wins (policy 5 < argument 10); the argument's
    # dead-letter routing key wins over the policy's.
    assert depth(api, vhost, "prec") == 5
    assert len(drain(ch, "arg-dlq")) == 2 and drain(ch, "pol-dlq") == []
    # An operator policy lowers it further: the stricter value wins.
    put_policy(api, vhost, "op", ".*", {"max-length": 2}, kind="operator-policies")
    info = queue_info(api, vhost, "prec")
    assert info["operator_policy"] == "op"
    assert info["effective_policy_definition"]["max-length"] == 2
    assert info["messages"] == 2
    # ... but not upwards: an operator policy of 8 leaves the policy's 5.
    put_policy(api, vhost, "op", ".*", {"max-length": 8}, kind="operator-policies")
    publish(ch, "prec", 10)
    assert depth(api, vhost, "prec") == 5
    assert api.delete(f"/api/operator-policies/{q(vhost)}/op").status_code == 204
    assert queue_info(api, vhost, "prec")["operator_policy"] is None
    conn.close()


def test_alternate_exchange_policy(api, vhost):
    conn = connect(vhost)
    ch = conn.channel()
    ch.exchange_declare("ae", "fanout")
    ch.queue_declare("unrouted")
    ch.queue_bind("unrouted", "ae")
    ch.exchange_declare("orders", "direct")
    put_policy(api, vhost, "ae", "^orders$", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert api.ok(f"/api/exchanges/{q(vhost)}/orders")["policy"] == "ae"
    ch.basic_publish("orders", "nowhere", b"lost?")
    assert eventually("routed to the AE", lambda: depth(api, vhost, "unrouted") == 1)
    conn.close()


@pytest.mark.parametrize("definition, reason", [
    ({"foo": 1}, '[{<<"foo">>,1}] are not recognised policy settings'),
    ({"foo": 1, "message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"max-length": "x"}, '<<"x">> is not a valid maximum length'),
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"overflow": "bad"}, '<<"bad">> is not a valid overflow value'),
    ({"dead-letter-exchange": 5}, "5 is not a valid dead letter exchange name"),
    ({}, "no policy provided"),
])
def test_bad_policy_is_refused_with_rabbitmq_text(api, vhost, definition, reason):
    r = api.put(f"/api/policies/{q(vhost)}/bad", {"pattern": ".*", "definition": definition})
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"
    assert r.json()["reason"] == f"Validation failed\n\n{reason}\n"
    assert api.get(f"/api/policies/{q(vhost)}/bad").status_code == 404


def test_bad_operator_policy_and_apply_to(api, vhost):
    r = api.put(f"/api/operator-policies/{q(vhost)}/op",
                {"pattern": ".*", "definition": {"dead-letter-exchange": "x"}})
    assert r.status_code == 400
    assert "are not recognised policy settings" in r.json()["reason"]
    r = api.put(f"/api/policies/{q(vhost)}/p",
                {"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "bad"})
    assert r.status_code == 400


# ---------------------------------------------------------------------------
# Limits


def test_vhost_connection_and_queue_limits(api, vhost):
    r = api.put(f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 1})
    assert r.status_code == 204
    assert api.put(f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 1}).status_code == 204
    assert api.ok(f"/api/vhost-limits/{q(vhost)}") == [
        {"vhost": vhost, "value": {"max-connections": 1, "max-queues": 1}}]
    first = connect(vhost)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(vhost)
    assert "connection limit (1) is reached" in str(e.value)
    ch = first.channel()
    ch.queue_declare("one")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("two")
    assert e.value.reply_code == 406
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost '{vhost}' "
        "(1) is reached")
    first.close()
    # Runtime changes apply to new connections: lifted, two may connect.
    assert api.delete(f"/api/vhost-limits/{q(vhost)}/max-connections").status_code == 204
    a, b = connect(vhost), connect(vhost)
    a.close()
    b.close()


def test_user_limits(api, names, vhost):
    user = names("user")
    assert api.put(f"/api/users/{q(user)}", {"password": "pw", "tags": ""}).status_code == 201
    assert api.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                   {"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    assert api.put(f"/api/user-limits/{q(user)}/max-channels", {"value": 2}).status_code == 204
    assert api.put(f"/api/user-limits/{q(user)}/max-connections",
                   {"value": 1}).status_code == 204
    assert api.ok(f"/api/user-limits/{q(user)}") == [
        {"user": user, "value": {"max-channels": 2, "max-connections": 1}}]
    assert api.ok(f"/api/users/{q(user)}")["limits"] == {"max-channels": 2,
                                                         "max-connections": 1}
    conn = connect(vhost, user=user, password="pw")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(vhost, user=user, password="pw")
    assert "user connection limit (1) is reached" in str(e.value)
    conn.channel()
    conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.channel()
    assert e.value.reply_code == 530
    assert "maximum allowed user limit of (2)" in e.value.reply_text
    r = api.put(f"/api/user-limits/{q(user)}/max-channels", {"value": "lots"})
    assert r.status_code == 400


# ---------------------------------------------------------------------------
# Consumer timeout and delivery limit


def closed_by_broker(conn, ch, queue, arguments=None, timeout=10):
    """Consume from `queue` without acknowledging until the broker closes
    the channel; return the close (ChannelClosedByBroker) and the
    deliveries seen."""
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append(m), arguments=arguments)
    conn.call_later(timeout, ch.stop_consuming)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.start_consuming()
    return e.value, got


@pytest.mark.parametrize("how", ["argument", "policy", "consumer"])
def test_consumer_timeout_closes_channel_and_requeues(api, vhost, how):
    conn = connect(vhost)
    ch = conn.channel()
    args = {"x-consumer-timeout": 1000} if how == "argument" else None
    ch.queue_declare("slow", arguments=args)
    if how == "policy":
        put_policy(api, vhost, "ct", "^slow$", {"consumer-timeout": 1000})
    ch.basic_publish("", "slow", b"job")
    started = time.time()
    reason, got = closed_by_broker(
        conn, ch, "slow", {"x-consumer-timeout": 1000} if how == "consumer" else None)
    assert got
    assert time.time() - started >= 0.9
    assert reason.reply_code == 406
    assert reason.reply_text == (
        f"PRECONDITION_FAILED - delivery acknowledgement on channel {ch.channel_number} "
        "timed out. Timeout value used: 1000 ms. This timeout value can be configured, "
        "see consumers doc guide to learn more")
    # The unacknowledged message is back, marked redelivered.
    ch2 = conn.channel()
    m, _, body = ch2.basic_get("slow", auto_ack=True)
    assert body == b"job" and m.redelivered
    conn.close()


@pytest.mark.skipif(not TIMEOUT_AMQP_PORT, reason="needs WARREN_TIMEOUT_AMQP_PORT")
def test_global_consumer_timeout():
    conn = connect("/", port=TIMEOUT_AMQP_PORT)
    ch = conn.channel()
    qn = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", qn, b"job")
    reason, _ = closed_by_broker(conn, ch, qn)
    assert reason.reply_code == 406
    assert "Timeout value used: 1500 ms" in reason.reply_text
    conn.close()


def test_acked_in_time_is_not_timed_out(api, vhost):
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare("quick", arguments={"x-consumer-timeout": 800})
    publish(ch, "quick", 6)
    n = []

    def on(c, m, p, b):
        time.sleep(0.3)
        c.basic_ack(m.delivery_tag)
        n.append(b)

    ch.basic_qos(prefetch_count=1)
    ch.basic_consume("quick", on)
    deadline = time.time() + 5
    while len(n) < 6 and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert len(n) == 6 and ch.is_open
    conn.close()


@pytest.mark.parametrize("how", ["argument", "policy"])
def test_delivery_limit_dead_letters_poison_message(api, vhost, how):
    conn = connect(vhost)
    ch = conn.channel()
    ch.queue_declare("poison.dlq")
    args = {"x-queue-type": "quorum", "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "poison.dlq"}
    if how == "argument":
        args["x-delivery-limit"] = 2
    else:
        put_policy(api, vhost, "dl", "^poison$", {"delivery-limit": 2})
    ch.queue_declare("poison", durable=True, arguments=args)
    # Confirmed, so that the first basic.get finds it on RabbitMQ too.
    ch.confirm_delivery()
    ch.basic_publish("", "poison", b"bad")
    seen = []
    for _ in range(5):
        m, props, _ = ch.basic_get("poison")
        if m is None:
            break
        seen.append((m.redelivered, (props.headers or {}).get("x-delivery-count")))
        ch.basic_reject(m.delivery_tag, requeue=True)
    # First delivery has no count; each redelivery counts the returns.
    assert seen == [(False, None), (True, 1), (True, 2)]
    dead = drain(ch, "poison.dlq")
    assert len(dead) == 1
    props, body = dead[0]
    assert body == b"bad"
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    conn.close()


# ---------------------------------------------------------------------------
# Definitions, rabbitmqadmin


def test_rabbitmq_export_with_policies_and_limits_imports_and_behaves(api, names):
    vh = names("imported")
    user = names("limited")
    defs = {
        "rabbit_version": "3.13.7",
        "users": [{"name": user, "password_hash":
                   "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [],
                   "limits": {"max-connections": 3}}],
        "vhosts": [{"name": vh, "limits": [], "metadata": {"description": "", "tags": []}}],
        "permissions": [{"user": "guest", "vhost": vh, "configure": ".*", "write": ".*",
                         "read": ".*"}],
        "parameters": [{"value": {"max-queues": 2}, "vhost": vh,
                        "component": "vhost-limits", "name": "limits"},
                       {"value": {"pattern": ".*", "definition": {"message-ttl": 60000},
                                  "priority": 0, "apply-to": "queues"},
                        "vhost": vh, "component": "operator_policy", "name": "cap"}],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@old"}],
        "policies": [{"vhost": vh, "name": "len", "pattern": "^jobs$", "apply-to": "queues",
                      "definition": {"max-length": 2, "ha-mode": "all"}, "priority": 0}],
        "queues": [{"name": "jobs", "vhost": vh, "durable": True, "auto_delete": False,
                    "arguments": {}}],
        "exchanges": [],
        "bindings": [],
    }
    r = api.post("/api/definitions", defs)
    assert r.status_code == 200, r.text
    report = r.json()
    assert any("ha-mode" in w for w in report["warnings"]), report
    assert any("cluster_name" in s for s in report["skipped"]), report
    info = queue_info(api, vh, "jobs")
    assert info["policy"] == "len" and info["operator_policy"] == "cap"
    conn = connect(vh)
    ch = conn.channel()
    publish(ch, "jobs", 5)
    assert depth(api, vh, "jobs") == 2
    ch.queue_declare("second")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare("third")
    conn.close()
    assert api.ok(f"/api/users/{q(user)}")["limits"] == {"max-connections": 3}
    # The export carries all of it back, in RabbitMQ's format.
    out = api.ok("/api/definitions")
    assert {"vhost": vh, "name": "len", "pattern": "^jobs$", "apply-to": "queues",
            "definition": {"max-length": 2, "ha-mode": "all"}, "priority": 0} in out["policies"]
    params = [p for p in out["parameters"] if p.get("vhost") == vh]
    assert {"vhost": vh, "component": "vhost-limits", "name": "limits",
            "value": {"max-queues": 2}} in params
    assert any(p["component"] == "operator_policy" and p["name"] == "cap" for p in params)
    # Re-importing the export changes nothing and fails nothing.
    r = api.post("/api/definitions", out)
    assert r.status_code in (200, 204), r.text
    assert api.delete(f"/api/vhosts/{q(vh)}").status_code == 204
    assert not [p for p in api.ok("/api/policies") if p["vhost"] == vh]


def test_rabbitmqadmin_policies(api, vhost):
    rabbitmqadmin("-V", vhost, "declare", "policy", "name=adm", "pattern=^a",
                  'definition={"max-length": 7}', "apply-to=queues", "priority=3")
    p = api.ok(f"/api/policies/{q(vhost)}/adm")
    assert p["definition"] == {"max-length": 7} and p["priority"] == 3
    out = rabbitmqadmin("-V", vhost, "-f", "tsv", "list", "policies", "name", "pattern").stdout
    assert "adm\t^a" in out
    rabbitmqadmin("-V", vhost, "delete", "policy", "name=adm")
    assert api.get(f"/api/policies/{q(vhost)}/adm").status_code == 404
    rabbitmqadmin("declare", "operator_policy", "name=opadm", "pattern=.*",
                  'definition={"max-length": 9}', "apply-to=queues", "-V", vhost, check=False)
    rabbitmqadmin("list", "operator_policies")


def test_policymaker_may_set_policies_only(api, names, vhost):
    user = names("pm")
    api.put(f"/api/users/{q(user)}", {"password": "pw", "tags": "policymaker"})
    api.put(f"/api/permissions/{q(vhost)}/{q(user)}",
            {"configure": ".*", "write": ".*", "read": ".*"})
    pm = Api(auth=(user, "pw"))
    r = pm.put(f"/api/policies/{q(vhost)}/pm", {"pattern": ".*", "definition": {"max-length": 1}})
    assert r.status_code == 201, r.text
    r = pm.put(f"/api/operator-policies/{q(vhost)}/pm",
               {"pattern": ".*", "definition": {"max-length": 1}})
    assert r.status_code in (401, 403)
    json.dumps(api.ok("/api/policies"))
