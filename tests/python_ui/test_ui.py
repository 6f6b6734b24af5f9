"""The management web UI in a real browser (headless Chromium or Firefox
through Selenium), against a running warren with pika clients beside it."""

import threading
import time

import pika
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import AMQP_PORT, BASE, PHONE_WIDTH, api, make_driver


def wait(d, cond, timeout=15):
    return WebDriverWait(d, timeout).until(cond)


def login(d, user="guest", password="guest"):
    d.get(BASE + "/")
    wait(d, EC.visibility_of_element_located((By.ID, "login-user")))
    d.find_element(By.ID, "login-user").clear()
    d.find_element(By.ID, "login-user").send_keys(user)
    d.find_element(By.ID, "login-pass").send_keys(password)
    d.find_element(By.ID, "login-button").click()


def logged_in(d):
    wait(d, EC.visibility_of_element_located((By.ID, "top")))
    wait(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))


def accept_confirm(d):
    alert = wait(d, EC.alert_is_present())
    alert.accept()


def amqp(name):
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=AMQP_PORT,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": name})
    return pika.BlockingConnection(params)


class Publisher(threading.Thread):
    """A pika publisher filling a queue, one message every 10 ms."""

    def __init__(self, queue):
        super().__init__(daemon=True)
        self.queue, self.stop, self.sent = queue, threading.Event(), 0
        self.conn = amqp("ui-publisher")
        self.ch = self.conn.channel()
        self.ch.queue_declare(queue, durable=True)

    def run(self):
        while not self.stop.is_set():
            self.ch.basic_publish("", self.queue, f"hello {self.sent}".encode(),
                                  pika.BasicProperties(delivery_mode=2))
            self.sent += 1
            self.conn.process_data_events(0.01)

    def finish(self):
        self.stop.set()
        self.join(10)
        self.conn.close()


def total_of(d, queue):
    """The Total column of `queue`'s row in the queues list."""
    for row in d.find_elements(By.CSS_SELECTOR, "table tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if len(cells) > 8 and cells[1].text == queue:
            text = cells[8].text
            return int(text) if text.isdigit() else None
    return None


def test_refused_logins(driver, shot):
    api("PUT", "/api/users/ui-no-tags", {"password": "pw", "tags": ""})
    login(driver, "ui-no-tags", "pw")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-error")))
    wait(driver, lambda d: "no management tag" in d.find_element(By.ID, "login-error").text)
    assert driver.find_element(By.ID, "top").is_displayed() is False
    shot(driver, "login-refused-no-tag")
    login(driver, "guest", "wrong")
    wait(driver, lambda d: "wrong username or password" in d.find_element(By.ID, "login-error").text)
    shot(driver, "login-refused-password")
    assert not driver.find_element(By.ID, "top").is_displayed()


def test_queue_fills_get_purge(driver, shot):
    pub = Publisher("ui-filling")
    pub.start()
    try:
        login(driver)
        logged_in(driver)
        Select(driver.find_element(By.ID, "interval")).select_by_value("2000")
        shot(driver, "overview")
        driver.get(BASE + "/#/queues")
        wait(driver, EC.visibility_of_element_located((By.ID, "q-filter")))
        driver.find_element(By.ID, "q-filter").send_keys("ui-filling")
        wait(driver, lambda d: total_of(d, "ui-filling") is not None)
        first = total_of(driver, "ui-filling")
        # The list refreshes by itself, and the count rises.
        wait(driver, lambda d: (total_of(d, "ui-filling") or 0) > first, timeout=20)
        shot(driver, "queues")
        driver.find_element(By.LINK_TEXT, "ui-filling").click()
        wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Queue ui-filling"))
    finally:
        pub.finish()
    sent = pub.sent
    wait(driver, lambda d: api("GET", "/api/queues/%2F/ui-filling")["messages"] == sent)
    # Get a message without losing it (requeued).
    driver.find_element(By.XPATH, "//button[text()='Get messages']").click()
    payload = wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "pre.payload")))
    assert payload.text == "hello 0"
    shot(driver, "queue-get")
    time.sleep(0.3)
    assert api("GET", "/api/queues/%2F/ui-filling")["messages"] == sent
    # Purge.
    driver.find_element(By.XPATH, "//button[text()='Purge messages']").click()
    accept_confirm(driver)
    wait(driver, lambda d: api("GET", "/api/queues/%2F/ui-filling")["messages"] == 0)
    shot(driver, "queue-purged")
    # Delete.
    driver.find_element(By.XPATH, "//button[text()='Delete queue']").click()
    accept_confirm(driver)
    wait(driver, lambda d: d.current_url.endswith("#/queues"))
    assert not any(q["name"] == "ui-filling" for q in api("GET", "/api/queues"))


