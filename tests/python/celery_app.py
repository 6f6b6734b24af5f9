"""A minimal Celery app for test_celery.py (not a test module itself).

Broker: ``amqp://guest:guest@WARREN_AMQP_HOST:WARREN_AMQP_PORT//`` (the same
variables conftest.py reads); results over the ``rpc://`` backend.  The task
queue is ``CELERY_TEST_QUEUE`` so that concurrent or earlier runs against a
shared broker cannot see each other's tasks.
"""

import os

from celery import Celery

HOST = os.environ.get("WARREN_AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_AMQP_PORT", "5672"))
QUEUE = os.environ.get("CELERY_TEST_QUEUE", "warren-celery-test")

app = Celery(
    "celery_app",
    broker="amqp://guest:guest@%s:%d//" % (HOST, PORT),
    backend="rpc://",
)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=3,
    worker_prefetch_multiplier=8,
    worker_hijack_root_logger=False,
    result_expires=60,
)


@app.task
def add(x, y):
    return x + y
