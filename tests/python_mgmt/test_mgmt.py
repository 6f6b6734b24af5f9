"""The management HTTP API through `requests` and through rabbitmqadmin,
checking the fields those clients and monitoring tools read.

`rabbitmqadmin` in this directory is the classic CLI exactly as RabbitMQ
3.10.8 serves it at /cli/rabbitmqadmin (MPL 2.0, unmodified; it is not on
PyPI).
"""

import base64
import json
import os
import socket
import tempfile

from conftest import AMQP_PORT, BASE, HOST, Api, eventually, q, rabbitmqadmin
import pytest
import requests


# ---------------------------------------------------------------------------
# plain HTTP
# ---------------------------------------------------------------------------

def test_auth_required():
    r = requests.get(BASE + "/api/overview", timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
    r = requests.get(BASE + "/api/overview", auth=("guest", "wrong"), timeout=10)
    assert r.status_code == 401


def test_overview_and_nodes(api):
    ov = api.ok("/api/overview")
    for k in ("management_version", "rabbitmq_version", "product_name", "product_version",
              "node", "object_totals", "queue_totals", "message_stats", "listeners"):
        assert k in ov, k
    for k in ("connections", "channels", "exchanges", "queues", "consumers"):
        assert isinstance(ov["object_totals"][k], int)
    amqp = [lst for lst in ov["listeners"] if lst["protocol"] == "amqp"]
    assert any(lst["port"] == AMQP_PORT for lst in amqp)
    nodes = api.ok("/api/nodes")
    assert len(nodes) == 1
    n = nodes[0]
    assert n["name"] == ov["node"]
    assert n["running"] is True and n["type"] == "disc"
    for k in ("mem_used", "fd_used", "sockets_used", "proc_used", "disk_free", "uptime"):
        assert isinstance(n[k], int), k


def test_queue_lifecycle_publish_get(api, names):
    qn = names("q")
    path = f"/api/queues/%2F/{q(qn)}"
    assert api.put(path, {"durable": False, "auto_delete": False,
                          "arguments": {"x-max-length": 100}}).status_code == 201
    assert api.put(path, {"durable": False, "arguments": {"x-max-length": 100}}).status_code == 204
    r = api.put(path, {"durable": True})
    assert r.status_code == 400 and "inequivalent" in r.json()["reason"]
    info = api.ok(path)
    assert info["name"] == qn and info["vhost"] == "/"
    assert info["durable"] is False and info["exclusive"] is False
    assert info["arguments"] == {"x-max-length": 100}

    for i in range(3):
        r = api.post("/api/exchanges/%2F/amq.default/publish",
                     {"routing_key": qn, "payload": f"m{i}", "payload_encoding": "string",
                      "properties": {"delivery_mode": 1, "headers": {"i": i}}})
        assert r.status_code == 200 and r.json() == {"routed": True}
    eventually("3 messages", lambda: api.ok(path).get("messages") == 3)
    listed = [x for x in api.ok("/api/queues/%2F") if x["name"] == qn][0]
    assert listed["messages_ready"] == 3 and listed["messages_unacknowledged"] == 0
    eventually("publish stats",
               lambda: api.ok(path).get("message_stats", {}).get("publish") == 3)
    assert "rate" in api.ok(path)["message_stats"]["publish_details"]

    got = api.post(f"{path}/get", {"count": 2, "ackmode": "ack_requeue_false",
                                   "encoding": "auto", "truncate": 50000}).json()
    assert [m["payload"] for m in got] == ["m0", "m1"]
    assert got[0]["properties"]["headers"] == {"i": 0}
    assert got[0]["message_count"] == 2 and got[1]["message_count"] == 1
    assert got[0]["redelivered"] is False and got[0]["exchange"] == ""
    b64 = api.post(f"{path}/get", {"count": 1, "ackmode": "ack_requeue_true",
                                   "encoding": "base64"}).json()
    assert base64.b64decode(b64[0]["payload"]) == b"m2"
    assert b64[0]["payload_encoding"] == "base64"
    assert api.delete(f"{path}/contents").status_code == 204
    eventually("purged", lambda: api.ok(path).get("messages") == 0)
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404


def test_exchange_and_bindings(api, names):
    x, qn = names("x"), names("q")
    assert api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "direct", "durable": False}).status_code == 201
    assert api.put(f"/api/queues/%2F/{q(qn)}", {"durable": False}).status_code == 201
    r = api.post(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}", {"routing_key": "rk", "arguments": {}})
    assert r.status_code == 201
    bs = api.ok(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")
    assert len(bs) == 1
    b = bs[0]
    assert (b["source"], b["destination"], b["destination_type"], b["routing_key"]) == \
        (x, qn, "queue", "rk")
    r = api.post(f"/api/exchanges/%2F/{q(x)}/publish",
                 {"routing_key": "rk", "payload": "hi", "payload_encoding": "string", "properties": {}})
    assert r.json()["routed"] is True
    r = api.post(f"/api/exchanges/%2F/{q(x)}/publish",
                 {"routing_key": "other", "payload": "hi", "payload_encoding": "string", "properties": {}})
    assert r.json()["routed"] is False
    assert api.delete(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/{q(b['properties_key'])}").status_code == 204
    assert api.ok(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}") == []


def test_users_vhosts_permissions_and_definitions(api, names):
    vh, user = names("vh"), names("user")
    assert api.put(f"/api/vhosts/{q(vh)}").status_code == 201
    assert api.put(f"/api/users/{q(user)}", {"password": "pw", "tags": "monitoring"}).status_code == 201
    assert api.put(f"/api/permissions/{q(vh)}/{q(user)}",
                   {"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    u = api.ok(f"/api/users/{q(user)}")
    assert u["tags"] == ["monitoring"]
    assert u["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    mon = Api(auth=(user, "pw"))
    assert mon.ok("/api/whoami")["name"] == user
    # Only administrators manage vhosts (RabbitMQ answers 401, warren 403).
    assert mon.put(f"/api/vhosts/{q(names('vh3'))}").status_code in (401, 403)

    qn = names("dq")
    assert api.put(f"/api/queues/{q(vh)}/{q(qn)}", {"durable": True}).status_code == 201
    defs = api.ok("/api/definitions")
    assert any(x["name"] == user for x in defs["users"])
    assert any(x["name"] == vh for x in defs["vhosts"])
    assert any(p["user"] == user and p["vhost"] == vh for p in defs["permissions"])
    assert any(x["name"] == qn and x["vhost"] == vh for x in defs["queues"])

    # Import into another vhost a one-vhost export, the way
    # `rabbitmqadmin -V vhost import` does.
    vh2 = names("vh2")
    assert api.put(f"/api/vhosts/{q(vh2)}").status_code == 201
    one = api.ok(f"/api/definitions/{q(vh)}")
    r = api.post(f"/api/definitions/{q(vh2)}", one)
    assert r.status_code in (201, 204), r.text
    assert any(x["name"] == qn for x in api.ok(f"/api/queues/{q(vh2)}"))


def test_metrics_without_auth(api):
    if api.ok("/api/overview")["product_name"] != "Warren":
        pytest.skip("RabbitMQ serves Prometheus metrics on its own port (15692)")
    r = requests.get(BASE + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("rabbitmq_connections", "rabbitmq_queues", "rabbitmq_consumers",
                 "rabbitmq_global_messages_received_total",
                 "rabbitmq_process_resident_memory_bytes", "warren_store_fsyncs_total"):
        assert f"\n{name} " in text or text.startswith(f"{name} ") or f"{name}{{" in text, name


def test_chunked_request_body(api, names):
    # requests sends a generator body with Transfer-Encoding: chunked (no
    # Content-Length): one chunk per item.
    qn = names("q")

    def body():
        yield b'{"durable": false, '
        yield b'"arguments": {"x-max-length": 7}}'

    r = api.s.put(BASE + f"/api/queues/%2F/{q(qn)}", data=body(),
                  headers={"content-type": "application/json"}, timeout=20)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 201, r.text
    assert api.ok(f"/api/queues/%2F/{q(qn)}")["arguments"] == {"x-max-length": 7}


def test_keep_alive_on_one_socket():
    s = requests.Session()
    s.auth = ("guest", "guest")
    for _ in range(5):
        assert s.get(BASE + "/api/whoami", timeout=10).json()["name"] == "guest"


def test_connection_listed_and_closed(api):
    # A bare AMQP 0-9-1 handshake with a raw socket (no client library in
    # this venv): header, start-ok, tune-ok, open.
    import struct

    sock = socket.create_connection((HOST, AMQP_PORT), timeout=10)

    def frame(kind, ch, payload):
        return struct.pack(">BHI", kind, ch, len(payload)) + payload + b"\xce"

    def method(cls, mid, args):
        return frame(1, 0, struct.pack(">HH", cls, mid) + args)

    def shortstr(s):
        return bytes([len(s)]) + s

    def longstr(s):
        return struct.pack(">I", len(s)) + s

    def read_frame():
        head = b""
        while len(head) < 7:
            head += sock.recv(7 - len(head))
        kind, ch, size = struct.unpack(">BHI", head)
        body = b""
        while len(body) < size + 1:
            body += sock.recv(size + 1 - len(body))
        return kind, body[:-1]

    sock.sendall(b"AMQP\x00\x00\x09\x01")
    read_frame()  # start
    props = shortstr(b"product") + b"S" + longstr(b"python-raw")
    sock.sendall(method(10, 11, longstr(props) + shortstr(b"PLAIN") +
                        longstr(b"\x00guest\x00guest") + shortstr(b"en_US")))
    _, tune = read_frame()
    channel_max, frame_max, _hb = struct.unpack(">HIH", tune[4:12])
    sock.sendall(method(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    sock.sendall(method(10, 40, shortstr(b"/") + shortstr(b"") + b"\x00"))
    read_frame()  # open-ok

    def ours():
        return [c for c in api.ok("/api/connections")
                if c["client_properties"].get("product") == "python-raw"]

    conns = eventually("connection listed", ours)
    c = conns[0]
    assert c["protocol"] == "AMQP 0-9-1" and c["user"] == "guest" and c["vhost"] == "/"
    assert c["peer_port"] == sock.getsockname()[1]
    assert api.delete(f"/api/connections/{q(c['name'])}").status_code == 204
    kind, payload = read_frame()
    assert kind == 1 and payload[:4] == struct.pack(">HH", 10, 50)
    assert struct.unpack(">H", payload[4:6])[0] == 320
    sock.close()


# ---------------------------------------------------------------------------
# rabbitmqadmin
# ---------------------------------------------------------------------------

def test_rabbitmqadmin_declare_list_publish_get(api, names):
    qn = names("adm")
    rabbitmqadmin("declare", "queue", f"name={qn}", "durable=false")
    out = rabbitmqadmin("-f", "tsv", "list", "queues", "name", "messages").stdout
    assert qn in out.split()
    rabbitmqadmin("publish", "exchange=amq.default", f"routing_key={qn}", "payload=hello")
    eventually("message", lambda: api.ok(f"/api/queues/%2F/{q(qn)}").get("messages") == 1)
    out = rabbitmqadmin("-f", "raw_json", "get", f"queue={qn}", "ackmode=ack_requeue_false").stdout
    msgs = json.loads(out)
    assert msgs[0]["payload"] == "hello"
    # Default listing columns and other listings parse.
    out = rabbitmqadmin("list", "queues").stdout
    assert qn in out
    for what in ("exchanges", "bindings", "vhosts", "users", "permissions", "nodes",
                 "connections", "channels", "consumers", "policies"):
        rabbitmqadmin("list", what)
    out = rabbitmqadmin("show", "overview").stdout
    assert "rabbitmq_version" in out
    rabbitmqadmin("delete", "queue", f"name={qn}")
    assert api.get(f"/api/queues/%2F/{q(qn)}").status_code == 404


def test_rabbitmqadmin_exchange_binding_and_definitions(api, names):
    x, qn = names("admx"), names("admq")
    rabbitmqadmin("declare", "exchange", f"name={x}", "type=topic", "durable=false")
    rabbitmqadmin("declare", "queue", f"name={qn}", "durable=false", 'arguments={"x-max-length": 5}')
    rabbitmqadmin("declare", "binding", f"source={x}", f"destination={qn}", "routing_key=a.#")
    out = rabbitmqadmin("-f", "raw_json", "list", "bindings").stdout
    assert any(b["source"] == x and b["destination"] == qn and b["routing_key"] == "a.#"
               for b in json.loads(out))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "defs.json")
        rabbitmqadmin("export", path)
        with open(path) as f:
            defs = json.load(f)
        assert any(e["name"] == x and e["type"] == "topic" for e in defs["exchanges"])
        assert any(e["name"] == qn and e["arguments"] == {"x-max-length": 5} for e in defs["queues"])
        # Importing the same definitions again is harmless.
        rabbitmqadmin("import", path)
    rabbitmqadmin("delete", "binding", f"source={x}", "destination_type=queue",
                  f"destination={qn}", "properties_key=a.%23")
    assert api.ok(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}") == []
    rabbitmqadmin("delete", "exchange", f"name={x}")
    rabbitmqadmin("delete", "queue", f"name={qn}")
