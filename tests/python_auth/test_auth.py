"""Users, vhosts and permissions, against a broker holding definitions.json.

Every expected reply code and text is RabbitMQ 3.10's.
"""

import pytest
from pika import spec
from pika.exceptions import (
    ChannelClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

from conftest import (
    OTHER,
    PASSWORDS,
    VHOST,
    access_refused,
    connect,
    refused,
    unique,
)

LOGIN_REFUSED = (
    "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using "
    "authentication mechanism PLAIN. For details see the broker logfile.'"
)


def vhost_refused(vhost, user):
    return (
        "ConnectionClosedByBroker: (530) \"NOT_ALLOWED - access to vhost '%s' "
        "refused for user '%s'\"" % (vhost, user),
    )


# ---------------------------------------------------------------------------
# logging in


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "noconf", "nowrite", "noread"])
def test_imported_users_log_in_with_their_passwords(user):
    c = connect(user)
    assert c.is_open
    c.close()


def test_user_without_permissions_authenticates_but_is_refused_the_vhost_530():
    # The password is right (else 403): the refusal is connection.open's.
    with pytest.raises(ProbableAccessDeniedError) as err:
        connect("outsider")
    assert err.value.args == vhost_refused(VHOST, "outsider")


def test_user_without_permission_on_that_vhost_is_refused_530():
    with pytest.raises(ProbableAccessDeniedError) as err:
        connect("bob", OTHER)
    assert err.value.args == vhost_refused(OTHER, "bob")
    # The same user opens the vhost it has permissions on.
    connect("bob", VHOST).close()


@pytest.mark.parametrize(
    "user,password",
    [
        ("alice", "wrong-password"),
        ("alice", ""),
        ("carol", "passwort"),
        ("carol", "pässwörd"),
        ("no-such-user", "alice-Secr3t"),
    ],
)
def test_wrong_password_is_probable_authentication_error(user, password):
    with pytest.raises(ProbableAuthenticationError) as err:
        connect(user, password=password)
    assert err.value.args == (LOGIN_REFUSED,)


# ---------------------------------------------------------------------------
# what definitions.json declared


def test_imported_queues_keep_their_arguments():
    c = connect("alice")
    ch = c.channel()
    for q in ["orders", "orders.dead", "audit.log", "shared"]:
        assert isinstance(ch.queue_declare(q, passive=True).method, spec.Queue.DeclareOk)
    # Re-declaring with the imported arguments is fine; with others it is not.
    ch.queue_declare(
        "orders",
        durable=True,
        arguments={
            "x-queue-type": "classic",
            "x-max-length": 1000,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "orders.dlx",
        },
    )
    with refused(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'orders' in "
        "vhost 'auth-test': received '5' but current is '1000'",
    ):
        ch.queue_declare(
            "orders",
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-max-length": 5,
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": "orders.dlx",
            },
        )
    ch = c.channel()
    with refused(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'orders.dead' in "
        "vhost 'auth-test': received 'false' but current is 'true'",
    ):
        ch.queue_declare("orders.dead", arguments={"x-message-ttl": 86400000})
    c.close()


def test_imported_exchanges_and_bindings_route():
    c = connect("alice")
    ch = c.channel()
    for q in ["orders", "orders.dead", "audit.log"]:
        ch.queue_purge(q)
    ch.exchange_declare("orders.topic", passive=True)
    ch.confirm_delivery()
    body = unique("order").encode()
    # orders.topic -> orders (order.#) and -> audit (exchange, #) -> audit.log
    ch.basic_publish("orders.topic", "order.created", body)
    ch.basic_publish("orders.topic", "invoice.sent", b"not an order")
    assert ch.queue_declare("orders", passive=True).method.message_count == 1
    assert ch.queue_declare("audit.log", passive=True).method.message_count == 2
    # audit is internal: clients cannot publish to it.
    with refused(
        403,
        "ACCESS_REFUSED - cannot publish to internal exchange 'audit' in vhost 'auth-test'",
    ):
        ch.basic_publish("audit", "", b"x")
    ch = c.channel()
    # orders dead-letters through orders.dlx (fanout) into orders.dead.
    method, props, got = ch.basic_get("orders")
    assert got == body
    ch.basic_nack(method.delivery_tag, requeue=False)
    for _ in range(50):
        if ch.queue_declare("orders.dead", passive=True).method.message_count == 1:
            break
        c.sleep(0.05)
    method, props, got = ch.basic_get("orders.dead", auto_ack=True)
    assert got == body
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["exchange"]) == (
        "orders",
        "rejected",
        "orders.topic",
    )
    for q in ["orders", "orders.dead", "audit.log"]:
        ch.queue_purge(q)
    c.close()


