"""The web UI with 10,000 queues and 1,000 connections (issue 17): how
long the overview and the queues page take to show in headless Chromium
(login to rendered page, and the API calls alone), and what polling every
5 s costs the broker in CPU.

    target/pyvenv-ui/bin/python benches/ui.py BROKER_PID MGMT_PORT AMQP_PORT

Needs the venv of tests/web_ui.rs (selenium, pika) and chromium.
"""

import os
import resource
import socket
import statistics
import sys
import time
import urllib.request
import base64

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python_ui"))
os.environ.setdefault("WARREN_MGMT_PORT", sys.argv[2])
os.environ.setdefault("WARREN_AMQP_PORT", sys.argv[3])

import pika  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import BASE, make_driver  # noqa: E402

PID, AMQP = int(sys.argv[1]), int(sys.argv[3])
TICK = os.sysconf("SC_CLK_TCK")


def cpu():
    with open(f"/proc/{PID}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def get(path):
    req = urllib.request.Request(BASE + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        n = len(r.read())
    return time.perf_counter() - t, n


def amqp_handshake(s):
    """Open an AMQP connection on socket s by hand (cheaper than pika for
    a thousand idle connections)."""
    s.sendall(b"AMQP\x00\x00\x09\x01")
    def frame():
        hdr = b""
        while len(hdr) < 7:
            hdr += s.recv(7 - len(hdr))
        size = int.from_bytes(hdr[3:7], "big")
        body = b""
        while len(body) < size + 1:
            body += s.recv(size + 1 - len(body))
        return body
    def method(cls, mid, args):
        payload = cls.to_bytes(2, "big") + mid.to_bytes(2, "big") + args
        s.sendall(b"\x01\x00\x00" + len(payload).to_bytes(4, "big") + payload + b"\xce")
    def short(b):
        return bytes([len(b)]) + b
    def long_(b):
        return len(b).to_bytes(4, "big") + b
    frame()  # start
    method(10, 11, long_(b"") + short(b"PLAIN") + long_(b"\x00guest\x00guest") + short(b"en_US"))
    frame()  # tune
    method(10, 31, (0).to_bytes(2, "big") + (131072).to_bytes(4, "big") + (0).to_bytes(2, "big"))
    method(10, 40, short(b"/") + short(b"") + b"\x00")
    frame()  # open-ok


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", AMQP))
    ch = conn.channel()
    t = time.perf_counter()
    for i in range(10_000):
        ch.queue_declare(f"ui-bench-{i:05}", durable=False)
    print(f"declared 10,000 queues in {time.perf_counter() - t:.1f} s")
    socks = []
    for _ in range(1_000):
        s = socket.create_connection(("127.0.0.1", AMQP))
        amqp_handshake(s)
        socks.append(s)
    print(f"{len(socks) + 1} connections open")
    for path in ("/api/overview", "/api/nodes", "/api/queues?page=1&page_size=50&name=&use_regex=false&sort=name&sort_reverse=false",
                 "/api/connections"):
        times = [get(path) for _ in range(5)]
        print(f"GET {path.split('?')[0]}{'?page=1...' if '?' in path else ''}: median {statistics.median(x[0] for x in times) * 1000:.1f} ms, {times[0][1]} bytes")
    d = make_driver()
    try:
        for page, title in (("#/", "Overview"), ("#/queues", "Queues")):
            runs = []
            for _ in range(3):
                d.get(BASE + "/" + page)
                t = time.perf_counter()
                if d.find_elements(By.ID, "login-user") and d.find_element(By.ID, "login-user").is_displayed():
                    d.find_element(By.ID, "login-user").send_keys("guest")
                    d.find_element(By.ID, "login-pass").send_keys("guest")
                    d.find_element(By.ID, "login-button").click()
                    t = time.perf_counter()
                WebDriverWait(d, 30).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), title))
                if page == "#/queues":
                    WebDriverWait(d, 30).until(EC.presence_of_element_located((By.LINK_TEXT, "ui-bench-00000")))
                runs.append(time.perf_counter() - t)
            print(f"{title} page shown in {', '.join(f'{x * 1000:.0f}' for x in runs)} ms")
        d.get(BASE + "/#/")
        WebDriverWait(d, 30).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))
        c0, t0 = cpu(), time.time()
        time.sleep(60)
        c1, t1 = cpu(), time.time()
        print(f"overview open, polling every 5 s for {t1 - t0:.0f} s: broker CPU {100 * (c1 - c0) / (t1 - t0):.2f} % of a core")
    finally:
        d.quit()
    d = None
    c0, t0 = cpu(), time.time()
    time.sleep(30)
    c1, t1 = cpu(), time.time()
    print(f"no UI open, {t1 - t0:.0f} s: broker CPU {100 * (c1 - c0) / (t1 - t0):.2f} % of a core")
    for s in socks:
        s.close()
    conn.close()


main()
