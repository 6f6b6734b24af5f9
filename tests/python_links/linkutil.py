"""Helpers the link suites share (shovels, federation both ways)."""

import time


def wait_for(cond, timeout=60, what="condition"):
    """cond() until it is truthy (returned), or fail after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
