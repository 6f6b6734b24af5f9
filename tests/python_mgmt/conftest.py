"""Fixtures for the management API suite (requests + the classic
rabbitmqadmin).  Written against RabbitMQ 3.10's management plugin and run
against warren by tests/mgmt_py.rs.  Broker addresses:

    WARREN_MGMT_HOST / WARREN_MGMT_PORT   (default 127.0.0.1:15672)
    WARREN_AMQP_PORT                      (default 5672)

Names are unique per test (``names`` fixture) so the suite can run against
a shared broker; what a test declares through ``names`` is deleted after.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest
import requests

HOST = os.environ.get("WARREN_MGMT_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_MGMT_PORT", "15672"))
AMQP_PORT = int(os.environ.get("WARREN_AMQP_PORT", "5672"))
BASE = f"http://{HOST}:{PORT}"
AUTH = ("guest", "guest")
# The classic rabbitmqadmin, from RabbitMQ's management plugin (Debian's
# rabbitmq-server package ships it; tests/mgmt_py.rs passes its path).
RABBITMQADMIN = os.environ.get("WARREN_RABBITMQADMIN") or shutil.which("rabbitmqadmin")


def q(name):
    """Percent-encode one path segment (vhost `/` is `%2F`)."""
    return urllib.parse.quote(name, safe="")


class Api:
    def __init__(self, auth=AUTH):
        self.s = requests.Session()
        self.s.auth = auth

    def get(self, path, **kw):
        return self.s.get(BASE + path, timeout=20, **kw)

    def put(self, path, body=None):
        return self.s.put(BASE + path, json=body if body is not None else {}, timeout=20)

    def post(self, path, body=None):
        return self.s.post(BASE + path, json=body if body is not None else {}, timeout=20)

    def delete(self, path, **kw):
        return self.s.delete(BASE + path, timeout=20, **kw)

    def ok(self, path):
        r = self.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()


@pytest.fixture
def api():
    return Api()


@pytest.fixture
def names(api):
    made = []

    def make(prefix):
        n = f"test.{prefix}.{uuid.uuid4().hex[:12]}"
        made.append(n)
        return n

    yield make
    for n in made:
        api.delete(f"/api/queues/%2F/{q(n)}")
        api.delete(f"/api/exchanges/%2F/{q(n)}")
        api.delete(f"/api/vhosts/{q(n)}")
        api.delete(f"/api/users/{q(n)}")


def eventually(what, f, timeout=15):
    """Wait until f() is truthy (RabbitMQ's stats lag by a few seconds)."""
    deadline = time.time() + timeout
    while True:
        v = f()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def rabbitmqadmin(*args, check=True):
    """Run RabbitMQ's rabbitmqadmin against the broker under test."""
    assert RABBITMQADMIN, "rabbitmqadmin not found: set WARREN_RABBITMQADMIN"
    cmd = [sys.executable, RABBITMQADMIN, "-H", HOST, "-P", str(PORT),
           "-u", AUTH[0], "-p", AUTH[1], *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r
