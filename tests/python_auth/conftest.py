"""Helpers for the users / vhosts / permissions suite (pika).

The broker under test must hold ``definitions.json`` (next to this file):
warren gets it with ``--definitions`` (tests/auth.rs), RabbitMQ with
``warren ctl import_definitions tests/python_auth/definitions.json`` (or
``rabbitmqctl import_definitions``).  Written against RabbitMQ 3.10 first.

    WARREN_AMQP_HOST  (default 127.0.0.1)
    WARREN_AMQP_PORT  (default 5672)
"""

import contextlib
import os
import signal
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

HOST = os.environ.get("WARREN_AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_AMQP_PORT", "5672"))
TEST_TIMEOUT_S = 30

VHOST = "auth-test"
OTHER = "auth-other"

# Users of definitions.json and their passwords (the file holds only the
# RabbitMQ sha256 hashes).
PASSWORDS = {
    "alice": "alice-Secr3t",
    "bob": "b0b pass with spaces",
    "carol": "pässwörd✓",
    "noconf": "noconf-pw",
    "nowrite": "nowrite-pw",
    "noread": "noread-pw",
    "outsider": "outsider-pw",
    "dave": "dave-pw",
}


def params(user, vhost=VHOST, password=None, host=HOST, **kw):
    return pika.ConnectionParameters(
        host=host,
        port=PORT,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(
            user, PASSWORDS[user] if password is None else password
        ),
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=10,
        **kw,
    )


def connect(user, vhost=VHOST, password=None, **kw):
    return pika.BlockingConnection(params(user, vhost, password, **kw))


def unique(base):
    return "%s-%s" % (base, uuid.uuid4().hex[:10])


@contextlib.contextmanager
def refused(code, text):
    """The block must get its channel closed with `code` and exactly `text`."""
    with pytest.raises(ChannelClosedByBroker) as err:
        yield
    assert (err.value.reply_code, err.value.reply_text) == (code, text)


def access_refused(kind, name, user, vhost=VHOST):
    return refused(
        403,
        "ACCESS_REFUSED - access to %s '%s' in vhost '%s' refused for user '%s'"
        % (kind, name, vhost, user),
    )


@pytest.fixture(autouse=True)
def _per_test_timeout():
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %ss" % TEST_TIMEOUT_S)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def conn_as():
    """conn_as(user, vhost=...) -> an open BlockingConnection, closed after."""
    opened = []

    def make(user, vhost=VHOST, **kw):
        c = connect(user, vhost, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass
