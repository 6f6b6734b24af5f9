// warren management UI: a thin client of the HTTP API (/api/...), served
// from the broker's binary. No framework, no build step. Every request
// goes through one queue, so that never more than one is in flight; pages
// refresh by polling at the interval the user chose.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const S = { auth: null, user: null, tags: [], timer: null, polling: false, page: null,
  history: [], qhistory: {}, chain: Promise.resolve(), listState: {} };

// ---------------------------------------------------------------- format

function fmtNum(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + " G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
function fmtRate(r) { return r === undefined ? "–" : fmtNum(r) + "/s"; }
function fmtBytes(b) {
  if (b === undefined || b === null) return "–";
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(b) >= 1000 && i < u.length - 1) { b /= 1000; i++; }
  return (i ? b.toFixed(1) : String(b)) + " " + u[i];
}
function rate(o, key) { return o && o[key + "_details"] ? o[key + "_details"].rate : undefined; }
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function enc(s) { return encodeURIComponent(s); }
function h(html) { const t = document.createElement("template"); t.innerHTML = html.trim(); return t.content; }

function toast(msg, bad) {
  const d = document.createElement("div");
  d.textContent = msg;
  if (bad) d.className = "bad";
  $("#toast").appendChild(d);
  setTimeout(() => d.remove(), bad ? 8000 : 4000);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

// One request at a time: each waits for the one before it.
function api(method, path, body, raw) {
  const run = async () => {
    // X-Requested-With: a failed login is answered without a challenge,
    // so that the browser does not pop up its own login dialog.
    const headers = { Authorization: "Basic " + S.auth, "X-Requested-With": "XMLHttpRequest" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method === "DELETE" && path.startsWith("/api/connections/")) headers["X-Reason"] = "Closed via management UI";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) {
      let reason = res.statusText;
      try { const j = JSON.parse(text); reason = j.reason || j.error || reason; } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, reason);
    }
    if (raw) return text;
    return text ? JSON.parse(text) : null;
  };
  const p = S.chain.then(run, run);
  S.chain = p.catch(() => {});
  return p;
}

function can(tag) { return S.tags.includes("administrator") || S.tags.includes(tag); }

// ---------------------------------------------------------------- login

async function login(user, pass) {
  S.auth = btoa(unescape(encodeURIComponent(user + ":" + pass)));
  try {
    const me = await api("GET", "/api/whoami");
    S.user = me.name;
    S.tags = Array.isArray(me.tags) ? me.tags : String(me.tags || "").split(",").filter(Boolean);
    sessionStorage.setItem("warren-auth", S.auth);
    return null;
  } catch (e) {
    S.auth = null;
    if (e.status === 401) return "Login failed: wrong username or password.";
    if (e.status === 403) return "This user has no management tag (management, policymaker, monitoring or administrator) and cannot use the management UI.";
    return "Login failed: " + e.message;
  }
}

function logout() {
  sessionStorage.removeItem("warren-auth");
  S.auth = null;
  clearTimeout(S.timer);
  location.hash = "#/";
  location.reload();
}

function setupLogin() {
  $("#login").addEventListener("submit", async ev => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    const err = await login($("#login-user").value, $("#login-pass").value);
    if (err) { $("#login-error").textContent = err; return; }
    start();
  });
}

// ---------------------------------------------------------------- shell

function start() {
  $("#top").hidden = false;
  $("#user").textContent = S.user + (S.tags.length ? " (" + S.tags.join(", ") + ")" : "");
  document.querySelector('[data-page="admin"]').hidden = !(can("policymaker"));
  window.addEventListener("hashchange", route);
  route();
}

function schedule() {
  clearTimeout(S.timer);
  const ms = Number($("#interval").value);
  if (ms > 0) S.timer = setTimeout(poll, ms);
}

async function poll() {
  if (S.polling || !S.page || !S.page.refresh) { schedule(); return; }
  S.polling = true;
  try { await S.page.refresh(); } catch (e) { handleError(e); }
  S.polling = false;
  schedule();
}

function handleError(e) {
  if (e && e.status === 401) { logout(); return; }
  toast(e && e.message ? e.message : String(e), true);
}

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = parts[0] || "overview";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.page === name || (name === "queue" && a.dataset.page === "queues") || (name === "exchange" && a.dataset.page === "exchanges"));
  }
  const pages = { overview: Overview, connections: Connections, channels: Channels, exchanges: Exchanges,
    exchange: ExchangePage, queues: Queues, queue: QueuePage, admin: Admin };
  const P = pages[name] || Overview;
  const main = $("#main");
  main.replaceChildren();
  S.page = new P(main, parts.slice(1));
  S.polling = true;
  try { await S.page.render(); } catch (e) { handleError(e); }
  S.polling = false;
  schedule();
}

