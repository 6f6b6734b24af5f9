"""pika over TLS (AMQPS), verifying the broker's certificate against a CA.

Runs only when the broker under test has a TLS listener: ``tests/pika.rs``
(``pika_over_tls``) starts one with certificates it made with the openssl
CLI and sets

    WARREN_AMQPS_PORT  the TLS listener's port
    WARREN_TLS_CA      the CA certificate (PEM) that signed the broker's
    WARREN_TLS_CLIENT_CERT, WARREN_TLS_CLIENT_KEY
                       a client certificate (CN=guest) that CA signed; the
                       broker verifies client certificates against the CA
                       and takes the EXTERNAL user from the common name
"""

import os
import ssl

import pika
import pytest

from conftest import HOST, PASSWORD, PORT, USER

AMQPS_PORT = os.environ.get("WARREN_AMQPS_PORT")
CA = os.environ.get("WARREN_TLS_CA")
CLIENT_CERT = os.environ.get("WARREN_TLS_CLIENT_CERT")
CLIENT_KEY = os.environ.get("WARREN_TLS_CLIENT_KEY")

pytestmark = pytest.mark.skipif(
    not AMQPS_PORT or not CA, reason="no TLS listener (WARREN_AMQPS_PORT)"
)


def tls_params(ca=CA, server_hostname="localhost"):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    return pika.ConnectionParameters(
        host=HOST,
        port=int(AMQPS_PORT),
        credentials=pika.PlainCredentials(USER, PASSWORD),
        ssl_options=pika.SSLOptions(ctx, server_hostname),
        connection_attempts=1,
    )


def test_publish_and_consume_over_tls():
    conn = pika.BlockingConnection(tls_params())
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        bodies = [b"tls-%d" % i for i in range(100)] + [b"x" * 300_000]
        for b in bodies:
            ch.basic_publish("", q, b)
        got = []
        for _ in bodies:
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None
            got.append(body)
        assert got == bodies
    finally:
        conn.close()


def test_plain_and_tls_side_by_side():
    plain = pika.BlockingConnection(
        pika.ConnectionParameters(
            host=HOST,
            port=PORT,
            credentials=pika.PlainCredentials(USER, PASSWORD),
        )
    )
    tls = pika.BlockingConnection(tls_params())
    try:
        pch = plain.channel()
        q = pch.queue_declare("", exclusive=False, auto_delete=False).method.queue
        tch = tls.channel()
        tch.basic_publish("", q, b"from tls")
        for _ in range(50):
            method, _props, body = pch.basic_get(q, auto_ack=True)
            if method is not None:
                break
            plain.sleep(0.05)
        assert body == b"from tls"
        pch.queue_delete(q)
    finally:
        tls.close()
        plain.close()


def test_untrusted_server_is_refused_by_the_client():
    # Verifying against the system's CAs only: the test CA is not among
    # them, so the client refuses the broker.
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    params = pika.ConnectionParameters(
        host=HOST,
        port=int(AMQPS_PORT),
        ssl_options=pika.SSLOptions(ctx, "localhost"),
        connection_attempts=1,
    )
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(params)
    # The broker goes on serving.
    conn = pika.BlockingConnection(tls_params())
    conn.close()


def mutual_params(credentials, with_cert=True):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=CA)
    if with_cert:
        ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY)
    return pika.ConnectionParameters(
        host=HOST,
        port=int(AMQPS_PORT),
        credentials=credentials,
        ssl_options=pika.SSLOptions(ctx, "localhost"),
        connection_attempts=1,
    )


@pytest.mark.skipif(not CLIENT_CERT, reason="no client certificate given")
def test_mutual_tls_with_plain_credentials():
    conn = pika.BlockingConnection(
        mutual_params(pika.PlainCredentials(USER, PASSWORD))
    )
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"mutual")
        method, _props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"mutual"
    finally:
        conn.close()


@pytest.mark.skipif(not CLIENT_CERT, reason="no client certificate given")
def test_external_login_from_the_client_certificate():
    conn = pika.BlockingConnection(
        mutual_params(pika.credentials.ExternalCredentials())
    )
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", q, b"ext-%d" % i)
        got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(10)]
        assert got == [b"ext-%d" % i for i in range(10)]
    finally:
        conn.close()


@pytest.mark.skipif(not CLIENT_CERT, reason="no client certificate given")
def test_external_without_a_client_certificate_is_not_offered():
    # No certificate: the broker does not offer EXTERNAL, and pika gives up
    # before logging in.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(
            mutual_params(pika.credentials.ExternalCredentials(), with_cert=False)
        )
    # Nor over plain AMQP.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(
            pika.ConnectionParameters(
                host=HOST,
                port=PORT,
                credentials=pika.credentials.ExternalCredentials(),
                connection_attempts=1,
            )
        )
    # Everyone else is still served.
    conn = pika.BlockingConnection(mutual_params(pika.credentials.ExternalCredentials()))
    conn.close()