def test_create_user_and_log_in_as_them(driver, shot):
    login(driver)
    logged_in(driver)
    driver.get(BASE + "/#/admin")
    wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Admin"))
    form = driver.find_element(By.XPATH, "//form[.//h2[text()='Add a user']]")
    form.find_element(By.NAME, "name").send_keys("ui-user")
    form.find_element(By.NAME, "password").send_keys("secret")
    form.find_element(By.NAME, "tags").send_keys("management")
    form.find_element(By.XPATH, ".//button[@type='submit']").click()
    wait(driver, lambda d: any(u["name"] == "ui-user" for u in api("GET", "/api/users")))
    wait(driver, EC.presence_of_element_located((By.XPATH, "//td[text()='ui-user']")))
    shot(driver, "admin")
    driver.find_element(By.ID, "logout").click()
    login(driver, "ui-user", "secret")
    logged_in(driver)
    assert "ui-user" in driver.find_element(By.ID, "user").text
    # A management user does not see the admin page.
    assert not driver.find_element(By.CSS_SELECTOR, '[data-page="admin"]').is_displayed()


def test_close_a_connection_and_the_client_gets_320(driver, shot):
    conn = amqp("ui-victim")
    conn.channel()
    login(driver)
    logged_in(driver)
    driver.get(BASE + "/#/connections")
    row = wait(driver, EC.presence_of_element_located(
        (By.XPATH, "//tr[td[text()='ui-victim']]")))
    shot(driver, "connections")
    row.find_element(By.XPATH, ".//button[text()='Close']").click()
    accept_confirm(driver)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.time() + 10
        while time.time() < deadline:
            conn.process_data_events(0.2)
    assert e.value.reply_code == 320


def test_every_page_renders(driver, shot):
    """Each page, its screenshot, at 1280x800 and at phone width."""
    conn = amqp("ui-pages")
    ch = conn.channel()
    ch.queue_declare("ui-pages-q")
    ch.basic_consume("ui-pages-q", lambda *a: None)
    login(driver)
    logged_in(driver)
    pages = [("#/", "Overview"), ("#/connections", "Connections"), ("#/channels", "Channels"),
             ("#/exchanges", "Exchanges"), ("#/exchange/%2F/amq.direct", "Exchange amq.direct"),
             ("#/queues", "Queues"), ("#/queue/%2F/ui-pages-q", "Queue ui-pages-q"), ("#/admin", "Admin")]
    for hash_, title in pages:
        driver.get(BASE + "/" + hash_)
        wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), title))
        time.sleep(0.3)
        shot(driver, "page-" + (hash_.strip("#/").replace("/", "-").replace("%2F", "") or "overview"))
        assert not driver.find_elements(By.CSS_SELECTOR, "#toast .bad"), title
    # The consumer is listed on its queue's page.
    driver.get(BASE + "/#/queue/%2F/ui-pages-q")
    wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Consumers (1)"))
    conn.close()
    phone = make_driver(phone=True)
    try:
        login(phone)
        logged_in(phone)
        for hash_ in ("#/", "#/queues", "#/queue/%2F/ui-pages-q"):
            phone.get(BASE + "/" + hash_)
            time.sleep(0.5)
            inner, width = phone.execute_script(
                "return [window.innerWidth, document.body.scrollWidth]")
            assert inner <= PHONE_WIDTH, inner
            # Wide tables scroll inside their own box; the page does not.
            assert width <= inner, f"{hash_} is {width} px wide on a {inner} px phone"
            shot(phone, "phone-" + (hash_.strip("#/").replace("/", "-").replace("%2F", "") or "overview"))
    finally:
        phone.quit()


