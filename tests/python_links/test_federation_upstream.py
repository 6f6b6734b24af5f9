"""Warren as the upstream of a federated exchange: a real RabbitMQ (with the
rabbitmq_federation plugin) federates its exchanges fed.x and loop.x from
warren's. Started by the Rust harness, tests/federation.rs, which runs an
embedded warren (WARREN_PORT, with the management API on WARREN_MGMT_PORT)
and a private RabbitMQ node (RABBIT_PORT, RABBIT_NODE, RABBITMQCTL).

RabbitMQ's exchange link declares on warren a durable queue
"federation: X -> NODE" it consumes from, an internal, durable, auto-delete
exchange of type x-federation-upstream "federation: X -> NODE A|B" bound to
that queue, and bindings from warren's X to that exchange with the
downstream's binding keys. The link drops messages whose x-received-from
path is too long itself, so warren's own filtering is observed through a
probe queue bound on warren to the x-federation-upstream exchange."""

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

if "WARREN_MGMT_PORT" not in os.environ:
    # Collected by another harness (tests/shovel.rs runs the whole folder).
    pytest.skip("run by tests/federation.rs", allow_module_level=True)

import pika  # noqa: E402

from linkutil import wait_for  # noqa: E402

WARREN_PORT = int(os.environ["WARREN_PORT"])
WARREN_MGMT_PORT = int(os.environ["WARREN_MGMT_PORT"])
RABBIT_PORT = int(os.environ["RABBIT_PORT"])
RABBITMQCTL = os.environ["RABBITMQCTL"]
RABBIT_NODE = os.environ["RABBIT_NODE"]
UPSTREAM_URI = f"amqp://guest:guest@127.0.0.1:{WARREN_PORT}"


def connect(port):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                  credentials=pika.PlainCredentials("guest", "guest")))


def rabbitmqctl(*args):
    out = subprocess.run([RABBITMQCTL, "-n", RABBIT_NODE, *args], check=True,
                         capture_output=True, timeout=120)
    return out.stdout.decode()


