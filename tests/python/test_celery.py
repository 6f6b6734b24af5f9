"""Celery end to end: a real worker process (solo pool) consuming tasks from
the broker, results over the rpc:// backend, remote control commands over
the pidbox broadcast exchange, and kombu's SimpleQueue.

The worker is started per module from ``celery_app.py`` on a unique queue and
with a unique node name, and always killed at the end.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import HOST, PASSWORD, PORT, USER, eventually

import kombu  # from requirements.txt (with celery): a missing one is an error

HERE = os.path.dirname(os.path.abspath(__file__))
N_TASKS = 200


def celery_env(queue):
    env = dict(os.environ)
    env.update(
        WARREN_AMQP_HOST=HOST,
        WARREN_AMQP_PORT=str(PORT),
        CELERY_TEST_QUEUE=queue,
        PYTHONPATH=HERE + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def celery_cli(env, *args, timeout=30):
    """Run `celery -A celery_app ARGS`; returns (exit code, output)."""
    p = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_app", *args],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        text=True,
    )
    return p.returncode, p.stdout


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A running Celery worker: yields (app module, node name, env)."""
    queue = "celery-test-%s" % uuid.uuid4().hex[:12]
    node = "warren-test-%s@localhost" % uuid.uuid4().hex[:8]
    env = celery_env(queue)
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import celery_app

    # the same app as the worker's, on this module's queue
    celery_app.app.conf.task_default_queue = queue
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--pool=solo",
                "-c",
                "1",
                "-Q",
                queue,
                "-n",
                node,
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # ready once it answers a ping
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail("celery worker exited with %s:\n%s" % (proc.returncode, log.read_text()))
            replies = celery_app.app.control.inspect(destination=[node], timeout=1).ping()
            if replies and node in replies:
                break
            if time.monotonic() > deadline:
                pytest.fail("celery worker did not answer a ping:\n%s" % log.read_text())
        yield celery_app, node, env, queue
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        try:
            celery_app.app.close()
        except Exception:
            pass
        # the task queue is durable: remove it from a shared broker
        try:
            with kombu.Connection(broker_url()) as c:
                c.default_channel.queue_delete(queue)
        except Exception:
            pass


def broker_url():
    return "amqp://%s:%s@%s:%d//" % (USER, PASSWORD, HOST, PORT)


def test_celery_tasks_and_rpc_results(worker):
    celery_app, node, env, queue = worker
    started = time.monotonic()
    results = [celery_app.add.delay(i, i) for i in range(N_TASKS)]
    values = [r.get(timeout=30) for r in results]
    assert values == [2 * i for i in range(N_TASKS)]
    assert all(r.successful() for r in results)
    assert time.monotonic() - started < 45


def test_celery_inspect_ping(worker):
    celery_app, node, env, queue = worker
    code, out = celery_cli(env, "inspect", "ping", "-d", node, "--timeout", "5")
    assert code == 0, out
    assert node in out and "pong" in out, out
    # the same through the API
    assert celery_app.app.control.ping(destination=[node], timeout=5) == [{node: {"ok": "pong"}}]


def test_celery_control_broadcast_commands(worker):
    celery_app, node, env, queue = worker
    code, out = celery_cli(env, "control", "enable_events", "-d", node, "--timeout", "5")
    assert code == 0, out
    assert "events enabled" in out, out
    code, out = celery_cli(
        env, "control", "rate_limit", "celery_app.add", "1000/s", "-d", node, "--timeout", "5"
    )
    assert code == 0, out
    assert "new rate limit set successfully" in out, out
    # the worker still works after the broadcasts
    assert celery_app.add.delay(20, 22).get(timeout=15) == 42
    code, out = celery_cli(env, "control", "disable_events", "-d", node, "--timeout", "5")
    assert code == 0, out
    # the API: active queues of the worker
    replies = celery_app.app.control.inspect(destination=[node], timeout=5).active_queues()
    assert [q["name"] for q in replies[node]] == [queue]


def test_kombu_simple_queue_round_trip(names):
    qname = names.queue("kombu-simple")
    with kombu.Connection(broker_url()) as conn:
        q = conn.SimpleQueue(qname)
        try:
            for i in range(5):
                q.put({"n": i, "text": "hello"}, headers={"h": i})
            # (RabbitMQ's passive-declare count can lag the publishes a little)
            assert eventually(lambda: q.qsize() == 5, timeout=5)
            for i in range(5):
                msg = q.get(block=True, timeout=5)
                assert msg.payload == {"n": i, "text": "hello"}
                assert msg.headers["h"] == i
                msg.ack()
            with pytest.raises(q.Empty):
                q.get(block=True, timeout=0.3)
            assert q.qsize() == 0
        finally:
            q.close()