// A table: columns [{key, label, num, fmt, sort}], rows of objects.
function table(cols, rows, opts = {}) {
  const wrap = h('<div class="table-wrap"><table><thead><tr></tr></thead><tbody></tbody></table></div>');
  const tr = wrap.querySelector("thead tr");
  for (const c of cols) {
    const th = document.createElement("th");
    th.textContent = c.label;
    th.scope = "col";
    if (c.num) th.className = "num";
    if (opts.onSort && c.sort) {
      th.classList.add("sortable");
      th.tabIndex = 0;
      if (opts.sort === c.sort) th.classList.add(opts.reverse ? "sorted-desc" : "sorted-asc");
      const go = () => opts.onSort(c.sort);
      th.addEventListener("click", go);
      th.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    }
    tr.appendChild(th);
  }
  const tb = wrap.querySelector("tbody");
  if (!rows.length) tb.append(h(`<tr><td colspan="${cols.length}" class="muted">${esc(opts.empty || "Nothing here.")}</td></tr>`));
  for (const r of rows) {
    const row = document.createElement("tr");
    for (const c of cols) {
      const td = document.createElement("td");
      if (c.num) td.className = "num";
      const v = c.fmt ? c.fmt(r) : r[c.key];
      if (v instanceof Node) td.appendChild(v); else td.textContent = v ?? "";
      row.appendChild(td);
    }
    tb.appendChild(row);
  }
  return wrap;
}

