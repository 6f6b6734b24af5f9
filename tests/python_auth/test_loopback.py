"""loopback_users: guest may only log in over a connection to a loopback
address.  RabbitMQ (rabbit_net:is_loopback) judges the address the client
connected to -- the server socket's own address -- not the client's.

Environment:

    WARREN_AMQP_HOST / _PORT      a loopback address of the broker
    WARREN_REMOTE_HOST / _PORT    an address of the broker that is not
                                  loopback to it
    WARREN_REMOTE_SOURCE          the client address to connect from when
                                  looking remote (default: WARREN_REMOTE_HOST)

warren (tests/auth.rs): listeners on 127.0.0.1 and 127.0.0.2 with
``loopback_addresses = 127.0.0.1``, so 127.0.0.2 is remote.  RabbitMQ counts
all of 127/8 as loopback: use the machine's own non-loopback address as
WARREN_REMOTE_HOST.  The broker must hold definitions.json (user alice).
"""

import contextlib
import os
import socket

import pika
import pika.adapters.utils.connection_workflow as _workflow
import pytest
from pika.exceptions import ProbableAuthenticationError

from conftest import HOST, PASSWORDS, PORT

REMOTE_HOST = os.environ.get("WARREN_REMOTE_HOST", "127.0.0.2")
REMOTE_PORT = int(os.environ.get("WARREN_REMOTE_PORT", str(PORT)))
REMOTE_SOURCE = os.environ.get("WARREN_REMOTE_SOURCE", REMOTE_HOST)

# Local addresses of the sockets bound by source_address().
_bound = []


class _SocketModule:
    """The `socket` module as pika's connection workflow sees it, with
    `socket.socket` swapped for one that binds first."""

    def __init__(self, cls):
        self.socket = cls

    def __getattr__(self, name):
        return getattr(socket, name)


@contextlib.contextmanager
def source_address(addr):
    """Broker connections pika opens inside the block come from `addr`."""

    class Bound(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            super().__init__(family, type, proto, fileno)
            if family == socket.AF_INET and fileno is None:
                self.bind((addr, 0))
                _bound.append(self.getsockname()[0])

    _workflow.socket = _SocketModule(Bound)
    try:
        yield
    finally:
        _workflow.socket = socket


def login(user, host, port, source):
    with source_address(source):
        c = pika.BlockingConnection(
            pika.ConnectionParameters(
                host=host,
                port=port,
                virtual_host="auth-test" if user != "guest" else "/",
                credentials=pika.PlainCredentials(
                    user, "guest" if user == "guest" else PASSWORDS[user]
                ),
                connection_attempts=1,
                socket_timeout=5,
            )
        )
    assert _bound[-1] == source
    return c


def test_guest_over_loopback_is_accepted():
    login("guest", HOST, PORT, HOST).close()


def test_guest_over_a_non_loopback_address_is_refused():
    with pytest.raises(ProbableAuthenticationError) as err:
        login("guest", REMOTE_HOST, REMOTE_PORT, REMOTE_SOURCE)
    assert _bound[-1] == REMOTE_SOURCE
    assert err.value.args == (
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using "
        "authentication mechanism PLAIN. For details see the broker logfile.'",
    )


def test_guest_from_a_remote_source_to_a_loopback_address_is_accepted():
    # What counts is where the client connected to.
    login("guest", HOST, PORT, REMOTE_SOURCE).close()


def test_other_users_may_log_in_over_any_address():
    c = login("alice", REMOTE_HOST, REMOTE_PORT, REMOTE_SOURCE)
    assert c.is_open
    c.close()