def test_same_queue_name_in_two_vhosts_holds_separate_messages():
    a = connect("alice", VHOST)
    b = connect("alice", OTHER)
    cha, chb = a.channel(), b.channel()
    cha.queue_purge("shared")
    chb.queue_purge("shared")
    cha.confirm_delivery()
    chb.confirm_delivery()
    cha.basic_publish("", "shared", b"in auth-test")
    chb.basic_publish("", "shared", b"in auth-other 1")
    chb.basic_publish("", "shared", b"in auth-other 2")
    assert cha.queue_declare("shared", passive=True).method.message_count == 1
    assert chb.queue_declare("shared", passive=True).method.message_count == 2
    assert cha.basic_get("shared", auto_ack=True)[2] == b"in auth-test"
    assert cha.basic_get("shared", auto_ack=True)[0] is None
    assert chb.basic_get("shared", auto_ack=True)[2] == b"in auth-other 1"
    assert chb.basic_get("shared", auto_ack=True)[2] == b"in auth-other 2"
    # Deleting one leaves the other.
    tmp = unique("tmp")
    cha.queue_declare(tmp, auto_delete=False)
    chb.queue_declare(tmp, auto_delete=False)
    chb.basic_publish("", tmp, b"kept")
    cha.queue_delete(tmp)
    assert chb.queue_declare(tmp, passive=True).method.message_count == 1
    chb.queue_delete(tmp)
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# configure: declare and delete


def test_configure_permission_guards_declare_and_delete(conn_as):
    c = conn_as("noconf")  # configure ^noconf-
    ch = c.channel()
    # Passive declares need no permission at all.
    ch.queue_declare("orders", passive=True)
    ch.exchange_declare("orders.topic", passive=True)
    with access_refused("queue", "orders", "noconf"):
        ch.queue_declare("orders", durable=True, arguments={"x-max-length": 1000})
    ch = c.channel()
    with access_refused("exchange", "new-x", "noconf"):
        ch.exchange_declare("new-x", "direct")
    ch = c.channel()
    with access_refused("queue", "orders", "noconf"):
        ch.queue_delete("orders")
    ch = c.channel()
    with access_refused("exchange", "orders.topic", "noconf"):
        ch.exchange_delete("orders.topic")
    # What the pattern allows works.
    ch = c.channel()
    q = unique("noconf-q")
    ch.queue_declare(q)
    ch.exchange_declare(q, "fanout")
    ch.queue_bind(q, q)
    ch.exchange_delete(q)
    ch.queue_delete(q)


# ---------------------------------------------------------------------------
# write: publish, bind on the destination


def test_write_permission_guards_publish(conn_as):
    c = conn_as("nowrite")  # write "" (matches nothing)
    ch = c.channel()
    ch.confirm_delivery()
    with access_refused("exchange", "orders.topic", "nowrite"):
        ch.basic_publish("orders.topic", "order.created", b"x")
    ch = c.channel()
    ch.confirm_delivery()
    with access_refused("exchange", "amq.default", "nowrite"):
        ch.basic_publish("", "orders", b"x")
    # Reading is allowed.
    ch = c.channel()
    ch.basic_get("orders")


def test_write_permission_guards_binding_destination(conn_as):
    c = conn_as("nowrite")
    ch = c.channel()
    with access_refused("queue", "orders", "nowrite"):
        ch.queue_bind("orders", "orders.topic", "order.new")
    ch = c.channel()
    with access_refused("exchange", "audit", "nowrite"):
        ch.exchange_bind(destination="audit", source="orders.topic", routing_key="x")
    ch = c.channel()
    with access_refused("queue", "orders", "nowrite"):
        ch.queue_unbind("orders", "orders.topic", "order.#")


# ---------------------------------------------------------------------------
# read: consume, get, purge, bind on the source


def test_read_permission_guards_get_consume_purge(conn_as):
    c = conn_as("noread")  # read ^noread-
    ch = c.channel()
    with access_refused("queue", "orders", "noread"):
        ch.basic_get("orders")
    ch = c.channel()
    with access_refused("queue", "orders", "noread"):
        ch.basic_consume("orders", lambda *a: None)
    ch = c.channel()
    with access_refused("queue", "orders", "noread"):
        ch.queue_purge("orders")
    # Writing is allowed.
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("orders.topic", "nothing.matches", b"x")


def test_read_permission_guards_binding_source(conn_as):
    c = conn_as("noread")
    ch = c.channel()
    q = unique("noread-q")
    ch.queue_declare(q, exclusive=True)
    with access_refused("exchange", "orders.topic", "noread"):
        ch.queue_bind(q, "orders.topic", "order.#")
    ch = c.channel()
    with access_refused("exchange", "orders.topic", "noread"):
        ch.exchange_bind(destination="audit", source="orders.topic", routing_key="y")
    # Its own queue it may read, and bind from its own exchange.
    ch = c.channel()
    ch.queue_declare(q + "-2", exclusive=True)
    ch.exchange_declare(q + "-x", "fanout", auto_delete=True)
    ch.queue_bind(q + "-2", q + "-x")
    ch.basic_get(q + "-2")
    ch.exchange_delete(q + "-x")


def test_channel_error_leaves_the_connection_usable(conn_as):
    c = conn_as("noread")
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker):
        ch.basic_get("orders")
    assert c.is_open
    c.channel().queue_declare("orders", passive=True)


# ---------------------------------------------------------------------------
# RabbitMQ's regular expressions (PCRE, look-around included)


def test_permission_patterns_with_look_ahead(conn_as):
    c = conn_as("dave")  # configure ^(?!amq\.).*
    ch = c.channel()
    q = unique("dave-q")
    ch.queue_declare(q, exclusive=True)
    ch.exchange_declare(q + "-x", "fanout", auto_delete=True)
    ch.exchange_delete(q + "-x")
    # amq.* is refused by the look-ahead (RabbitMQ checks the reserved
    # prefix only after the permission).
    ch = c.channel()
    with access_refused("exchange", "amq.dave", "dave"):
        ch.exchange_declare("amq.dave", "fanout", passive=False)


# ---------------------------------------------------------------------------
# topic permissions: routing keys on topic exchanges


def topic_refused(key, exchange, user):
    return refused(
        403,
        "ACCESS_REFUSED - access to topic '%s' in exchange '%s' in vhost '%s' "
        "refused for user '%s'" % (key, exchange, VHOST, user),
    )


def test_topic_permission_limits_publishing_routing_keys(conn_as):
    c = conn_as("dave")  # write ^public\.|^{username}\. on amq.topic
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "public.news", b"x")
    ch.basic_publish("amq.topic", "dave.inbox", b"x")  # {username} expanded
    with topic_refused("payroll.secret", "amq.topic", "dave"):
        ch.basic_publish("amq.topic", "payroll.secret", b"x")
    ch = c.channel()
    ch.confirm_delivery()
    with topic_refused("alice.inbox", "amq.topic", "dave"):
        ch.basic_publish("amq.topic", "alice.inbox", b"x")


def test_topic_permission_limits_binding_keys(conn_as):
    c = conn_as("dave")  # read ^public\. on amq.topic
    ch = c.channel()
    q = unique("dave-bind")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, "amq.topic", "public.#")
    with topic_refused("payroll.#", "amq.topic", "dave"):
        ch.queue_bind(q, "amq.topic", "payroll.#")
    ch = c.channel()
    with topic_refused("payroll.#", "amq.topic", "dave"):
        ch.queue_unbind(q, "amq.topic", "payroll.#")
    # Consuming has no routing key to check.
    ch = c.channel()
    ch.basic_consume(q, lambda *a: None)


def test_topic_permissions_apply_to_topic_exchanges_only(conn_as):
    # An empty pattern allows nothing, but amq.direct is not a topic exchange.
    c = conn_as("dave")
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", "anything", b"x")
    q = unique("dave-direct")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, "amq.direct", "anything")
    # A topic exchange without a topic permission is not limited.
    ch.exchange_declare(q + "-t", "topic", auto_delete=True)
    ch.basic_publish(q + "-t", "payroll.secret", b"x")
    ch.exchange_delete(q + "-t")