function link(text, hash) { const a = document.createElement("a"); a.href = hash; a.textContent = text; return a; }
function button(text, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text; if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function card(label, value, opts = {}) {
  const d = h(`<div class="card${opts.alarm ? " alarm" : ""}"><div class="n"></div><div class="l"></div></div>`);
  d.querySelector(".n").textContent = value;
  d.querySelector(".l").textContent = label;
  if (opts.bar !== undefined) {
    const bar = h(`<div class="bar${opts.alarm ? " alarm" : ""}"><span></span></div>`);
    bar.querySelector("span").style.width = Math.min(100, Math.max(0, opts.bar * 100)).toFixed(1) + "%";
    d.firstElementChild.appendChild(bar);
  }
  return d;
}

// A line chart of series [{label, color, values}] on a canvas.
function chart(series, title) {
  const wrap = h('<figure style="margin:0"><canvas class="chart" role="img"></canvas><figcaption class="legend"></figcaption></figure>');
  const canvas = wrap.querySelector("canvas");
  canvas.setAttribute("aria-label", title);
  const legend = wrap.querySelector(".legend");
  for (const s of series) {
    const last = s.values.length ? s.values[s.values.length - 1] : undefined;
    legend.append(h(`<span><i style="background:${s.color}"></i>${esc(s.label)}: ${esc(s.fmt ? s.fmt(last) : fmtNum(last))}</span>`));
  }
  requestAnimationFrame(() => {
    const w = canvas.clientWidth || 600, ht = canvas.clientHeight || 180;
    canvas.width = w * devicePixelRatio; canvas.height = ht * devicePixelRatio;
    const g = canvas.getContext("2d");
    g.scale(devicePixelRatio, devicePixelRatio);
    const n = Math.max(2, ...series.map(s => s.values.length));
    const max = Math.max(1, ...series.flatMap(s => s.values.filter(v => Number.isFinite(v))));
    g.strokeStyle = "#d0d7de"; g.fillStyle = "#57606a"; g.font = "11px system-ui";
    for (let i = 0; i <= 4; i++) {
      const y = 8 + (ht - 24) * i / 4;
      g.beginPath(); g.moveTo(40, y); g.lineTo(w - 4, y); g.stroke();
      g.fillText(fmtNum(max * (4 - i) / 4), 2, y + 4);
    }
    for (const s of series) {
      g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      s.values.forEach((v, i) => {
        const x = 40 + (w - 44) * (i + n - s.values.length) / (n - 1);
        const y = 8 + (ht - 24) * (1 - (Number.isFinite(v) ? v : 0) / max);
        if (i) g.lineTo(x, y); else g.moveTo(x, y);
      });
      g.stroke();
    }
  });
  return wrap;
}

function formBox(title, fields, submitText, onSubmit) {
  const f = h(`<form class="box"><h2 style="margin:0"></h2></form>`).firstElementChild;
  f.querySelector("h2").textContent = title;
  for (const fd of fields) {
    const l = document.createElement("label");
    l.append(fd.label);
    let input;
    if (fd.options) {
      input = document.createElement("select");
      for (const o of fd.options) { const op = document.createElement("option"); op.value = o; op.textContent = o; input.appendChild(op); }
    } else if (fd.textarea) {
      input = document.createElement("textarea"); input.rows = 4;
    } else {
      input = document.createElement("input"); input.type = fd.type || "text";
    }
    input.name = fd.name;
    if (fd.value !== undefined) input.value = fd.value;
    if (fd.required) input.required = true;
    if (fd.type === "checkbox") { input.checked = !!fd.value; }
    l.appendChild(input);
    f.appendChild(l);
  }
  const b = document.createElement("button"); b.type = "submit"; b.textContent = submitText;
  f.appendChild(b);
  f.addEventListener("submit", async ev => {
    ev.preventDefault();
    const v = {};
    for (const el of f.elements) if (el.name) v[el.name] = el.type === "checkbox" ? el.checked : el.value;
    try { await onSubmit(v, f); } catch (e) { handleError(e); }
  });
  return f;
}

function parseArgs(text) {
  if (!text || !text.trim()) return {};
  return JSON.parse(text);
}

// ---------------------------------------------------------------- pages

// A page that shows what one refresh fetches (the others build their
// forms once in render(), then refresh the rest).
class Page {
  constructor(el) { this.el = el; }
  async render() { await this.refresh(); }
}

class Overview extends Page {
  async refresh() {
    const o = await api("GET", "/api/overview");
    // Node figures (memory, disk, alarms) are for monitoring users.
    const node = can("monitoring") ? (await api("GET", "/api/nodes"))[0] || {} : null;
    const ms = o.message_stats || {}, qt = o.queue_totals || {}, ot = o.object_totals || {};
    S.history.push({ publish: rate(ms, "publish"), deliver: rate(ms, "deliver_get"), ack: rate(ms, "ack"),
      redeliver: rate(ms, "redeliver"), ready: qt.messages_ready, unacked: qt.messages_unacknowledged });
    if (S.history.length > 120) S.history.shift();
    const col = k => S.history.map(x => x[k]);
    const memAlarm = !!(node && node.mem_alarm), diskAlarm = !!(node && node.disk_free_alarm);
    const frag = document.createDocumentFragment();
    frag.append(h(`<h1>Overview <span class="muted" style="font-size:.9rem">${esc(o.product_name || "warren")} ${esc(o.product_version || "")} · ${esc(o.node || "")}</span></h1>`));
    const cards = h('<div class="cards"></div>').firstElementChild;
    cards.append(card("connections", fmtNum(ot.connections)), card("channels", fmtNum(ot.channels)),
      card("exchanges", fmtNum(ot.exchanges)), card("queues", fmtNum(ot.queues)), card("consumers", fmtNum(ot.consumers)),
      card("messages ready", fmtNum(qt.messages_ready)), card("unacknowledged", fmtNum(qt.messages_unacknowledged)),
      card("messages total", fmtNum(qt.messages)));
    frag.append(cards);
    frag.append(h("<h2>Message rates</h2>"));
    frag.append(chart([
      { label: "published", color: "#0b5cad", values: col("publish"), fmt: fmtRate },
      { label: "delivered", color: "#1a7f37", values: col("deliver"), fmt: fmtRate },
      { label: "acknowledged", color: "#8250df", values: col("ack"), fmt: fmtRate },
      { label: "redelivered", color: "#b3261e", values: col("redeliver"), fmt: fmtRate },
    ], "Message rates over time"));
    frag.append(h("<h2>Queued messages</h2>"));
    frag.append(chart([
      { label: "ready", color: "#0b5cad", values: col("ready") },
      { label: "unacknowledged", color: "#bf8700", values: col("unacked") },
    ], "Queued messages over time"));
    if (!node) { this.el.replaceChildren(frag); return; }
    frag.append(h("<h2>Resources</h2>"));
    const res = h('<div class="cards"></div>').firstElementChild;
    res.append(
      card(`memory of ${fmtBytes(node.mem_limit)}${memAlarm ? " — ALARM: publishers blocked" : ""}`, fmtBytes(node.mem_used),
        { alarm: memAlarm, bar: node.mem_limit ? node.mem_used / node.mem_limit : 0 }),
      card(`disk free, limit ${fmtBytes(node.disk_free_limit)}${diskAlarm ? " — ALARM: publishers blocked" : ""}`, fmtBytes(node.disk_free),
        { alarm: diskAlarm }),
      card("file descriptors", `${fmtNum(node.fd_used)} / ${fmtNum(node.fd_total)}`),
      card("uptime", node.uptime !== undefined ? Math.round(node.uptime / 1000) + " s" : "–"));
    frag.append(res);
    this.el.replaceChildren(frag);
  }
}

class Connections extends Page {
  async refresh() {
    const list = await api("GET", "/api/connections");
    const cols = [
      { label: "Name", fmt: r => r.name },
      { label: "Client", fmt: r => (r.client_properties && (r.client_properties.connection_name || r.client_properties.product)) || "" },
      { label: "User", key: "user" }, { label: "Vhost", key: "vhost" }, { label: "Protocol", key: "protocol" },
      { label: "State", fmt: r => r.state }, { label: "Channels", key: "channels", num: true },
      { label: "From client", num: true, fmt: r => fmtBytes(rate(r, "recv_oct")) + "/s" },
      { label: "To client", num: true, fmt: r => fmtBytes(rate(r, "send_oct")) + "/s" },
      { label: "", fmt: r => can("administrator") || r.user === S.user ? button("Close", () => this.close(r.name), "danger") : "" },
    ];
    this.el.replaceChildren(h(`<h1>Connections (${list.length})</h1>`), table(cols, list, { empty: "No connections." }));
  }
  async close(name) {
    if (!confirm(`Close connection ${name}?`)) return;
    await api("DELETE", "/api/connections/" + enc(name));
    toast("Connection closed.");
    await this.refresh();
  }
}

class Channels extends Page {
  async refresh() {
    const list = await api("GET", "/api/channels");
    const cols = [
      { label: "Channel", key: "name" }, { label: "User", key: "user" }, { label: "Vhost", key: "vhost" },
      { label: "State", key: "state" }, { label: "Prefetch", key: "prefetch_count", num: true },
      { label: "Unacked", key: "messages_unacknowledged", num: true }, { label: "Consumers", key: "consumer_count", num: true },
      { label: "Confirm", fmt: r => r.confirm ? "yes" : "" },
      { label: "Publish", num: true, fmt: r => fmtRate(rate(r.message_stats, "publish")) },
      { label: "Deliver", num: true, fmt: r => fmtRate(rate(r.message_stats, "deliver_get")) },
      { label: "Ack", num: true, fmt: r => fmtRate(rate(r.message_stats, "ack")) },
    ];
    this.el.replaceChildren(h(`<h1>Channels (${list.length})</h1>`), table(cols, list, { empty: "No channels." }));
  }
}

class Exchanges {
  constructor(el) { this.el = el; }
  async render() {
    this.list = h("<div></div>").firstElementChild;
    const vhosts = (await api("GET", "/api/vhosts")).map(v => v.name);
    const add = formBox("Add an exchange", [
      { label: "Virtual host", name: "vhost", options: vhosts },
      { label: "Name", name: "name", required: true },
      { label: "Type", name: "type", options: ["direct", "fanout", "topic", "headers"] },
      { label: "Durable", name: "durable", options: ["true", "false"] },
      { label: "Arguments (JSON)", name: "arguments", textarea: true },
    ], "Add exchange", async v => {
      await api("PUT", `/api/exchanges/${enc(v.vhost)}/${enc(v.name)}`,
        { type: v.type, durable: v.durable === "true", auto_delete: false, internal: false, arguments: parseArgs(v.arguments) });
      toast(`Exchange ${v.name} declared.`);
      await this.refresh();
    });
    this.el.replaceChildren(h("<h1>Exchanges</h1>"), this.list, h('<div class="forms"></div>'));
    this.el.lastElementChild.append(add);
    await this.refresh();
  }
  async refresh() {
    const list = await api("GET", "/api/exchanges");
    const cols = [
      { label: "Vhost", key: "vhost" },
      { label: "Name", fmt: r => link(r.name || "(AMQP default)", `#/exchange/${enc(r.vhost)}/${enc(r.name)}`) },
      { label: "Type", key: "type" }, { label: "Durable", fmt: r => r.durable ? "D" : "" },
      { label: "Policy", key: "policy" },
      { label: "In", num: true, fmt: r => fmtRate(rate(r.message_stats, "publish_in")) },
      { label: "Out", num: true, fmt: r => fmtRate(rate(r.message_stats, "publish_out")) },
    ];
    this.list.replaceChildren(table(cols, list));
  }
}

class ExchangePage {
  constructor(el, args) { this.el = el; [this.vhost, this.name] = [args[0], args[1] || ""]; }
  path() { return `/api/exchanges/${enc(this.vhost)}/${enc(this.name)}`; }
  async render() {
    this.info = h("<div></div>").firstElementChild;
    const forms = h('<div class="forms"></div>').firstElementChild;
    forms.append(formBox("Publish a message", [
      { label: "Routing key", name: "routing_key" },
      { label: "Delivery mode", name: "delivery_mode", options: ["1 - transient", "2 - persistent"] },
      { label: "Headers (JSON)", name: "headers", textarea: true },
      { label: "Payload", name: "payload", textarea: true },
    ], "Publish message", async v => {
      const props = { delivery_mode: Number(v.delivery_mode[0]) };
      const hd = parseArgs(v.headers);
      if (Object.keys(hd).length) props.headers = hd;
      const r = await api("POST", this.path() + "/publish",
        { properties: props, routing_key: v.routing_key, payload: v.payload, payload_encoding: "string" });
      toast(r && r.routed ? "Message published." : "Message published, but not routed.", !(r && r.routed));
    }));
    if (this.name && !this.name.startsWith("amq.")) {
      forms.append(formBox("Add a binding from this exchange", [
        { label: "To", name: "kind", options: ["queue", "exchange"] },
        { label: "Destination", name: "dest", required: true },
        { label: "Routing key", name: "routing_key" },
        { label: "Arguments (JSON)", name: "arguments", textarea: true },
      ], "Bind", async v => {
        await api("POST", `/api/bindings/${enc(this.vhost)}/e/${enc(this.name)}/${v.kind === "queue" ? "q" : "e"}/${enc(v.dest)}`,
          { routing_key: v.routing_key, arguments: parseArgs(v.arguments) });
        toast("Binding added."); await this.refresh();
      }));
      const del = h('<div class="box"></div>').firstElementChild;
      del.append(button("Delete this exchange", async () => {
        if (!confirm(`Delete exchange ${this.name}?`)) return;
        try { await api("DELETE", this.path()); toast("Exchange deleted."); location.hash = "#/exchanges"; } catch (e) { handleError(e); }
      }, "danger"));
      forms.append(del);
    }
    this.el.replaceChildren(h(`<h1>Exchange ${esc(this.name || "(AMQP default)")} <span class="muted">in ${esc(this.vhost)}</span></h1>`), this.info, forms);
    await this.refresh();
  }
  async refresh() {
    const x = await api("GET", this.path());
    const b = await api("GET", this.path() + "/bindings/source");
    const cols = [
      { label: "To", fmt: r => r.destination_type === "queue" ? link(r.destination, `#/queue/${enc(r.vhost)}/${enc(r.destination)}`) : r.destination },
      { label: "Type", key: "destination_type" }, { label: "Routing key", key: "routing_key" },
      { label: "Arguments", fmt: r => JSON.stringify(r.arguments || {}) },
      { label: "", fmt: r => button("Unbind", async () => {
        try {
          await api("DELETE", `/api/bindings/${enc(r.vhost)}/e/${enc(r.source)}/${r.destination_type === "queue" ? "q" : "e"}/${enc(r.destination)}/${enc(r.properties_key)}`);
          toast("Binding removed."); await this.refresh();
        } catch (e) { handleError(e); }
      }, "plain") },
    ];
    this.info.replaceChildren(h(`<p>Type <b>${esc(x.type)}</b>${x.durable ? ", durable" : ""}${x.auto_delete ? ", auto-delete" : ""}${x.internal ? ", internal" : ""}${x.policy ? ", policy " + esc(x.policy) : ""}. Arguments: ${esc(JSON.stringify(x.arguments || {}))}</p>`),
      h("<h2>Bindings from this exchange</h2>"), table(cols, b, { empty: "No bindings." }));
  }
}

class Queues {
  constructor(el) {
    this.el = el;
    this.st = S.listState.queues || (S.listState.queues = { page: 1, size: 50, name: "", regex: false, sort: "name", reverse: false });
  }
  async render() {
    const st = this.st;
    const tools = h(`<div class="tools">
      <label>Filter <input id="q-filter" placeholder="name contains"></label>
      <label><span>Regex</span><input id="q-regex" type="checkbox"></label>
      <label>Per page <select id="q-size"><option>20</option><option>50</option><option>100</option><option>500</option></select></label>
    </div>`).firstElementChild;
    $("#q-filter", tools).value = st.name;
    $("#q-regex", tools).checked = st.regex;
    $("#q-size", tools).value = String(st.size);
    let t = null;
    $("#q-filter", tools).addEventListener("input", e => {
      clearTimeout(t);
      t = setTimeout(() => { st.name = e.target.value; st.page = 1; this.refresh().catch(handleError); }, 300);
    });
    $("#q-regex", tools).addEventListener("change", e => { st.regex = e.target.checked; st.page = 1; this.refresh().catch(handleError); });
    $("#q-size", tools).addEventListener("change", e => { st.size = Number(e.target.value); st.page = 1; this.refresh().catch(handleError); });
    this.list = h("<div></div>").firstElementChild;
    const vhosts = (await api("GET", "/api/vhosts")).map(v => v.name);
    const add = formBox("Add a queue", [
      { label: "Virtual host", name: "vhost", options: vhosts },
      { label: "Name", name: "name", required: true },
      { label: "Durable", name: "durable", options: ["true", "false"] },
      { label: "Arguments (JSON, e.g. {\"x-message-ttl\": 60000})", name: "arguments", textarea: true },
    ], "Add queue", async v => {
      await api("PUT", `/api/queues/${enc(v.vhost)}/${enc(v.name)}`,
        { durable: v.durable === "true", auto_delete: false, arguments: parseArgs(v.arguments) });
      toast(`Queue ${v.name} declared.`);
      await this.refresh();
    });
    const forms = h('<div class="forms"></div>').firstElementChild;
    forms.append(add);
    this.el.replaceChildren(h("<h1>Queues</h1>"), tools, this.list, forms);
    await this.refresh();
  }
  async refresh() {
    const st = this.st;
    const q = new URLSearchParams({ page: st.page, page_size: st.size, name: st.name, use_regex: st.regex,
      sort: st.sort, sort_reverse: st.reverse,
      columns: "vhost,name,type,durable,policy,state,messages_ready,messages_unacknowledged,messages,consumers,message_stats.publish_details.rate,message_stats.deliver_get_details.rate,message_stats.ack_details.rate,arguments" });
    const r = await api("GET", "/api/queues?" + q);
    const items = r.items || [];
    const sortBy = key => { if (st.sort === key) st.reverse = !st.reverse; else { st.sort = key; st.reverse = false; } this.refresh().catch(handleError); };
    const cols = [
      { label: "Vhost", key: "vhost", sort: "vhost" },
      { label: "Name", sort: "name", fmt: x => link(x.name, `#/queue/${enc(x.vhost)}/${enc(x.name)}`) },
      { label: "Type", key: "type" },
      { label: "Features", fmt: x => [x.durable ? "D" : "", ...Object.keys(x.arguments || {}).map(k => k.replace(/^x-/, ""))].filter(Boolean).join(" ") },
      { label: "Policy", key: "policy" },
      { label: "State", key: "state" },
      { label: "Ready", num: true, sort: "messages_ready", fmt: x => fmtNum(x.messages_ready) },
      { label: "Unacked", num: true, sort: "messages_unacknowledged", fmt: x => fmtNum(x.messages_unacknowledged) },
      { label: "Total", num: true, sort: "messages", fmt: x => fmtNum(x.messages) },
      { label: "Consumers", num: true, sort: "consumers", fmt: x => fmtNum(x.consumers) },
      { label: "Incoming", num: true, fmt: x => fmtRate(rate(x.message_stats, "publish")) },
      { label: "Deliver", num: true, fmt: x => fmtRate(rate(x.message_stats, "deliver_get")) },
      { label: "Ack", num: true, fmt: x => fmtRate(rate(x.message_stats, "ack")) },
    ];
    const pages = r.page_count || 1;
    const pager = h(`<div class="pager"><span>${fmtNum(r.filtered_count ?? items.length)} queues${r.total_count !== undefined && r.filtered_count !== r.total_count ? " (of " + fmtNum(r.total_count) + ")" : ""} · page ${st.page} of ${pages}</span></div>`).firstElementChild;
    const prev = button("Previous", () => { st.page = Math.max(1, st.page - 1); this.refresh().catch(handleError); }, "plain");
    const next = button("Next", () => { st.page = Math.min(pages, st.page + 1); this.refresh().catch(handleError); }, "plain");
    prev.disabled = st.page <= 1; next.disabled = st.page >= pages;
    pager.append(prev, next);
    this.list.replaceChildren(pager, table(cols, items, { onSort: sortBy, sort: st.sort, reverse: st.reverse, empty: "No queues match." }));
  }
}

class QueuePage {
  constructor(el, args) { this.el = el; [this.vhost, this.name] = args; this.key = this.vhost + "/" + this.name; }
  path() { return `/api/queues/${enc(this.vhost)}/${enc(this.name)}`; }
  async render() {
    this.info = h("<div></div>").firstElementChild;
    this.got = h('<div id="got"></div>').firstElementChild;
    const forms = h('<div class="forms"></div>').firstElementChild;
    forms.append(formBox("Get messages", [
      { label: "Ack mode", name: "ackmode", options: ["ack_requeue_true", "reject_requeue_true", "ack_requeue_false", "reject_requeue_false"] },
      { label: "Encoding", name: "encoding", options: ["auto", "base64"] },
      { label: "Messages", name: "count", type: "number", value: "1" },
    ], "Get messages", async v => {
      const msgs = await api("POST", this.path() + "/get", { count: Number(v.count) || 1, ackmode: v.ackmode, encoding: v.encoding, truncate: 50000 });
      this.showGot(msgs);
      await this.refresh();
    }));
    forms.append(formBox("Add a binding to this queue", [
      { label: "From exchange", name: "source", required: true },
      { label: "Routing key", name: "routing_key" },
      { label: "Arguments (JSON)", name: "arguments", textarea: true },
    ], "Bind", async v => {
      await api("POST", `/api/bindings/${enc(this.vhost)}/e/${enc(v.source)}/q/${enc(this.name)}`,
        { routing_key: v.routing_key, arguments: parseArgs(v.arguments) });
      toast("Binding added."); await this.refresh();
    }));
    const danger = h('<div class="box forms" style="align-content:start"></div>').firstElementChild;
    danger.append(button("Purge messages", async () => {
      if (!confirm(`Purge every ready message of ${this.name}?`)) return;
      try { await api("DELETE", this.path() + "/contents"); toast("Queue purged."); await this.refresh(); } catch (e) { handleError(e); }
    }, "danger"), button("Delete queue", async () => {
      if (!confirm(`Delete queue ${this.name}?`)) return;
      try { await api("DELETE", this.path()); toast("Queue deleted."); location.hash = "#/queues"; } catch (e) { handleError(e); }
    }, "danger"));
    forms.append(danger);
    this.el.replaceChildren(h(`<h1>Queue ${esc(this.name)} <span class="muted">in ${esc(this.vhost)}</span></h1>`), this.info, forms, this.got);
    await this.refresh();
  }
  showGot(msgs) {
    const frag = document.createDocumentFragment();
    frag.append(h(`<h2>${msgs.length ? msgs.length + " message(s)" : "Queue is empty"}</h2>`));
    msgs.forEach((m, i) => {
      frag.append(h(`<div class="box"><p><b>Message ${i + 1}</b> · exchange <code>${esc(m.exchange || "(AMQP default)")}</code> · routing key <code>${esc(m.routing_key)}</code> · redelivered ${m.redelivered ? "yes" : "no"} · ${m.message_count} left · ${fmtBytes(m.payload_bytes)} (${esc(m.payload_encoding)})</p><p class="muted">Properties: ${esc(JSON.stringify(m.properties))}</p><pre class="payload"></pre></div>`));
      frag.lastElementChild.querySelector("pre").textContent = m.payload;
    });
    this.got.replaceChildren(frag);
  }
  async refresh() {
    const q = await api("GET", this.path());
    const b = await api("GET", this.path() + "/bindings");
    const hist = S.qhistory[this.key] || (S.qhistory[this.key] = []);
    hist.push({ ready: q.messages_ready, unacked: q.messages_unacknowledged });
    if (hist.length > 120) hist.shift();
    const cards = h('<div class="cards"></div>').firstElementChild;
    cards.append(card("ready", fmtNum(q.messages_ready)), card("unacknowledged", fmtNum(q.messages_unacknowledged)),
      card("total", fmtNum(q.messages)), card("consumers", fmtNum(q.consumers)),
      card("incoming", fmtRate(rate(q.message_stats, "publish"))), card("delivered", fmtRate(rate(q.message_stats, "deliver_get"))),
      card("memory", fmtBytes(q.memory)), card("state", q.state || "running"));
    const consumers = (q.consumer_details || []).map(c => ({ tag: c.consumer_tag, ch: c.channel_details ? c.channel_details.name : "", ack: c.ack_required ? "manual" : "auto", prefetch: c.prefetch_count, active: c.active === false ? "no" : "yes" }));
    const ccols = [{ label: "Channel", key: "ch" }, { label: "Consumer tag", key: "tag" }, { label: "Ack", key: "ack" },
      { label: "Prefetch", key: "prefetch", num: true }, { label: "Active", key: "active" }];
    const bcols = [{ label: "From", fmt: r => r.source ? link(r.source, `#/exchange/${enc(r.vhost)}/${enc(r.source)}`) : "(AMQP default)" },
      { label: "Routing key", key: "routing_key" }, { label: "Arguments", fmt: r => JSON.stringify(r.arguments || {}) },
      { label: "", fmt: r => r.source ? button("Unbind", async () => {
        try {
          await api("DELETE", `/api/bindings/${enc(r.vhost)}/e/${enc(r.source)}/q/${enc(this.name)}/${enc(r.properties_key)}`);
          toast("Binding removed."); await this.refresh();
        } catch (e) { handleError(e); }
      }, "plain") : "" }];
    this.info.replaceChildren(
      h(`<p>${q.durable ? "Durable" : "Transient"} ${esc(q.type || "classic")} queue${q.policy ? ", policy <b>" + esc(q.policy) + "</b>" : ""}${q.operator_policy ? ", operator policy <b>" + esc(q.operator_policy) + "</b>" : ""}. Arguments: ${esc(JSON.stringify(q.arguments || {}))}${q.effective_policy_definition && Object.keys(q.effective_policy_definition).length ? ". Policy definition: " + esc(JSON.stringify(q.effective_policy_definition)) : ""}</p>`),
      cards, h("<h2>Depth</h2>"),
      chart([{ label: "ready", color: "#0b5cad", values: hist.map(x => x.ready) },
        { label: "unacknowledged", color: "#bf8700", values: hist.map(x => x.unacked) }], "Queue depth over time"),
      h(`<h2>Consumers (${consumers.length})</h2>`), table(ccols, consumers, { empty: "No consumers." }),
      h("<h2>Bindings</h2>"), table(bcols, b, { empty: "No bindings." }));
  }
}

class Admin {
  constructor(el) { this.el = el; }
  // The form for a policy (`kind` "policies") or an operator policy
  // ("operator-policies"): the same fields and the same PUT.
  policyForm(kind, title, example) {
    return formBox(title, [
      { label: "Virtual host", name: "vhost", value: "/" }, { label: "Name", name: "name", required: true },
      { label: "Pattern", name: "pattern", value: ".*" },
      { label: "Apply to", name: "apply_to", options: kind === "policies"
        ? ["queues", "classic_queues", "quorum_queues", "exchanges", "all"] : ["queues", "classic_queues", "quorum_queues"] },
      { label: "Priority", name: "priority", type: "number", value: "0" },
      { label: "Definition (JSON)", name: "definition", textarea: true, value: example },
    ], "Set policy", async v => {
      await api("PUT", `/api/${kind}/${enc(v.vhost)}/${enc(v.name)}`,
        { pattern: v.pattern, "apply-to": v.apply_to, priority: Number(v.priority) || 0, definition: parseArgs(v.definition) });
      toast("Policy set."); await this.refresh();
    });
  }
  // The form for one limit of a virtual host or a user (`kind`
  // "vhost-limits" or "user-limits"); -1 means no limit, as in RabbitMQ.
  limitForm(kind, title, ownerLabel, ownerValue, names) {
    return formBox(title, [
      { label: ownerLabel, name: "owner", value: ownerValue, required: true },
      { label: "Limit", name: "limit", options: names },
      { label: "Value (-1: no limit)", name: "value", type: "number", value: "100", required: true },
    ], "Set limit", async v => {
      await api("PUT", `/api/${kind}/${enc(v.owner)}/${enc(v.limit)}`, { value: Number(v.value) });
      toast("Limit set."); await this.refresh();
    });
  }
  // The table of `kind`'s policies, each with its Delete button.
  policyTable(kind, list) {
    return table([
      { label: "Vhost", key: "vhost" }, { label: "Name", key: "name" }, { label: "Pattern", key: "pattern" },
      { label: "Apply to", key: "apply-to" }, { label: "Priority", key: "priority", num: true },
      { label: "Definition", fmt: p => JSON.stringify(p.definition) },
      { label: "", fmt: p => button("Delete", async () => {
        try { await api("DELETE", `/api/${kind}/${enc(p.vhost)}/${enc(p.name)}`); toast("Policy deleted."); await this.refresh(); } catch (e) { handleError(e); }
      }, "danger") },
    ], list, { empty: "No policies." });
  }
  // One row per limit of each vhost or user, each with its Delete button.
  limitTable(kind, ownerKey, ownerLabel, list) {
    const rows = list.flatMap(l => Object.entries(l.value || {}).map(([name, value]) => ({ owner: l[ownerKey], name, value })));
    return table([
      { label: ownerLabel, key: "owner" }, { label: "Limit", key: "name" }, { label: "Value", key: "value", num: true },
      { label: "", fmt: r => button("Delete", async () => {
        try { await api("DELETE", `/api/${kind}/${enc(r.owner)}/${enc(r.name)}`); toast("Limit removed."); await this.refresh(); } catch (e) { handleError(e); }
      }, "danger") },
    ], rows, { empty: "No limits." });
  }
  async render() {
    this.lists = h("<div></div>").firstElementChild;
    const forms = h('<div class="forms"></div>').firstElementChild;
    if (can("administrator")) {
      forms.append(formBox("Add a user", [
        { label: "Username", name: "name", required: true },
        { label: "Password", name: "password", type: "password" },
        { label: "Tags (comma-separated: administrator, monitoring, policymaker, management)", name: "tags" },
      ], "Add user", async v => {
        await api("PUT", "/api/users/" + enc(v.name), { password: v.password, tags: v.tags });
        toast(`User ${v.name} added.`); await this.refresh();
      }));
      forms.append(formBox("Add a virtual host", [{ label: "Name", name: "name", required: true }], "Add vhost", async v => {
        await api("PUT", "/api/vhosts/" + enc(v.name), {});
        toast(`Virtual host ${v.name} added.`); await this.refresh();
      }));
      forms.append(formBox("Set permissions", [
        { label: "User", name: "user", required: true }, { label: "Virtual host", name: "vhost", value: "/" },
        { label: "Configure regexp", name: "configure", value: ".*" }, { label: "Write regexp", name: "write", value: ".*" },
        { label: "Read regexp", name: "read", value: ".*" },
      ], "Set permission", async v => {
        await api("PUT", `/api/permissions/${enc(v.vhost)}/${enc(v.user)}`, { configure: v.configure, write: v.write, read: v.read });
        toast("Permission set."); await this.refresh();
      }));
    }
    forms.append(this.policyForm("policies", "Add or update a policy", "{\"max-length\": 100000}"));
    if (can("administrator")) {
      forms.append(this.policyForm("operator-policies", "Add or update an operator policy", "{\"max-length\": 1000000}"));
      forms.append(this.limitForm("vhost-limits", "Set a virtual host limit", "Virtual host", "/", ["max-connections", "max-queues"]));
      forms.append(this.limitForm("user-limits", "Set a user limit", "User", "", ["max-connections", "max-channels"]));
    }
    if (can("administrator")) {
      const defs = h(`<form class="box"><h2 style="margin:0">Definitions</h2>
        <button type="button" id="defs-export">Download definitions</button>
        <label>Import a definitions file <input type="file" id="defs-file" accept=".json,application/json"></label>
        <button type="button" id="defs-import">Upload definitions</button></form>`).firstElementChild;
      $("#defs-export", defs).addEventListener("click", async () => {
        try {
          const text = await api("GET", "/api/definitions", undefined, true);
          const a = document.createElement("a");
          a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
          a.download = "warren-definitions.json";
          document.body.appendChild(a); a.click(); a.remove();
        } catch (e) { handleError(e); }
      });
      $("#defs-import", defs).addEventListener("click", async () => {
        const f = $("#defs-file", defs).files[0];
        if (!f) { toast("Choose a file first.", true); return; }
        try { await api("POST", "/api/definitions", JSON.parse(await f.text())); toast("Definitions imported."); await this.refresh(); } catch (e) { handleError(e); }
      });
      forms.append(defs);
    }
    this.el.replaceChildren(h("<h1>Admin</h1>"), this.lists, forms);
    await this.refresh();
  }
  async refresh() {
    const frag = document.createDocumentFragment();
    if (can("administrator")) {
      const users = await api("GET", "/api/users");
      frag.append(h("<h2>Users</h2>"), table([
        { label: "Name", key: "name" },
        { label: "Tags", fmt: u => Array.isArray(u.tags) ? u.tags.join(", ") : u.tags },
        { label: "", fmt: u => u.name === S.user ? "" : button("Delete", async () => {
          if (!confirm(`Delete user ${u.name}?`)) return;
          try { await api("DELETE", "/api/users/" + enc(u.name)); toast("User deleted."); await this.refresh(); } catch (e) { handleError(e); }
        }, "danger") },
      ], users));
      const vhosts = await api("GET", "/api/vhosts");
      frag.append(h("<h2>Virtual hosts</h2>"), table([
        { label: "Name", key: "name" }, { label: "Messages", key: "messages", num: true },
        { label: "", fmt: v => v.name === "/" ? "" : button("Delete", async () => {
          if (!confirm(`Delete virtual host ${v.name} and everything in it?`)) return;
          try { await api("DELETE", "/api/vhosts/" + enc(v.name)); toast("Virtual host deleted."); await this.refresh(); } catch (e) { handleError(e); }
        }, "danger") },
      ], vhosts));
      const perms = await api("GET", "/api/permissions");
      frag.append(h("<h2>Permissions</h2>"), table([
        { label: "User", key: "user" }, { label: "Vhost", key: "vhost" },
        { label: "Configure", key: "configure" }, { label: "Write", key: "write" }, { label: "Read", key: "read" },
      ], perms));
    }
    frag.append(h("<h2>Policies</h2>"), this.policyTable("policies", await api("GET", "/api/policies")));
    if (can("administrator")) {
      frag.append(h("<h2>Operator policies</h2>"), this.policyTable("operator-policies", await api("GET", "/api/operator-policies")));
      frag.append(h("<h2>Virtual host limits</h2>"), this.limitTable("vhost-limits", "vhost", "Vhost", await api("GET", "/api/vhost-limits")));
      frag.append(h("<h2>User limits</h2>"), this.limitTable("user-limits", "user", "User", await api("GET", "/api/user-limits")));
    }
    this.lists.replaceChildren(frag);
  }
}

// ---------------------------------------------------------------- boot

document.addEventListener("DOMContentLoaded", async () => {
  setupLogin();
  $("#logout").addEventListener("click", logout);
  $("#interval").addEventListener("change", schedule);
  const saved = sessionStorage.getItem("warren-auth");
  if (saved) {
    S.auth = saved;
    try {
      const me = await api("GET", "/api/whoami");
      S.user = me.name;
      S.tags = Array.isArray(me.tags) ? me.tags : String(me.tags || "").split(",").filter(Boolean);
      start();
      return;
    } catch (e) { sessionStorage.removeItem("warren-auth"); S.auth = null; }
  }
  $("#login-user").focus();
});
