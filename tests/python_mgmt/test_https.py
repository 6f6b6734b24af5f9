"""The management API over HTTPS (RabbitMQ's ``management.ssl.*``), with
requests and the classic rabbitmqadmin, verifying the broker's certificate
against the CA ``tests/mgmt_py.rs`` made:

    WARREN_HTTPS_PORT  the HTTPS listener's port (127.0.0.1)
    WARREN_TLS_CA      the CA certificate (PEM)
"""

import os
import subprocess
import sys

import pytest
import requests

from conftest import AUTH, RABBITMQADMIN

HTTPS_PORT = os.environ.get("WARREN_HTTPS_PORT")
CA = os.environ.get("WARREN_TLS_CA")

pytestmark = pytest.mark.skipif(
    not HTTPS_PORT or not CA, reason="no HTTPS listener (WARREN_HTTPS_PORT)"
)


def url(path):
    # The certificate names localhost and 127.0.0.1.
    return f"https://localhost:{HTTPS_PORT}{path}"


def test_overview_over_https_lists_the_https_listener():
    r = requests.get(url("/api/overview"), auth=AUTH, verify=CA, timeout=10)
    assert r.status_code == 200
    ports = [l["port"] for l in r.json()["listeners"] if l["protocol"] == "https"]
    assert ports == [int(HTTPS_PORT)]


def test_declare_and_delete_over_https(names):
    q = names("https")
    r = requests.put(
        url(f"/api/queues/%2F/{q}"),
        auth=AUTH,
        json={"durable": False},
        verify=CA,
        timeout=10,
    )
    assert r.status_code in (201, 204)
    r = requests.get(url(f"/api/queues/%2F/{q}"), auth=AUTH, verify=CA, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == q
    r = requests.delete(url(f"/api/queues/%2F/{q}"), auth=AUTH, verify=CA, timeout=10)
    assert r.status_code == 204


def test_a_client_that_does_not_trust_the_broker_refuses_it():
    # The system's CAs do not include the test CA.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url("/api/overview"), auth=AUTH, timeout=10)
    # The listener goes on serving.
    r = requests.get(url("/api/overview"), auth=AUTH, verify=CA, timeout=10)
    assert r.status_code == 200


def test_wrong_credentials_over_https_are_401():
    r = requests.get(url("/api/overview"), auth=("guest", "nope"), verify=CA, timeout=10)
    assert r.status_code == 401


def test_rabbitmqadmin_over_https():
    assert RABBITMQADMIN, "rabbitmqadmin not found: set WARREN_RABBITMQADMIN"
    out = subprocess.run(
        [
            sys.executable,
            RABBITMQADMIN,
            "-H",
            "localhost",
            "-P",
            HTTPS_PORT,
            "--ssl",
            f"--ssl-ca-cert-file={CA}",
            "-u",
            "guest",
            "-p",
            "guest",
            "-f",
            "tsv",
            "-q",
            "list",
            "vhosts",
            "name",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "/" in out.stdout.split()