def test_keyboard_only_login_and_sort():
    d = make_driver()
    try:
        d.get(BASE + "/")
        wait(d, EC.visibility_of_element_located((By.ID, "login-user")))
        active = d.switch_to.active_element
        assert active.get_attribute("id") == "login-user"
        active.send_keys("guest")
        active.send_keys(Keys.TAB)
        d.switch_to.active_element.send_keys("guest" + Keys.ENTER)
        logged_in(d)
        d.get(BASE + "/#/queues")
        total = (By.XPATH, "//th[text()='Total']")

        def sort_class(x):
            return x.find_element(*total).get_attribute("class") or ""

        # The page redraws its table on a timer: a header found just before
        # a redraw is stale (the key press goes nowhere), so look it up
        # afresh and press Enter again until the sort shows.
        for _ in range(3):
            th = wait(d, EC.presence_of_element_located(total))
            try:
                d.execute_script("arguments[0].focus()", th)
                ActionChains(d).send_keys(Keys.ENTER).perform()
                WebDriverWait(d, 5, ignored_exceptions=[StaleElementReferenceException]).until(
                    lambda x: "sorted" in sort_class(x))
                break
            except (StaleElementReferenceException, TimeoutException):
                continue
        wait_fresh = WebDriverWait(d, 15, ignored_exceptions=[StaleElementReferenceException])
        wait_fresh.until(lambda x: "sorted-asc" in sort_class(x))
    finally:
        d.quit()


def test_limits_and_operator_policies_from_the_admin_page(driver, shot):
    api("PUT", "/api/users/ui-limited", {"password": "pw", "tags": ""})
    login(driver)
    logged_in(driver)
    driver.get(BASE + "/#/admin")
    wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Admin"))

    def submit(title, values, selects=None):
        form = wait(driver, EC.presence_of_element_located((By.XPATH, f"//form[.//h2[text()='{title}']]")))
        for name, value in values.items():
            field = form.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        for name, value in (selects or {}).items():
            Select(form.find_element(By.NAME, name)).select_by_value(value)
        form.find_element(By.XPATH, ".//button[@type='submit']").click()

    submit("Set a virtual host limit", {"owner": "/", "value": "7"}, {"limit": "max-queues"})
    wait(driver, lambda d: api("GET", "/api/vhost-limits/%2F") == [{"vhost": "/", "value": {"max-queues": 7}}])
    submit("Set a user limit", {"owner": "ui-limited", "value": "3"}, {"limit": "max-channels"})
    wait(driver, lambda d: api("GET", "/api/user-limits/ui-limited") == [{"user": "ui-limited", "value": {"max-channels": 3}}])
    submit("Add or update an operator policy",
           {"name": "ui-op", "pattern": "^ui-op", "definition": '{"max-length": 5}'})
    wait(driver, lambda d: [p["name"] for p in api("GET", "/api/operator-policies")] == ["ui-op"])
    # Each shows in its list, and the lists' Delete buttons remove them.
    for cell in ("max-queues", "max-channels", "ui-op"):
        wait(driver, EC.presence_of_element_located((By.XPATH, f"//td[text()='{cell}']")))
    shot(driver, "admin-limits")
    for cell in ("max-queues", "max-channels", "ui-op"):
        row = driver.find_element(By.XPATH, f"//tr[td[text()='{cell}']]")
        row.find_element(By.XPATH, ".//button[text()='Delete']").click()
        wait(driver, EC.staleness_of(row))
    assert api("GET", "/api/vhost-limits") == []
    assert api("GET", "/api/user-limits") == []
    assert api("GET", "/api/operator-policies") == []