def api(path):
    req = urllib.request.Request(f"http://127.0.0.1:{WARREN_MGMT_PORT}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def q(name):
    return urllib.parse.quote(name, safe="")


def text(v):
    """pika hands long strings back as str or bytes."""
    return v.decode() if isinstance(v, bytes) else v


def plain(v):
    if isinstance(v, dict):
        return {text(k): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return text(v)


def hop(cluster, vhost="/"):
    """An x-received-from entry as a federation link writes it."""
    return {"uri": "amqp://elsewhere", "exchange": "fed.x", "redelivered": False,
            "cluster-name": cluster, "vhost": vhost}


def diagnose():
    """What both sides say, for a link that does not come up."""
    try:
        status = rabbitmqctl("eval", "rabbit_federation_status:status().")
    except subprocess.CalledProcessError as e:
        status = f"{e}: {e.stderr!r}"
    names = lambda items: [(i["name"], i.get("type")) for i in items or []]
    return (f"federation status: {status}\nwarren exchanges: {names(api('/api/exchanges/%2F'))}"
            f"\nwarren queues: {names(api('/api/queues/%2F'))}"
            f"\nwarren connections: {[c.get('name') for c in api('/api/connections') or []]}")


def wait_link(exchange, key):
    try:
        return wait_for(lambda: link_up(exchange, key), what=f"the {exchange} link on warren")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnose()}") from None


def cluster_name():
    """RabbitMQ's cluster name (by default its node name with the FQDN): what
    the link names itself by on warren."""
    out = rabbitmqctl("eval", "rabbit_nodes:cluster_name().").strip()
    assert out.startswith('<<"') and out.endswith('">>'), out
    return out[3:-3]


CLUSTER = cluster_name()


def link_up(exchange, key):
    """The link's topology on warren for `exchange`, once it is complete:
    (queue, x-federation-upstream exchange, binding from `exchange`)."""
    qname = f"federation: {exchange} -> {CLUSTER}"
    queue = api(f"/api/queues/%2F/{q(qname)}")
    if not queue or queue["consumers"] < 1:
        return None
    for b in api(f"/api/exchanges/%2F/{q(exchange)}/bindings/source") or []:
        if b["destination_type"] != "exchange" or b["routing_key"] != key:
            continue
        x = api(f"/api/exchanges/%2F/{q(b['destination'])}")
        if not x or x["type"] != "x-federation-upstream":
            continue
        to_queue = [qb for qb in api(f"/api/exchanges/%2F/{q(x['name'])}/bindings/source")
                    if qb["destination"] == qname]
        if to_queue:
            return queue, x, b
    return None


def drain_rabbit(ch, queue, until_body, timeout=60):
    """Messages from RabbitMQ's `queue` up to and including the one whose
    body is `until_body`: (routing key, body, headers) each."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        got.append((method.routing_key, body.decode(), plain(props.headers or {})))
        if body.decode() == until_body:
            return got
    raise AssertionError(f"{until_body} never reached RabbitMQ's {queue}; got {got}")


def drain_warren(ch, queue):
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body.decode())


@pytest.fixture(scope="module")
def brokers():
    w, r = connect(WARREN_PORT), connect(RABBIT_PORT)
    wch, rch = w.channel(), r.channel()
    wch.confirm_delivery()
    for ch in (wch, rch):
        ch.exchange_declare("fed.x", "topic", durable=True)
        ch.exchange_declare("loop.x", "topic", durable=True)
    rch.queue_declare("fed.q", durable=True)
    rch.queue_bind("fed.q", "fed.x", "a.#")
    rch.queue_declare("loop.q", durable=True)
    rch.queue_bind("loop.q", "loop.x", "#")
    rabbitmqctl("set_parameter", "federation-upstream", "warren",
                json.dumps({"uri": UPSTREAM_URI, "max-hops": 1,
                            "expires": 3600000, "message-ttl": 600000}))
    rabbitmqctl("set_parameter", "federation-upstream", "warren-2hops",
                json.dumps({"uri": UPSTREAM_URI, "max-hops": 2}))
    rabbitmqctl("set_policy", "fed", r"^fed\.", json.dumps({"federation-upstream": "warren"}),
                "--apply-to", "exchanges")
    rabbitmqctl("set_policy", "loop", r"^loop\.", json.dumps({"federation-upstream": "warren-2hops"}),
                "--apply-to", "exchanges")
    yield wch, rch
    w.close()
    r.close()


def test_link_declares_what_rabbitmq_declares(brokers):
    queue, x, binding = wait_link("fed.x", "a.#")
    status = rabbitmqctl("eval", "rabbit_federation_status:status().")
    assert "running" in status, status
    # The queue the downstream consumes from, with the upstream's
    # expires / message-ttl.
    assert queue["durable"] is True
    assert queue["auto_delete"] is False
    assert queue["arguments"] == {"x-expires": 3600000, "x-message-ttl": 600000,
                                  "x-internal-purpose": "federation"}, queue["arguments"]
    consumers = [c for c in api("/api/consumers/%2F") if c["queue"]["name"] == queue["name"]]
    assert len(consumers) == 1, consumers
    assert consumers[0]["ack_required"] is True
    assert consumers[0]["prefetch_count"] == 1000
    # The x-federation-upstream exchange, declared with the link's arguments.
    assert x["name"] in (queue["name"] + " A", queue["name"] + " B"), x["name"]
    assert (x["durable"], x["auto_delete"], x["internal"]) == (True, True, True)
    assert x["arguments"] == {"x-max-hops": 1, "x-downstream-name": CLUSTER,
                              "x-downstream-vhost": "/", "x-internal-purpose": "federation"}, x
    # The downstream's binding key, with where the binding came from.
    bound_from = binding["arguments"]["x-bound-from"]
    assert len(bound_from) == 1
    assert bound_from[0]["cluster-name"] == CLUSTER
    assert bound_from[0]["vhost"] == "/"
    assert bound_from[0]["hops"] == 1
    # Publishing to it directly is refused: it is internal.
    conn = connect(WARREN_PORT)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish(x["name"], "", b"direct")
        assert e.value.reply_code == 403
    finally:
        conn.close()


def test_messages_go_to_rabbitmq_by_its_binding_keys(brokers):
    wch, rch = brokers
    _, x, _ = wait_link("fed.x", "a.#")
    wch.queue_declare("probe.fed", exclusive=True)
    wch.queue_bind("probe.fed", x["name"], "")
    wch.basic_publish("fed.x", "a.b", b"first", pika.BasicProperties(headers={"h": "v"}))
    wch.basic_publish("fed.x", "z.z", b"unbound")
    # One hop made already, x-max-hops 1: warren keeps it back.
    wch.basic_publish("fed.x", "a.c", b"one hop",
                      pika.BasicProperties(headers={"x-received-from": [hop("elsewhere")]}))
    wch.basic_publish("fed.x", "a.end", b"end")
    got = drain_rabbit(rch, "fed.q", "end")
    assert [(k, b) for k, b, _ in got] == [("a.b", "first"), ("a.end", "end")], got
    _, _, headers = got[0]
    assert headers["h"] == "v"
    assert headers["x-received-from"] == [{
        "uri": f"amqp://127.0.0.1:{WARREN_PORT}", "exchange": "fed.x", "redelivered": False,
        "cluster-name": "warren", "vhost": "/"}], headers
    # What warren's x-federation-upstream exchange routed.
    assert drain_warren(wch, "probe.fed") == ["first", "end"]
    time.sleep(1)
    assert rch.basic_get("fed.q", auto_ack=True)[0] is None


def test_loops_and_hop_counts(brokers):
    wch, rch = brokers
    _, x, _ = wait_link("loop.x", "#")
    assert x["arguments"]["x-max-hops"] == 2
    wch.queue_declare("probe.loop", exclusive=True)
    wch.queue_bind("probe.loop", x["name"], "")

    def path(*hops):
        return pika.BasicProperties(headers={"x-received-from": list(hops)})

    wch.basic_publish("loop.x", "k", b"fresh")
    wch.basic_publish("loop.x", "k", b"one hop", path(hop("elsewhere")))
    # Came from the downstream itself: never back there.
    wch.basic_publish("loop.x", "k", b"from rabbit", path(hop(CLUSTER)))
    # The same cluster name in another vhost is somewhere else.
    wch.basic_publish("loop.x", "k", b"other vhost", path(hop(CLUSTER, "other")))
    # Two hops made, x-max-hops 2.
    wch.basic_publish("loop.x", "k", b"two hops", path(hop("b"), hop("c")))
    wch.basic_publish("loop.x", "k", b"end")
    got = drain_rabbit(rch, "loop.q", "end")
    assert [b for _, b, _ in got] == ["fresh", "one hop", "other vhost", "end"], got
    # The path grows at the front.
    received = got[1][2]["x-received-from"]
    assert [h["cluster-name"] for h in received] == ["warren", "elsewhere"], received
    assert drain_warren(wch, "probe.loop") == ["fresh", "one hop", "other vhost", "end"]