# WCAG 2.1 contrast of every visible piece of text: its colour against
# the first opaque background behind it (with alpha composited), the
# ratio (L1 + 0.05) / (L2 + 0.05) of relative luminances.
CONTRAST_JS = r"""
function rgba(s) { const m = s.match(/[\d.]+/g) || []; return m.map(Number).concat([1]).slice(0, 4); }
function lum([r, g, b]) {
  const c = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * c(r) + 0.7152 * c(g) + 0.0722 * c(b);
}
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let out = [255, 255, 255];
  for (const c of layers.reverse()) out = out.map((v, i) => c[i] * c[3] + v * (1 - c[3]));
  return out;
}
const bad = [];
let checked = 0;
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length) continue;
  const st = getComputedStyle(el);
  if (st.visibility === "hidden") continue;
  const fg = rgba(st.color), bg = background(el);
  const fgm = fg.slice(0, 3).map((v, i) => v * fg[3] + bg[i] * (1 - fg[3]));
  const [a, b] = [lum(fgm), lum(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const px = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
  const large = px >= 24 || (bold && px >= 18.66);
  checked++;
  if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
}
return [checked, bad];
"""

# Every form control and button has an accessible name.
NAMES_JS = r"""
const bad = [];
for (const el of document.querySelectorAll("input, select, textarea, button, canvas")) {
  if (!el.getClientRects().length) continue;
  const named = el.getAttribute("aria-label") || el.closest("label") ||
    (el.id && document.querySelector(`label[for="${el.id}"]`)) ||
    (el.tagName === "BUTTON" && el.textContent.trim());
  if (!named) bad.push(el.outerHTML.slice(0, 80));
}
return bad;
"""


def test_contrast_names_and_keyboard_focus(driver):
    """The accessibility audit: text contrast (WCAG AA: 4.5:1, 3:1 for
    large text) and named controls on every page, and a visible focus on
    every element the Tab key reaches."""
    conn = amqp("ui-a11y")
    ch = conn.channel()
    ch.queue_declare("ui-a11y-q")
    ch.basic_publish("", "ui-a11y-q", b"x")
    login(driver)
    logged_in(driver)
    pages = [("#/", "Overview"), ("#/connections", "Connections"), ("#/channels", "Channels"),
             ("#/exchanges", "Exchanges"), ("#/exchange/%2F/amq.direct", "Exchange amq.direct"),
             ("#/queues", "Queues"), ("#/queue/%2F/ui-a11y-q", "Queue ui-a11y-q"), ("#/admin", "Admin")]
    for hash_, title in pages:
        driver.get(BASE + "/" + hash_)
        wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), title))
        time.sleep(0.3)
        checked, bad = driver.execute_script(CONTRAST_JS)
        assert checked > 5, (title, checked)
        assert not bad, (title, bad)
        assert not driver.execute_script(NAMES_JS), (title, driver.execute_script(NAMES_JS))
    # Tab through the queues page: every stop shows a focus outline, and
    # the stops include every nav link and the sortable headers.
    driver.get(BASE + "/#/queues")
    wait(driver, EC.presence_of_element_located((By.XPATH, "//th[text()='Total']")))
    # One pass, from the first nav link to where the focus leaves the page.
    driver.execute_script("document.querySelector('nav a').focus()")
    seen = []
    for _ in range(80):
        el = driver.switch_to.active_element
        if el.tag_name == "body":
            break
        outline = el.value_of_css_property("outline-style")
        label = el.text or el.get_attribute("id") or el.get_attribute("name") or el.tag_name
        assert outline not in ("none", ""), f"no focus outline on {label}"
        seen.append(label)
        ActionChains(driver).send_keys(Keys.TAB).perform()
    for page in ("Overview", "Connections", "Channels", "Exchanges", "Queues", "Admin", "Log out", "Total"):
        assert page in seen, (page, seen)
    conn.close()
