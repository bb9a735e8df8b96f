// The console's UI: plain JavaScript, no framework, no build step. Every action is one call of the
// REST API (/api/dynsec/v1, see openapi.json) with the session cookie and the CSRF token from login.
"use strict";

const API = "/api/dynsec/v1";
const ACL_TYPES = ["publishClientSend", "publishClientReceive", "subscribeLiteral", "subscribePattern",
  "unsubscribeLiteral", "unsubscribePattern"];
const state = { csrf: null, user: null, level: null, metricsTimer: null, samples: [] };
const app = document.getElementById("app");

// ---- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind || "error";
  box.hidden = !text;
}

async function api(method, path, body) {
  // Tells the server not to answer 401 with a Basic challenge (a browser would prompt for it).
  const headers = { "X-Requested-With": "dynsec-console" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (response.status === 401 && path !== "/login") {
    showLogin("Your session ended: please log in again.");
    throw new Error("not logged in");
  }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

// Runs an action, reports its error or success, re-renders the page on success.
async function act(description, action) {
  try {
    await action();
    say(description + ": done.", "ok");
    await route();
  } catch (e) {
    say(description + " failed: " + e.message, "error");
  }
}

function field(label, input) {
  const id = "f" + Math.random().toString(36).slice(2);
  input.id = id;
  return el("div", {}, el("label", { for: id }, label), input);
}

function form(title, fields, submitLabel, onsubmit) {
  const f = el("form", { "aria-label": title }, ...fields, el("button", { type: "submit" }, submitLabel));
  f.addEventListener("submit", (event) => { event.preventDefault(); onsubmit(new FormData(f), f); });
  return el("section", { class: "card" }, el("h3", {}, title), f);
}

function input(name, extra) { return el("input", Object.assign({ name, autocomplete: "off" }, extra || {})); }

function select(name, options) {
  return el("select", { name }, options.map((o) => el("option", { value: o }, o)));
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length }, "None yet."))]));
}

function page(title, ...content) {
  app.replaceChildren(el("h2", {}, title), ...content);
  app.focus();
}

// ---- login -----------------------------------------------------------------------------------

function showLogin(text) {
  state.csrf = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").textContent = "";
  if (text) say(text, "error");
  const user = input("username", { autocomplete: "username", required: true });
  const password = input("password", { type: "password", autocomplete: "current-password", required: true });
  page("Log in", form("Log in with a dynamic-security client", [field("Username", user), field("Password", password)],
    "Log in", async (data) => {
      try {
        const me = await api("POST", "/login", { username: data.get("username"), password: data.get("password") });
        loggedIn(me);
        say("");
        location.hash = "#/start";
        await route();
      } catch (e) {
        say("Login failed: " + e.message, "error");
        password.value = "";
        password.focus();
      }
    }));
  user.focus();
}

function loggedIn(me) {
  state.csrf = me.csrf;
  state.user = me.username;
  state.level = me.level;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = `${me.username} (${me.level === "admin" ? "admin" : "read-only"})`;
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("POST", "/logout"); } catch (e) { /* the session is gone either way */ }
  showLogin("");
});

// ---- pages -----------------------------------------------------------------------------------

async function startPage() {
  const topic = input("topic", { value: "devices/+/telemetry", required: true });
  page("Get started: let a device publish",
    el("p", {}, "Three steps in one form: a role allowed to publish on a topic, a client with a password, the role given to the client."),
    form("Quick setup", [
      field("Role name", input("rolename", { value: "devices", required: true })),
      field("Topic the device may publish to (a filter: + and # allowed)", topic),
      field("Client username", input("username", { value: "device1", required: true })),
      field("Client password", input("password", { type: "password", autocomplete: "new-password", required: true })),
    ], "Create role, client and assignment", (data) => act("Quick setup", async () => {
      const rolename = data.get("rolename");
      await api("POST", "/roles", { rolename });
      await api("POST", `/roles/${encodeURIComponent(rolename)}/acls`,
        { acltype: "publishClientSend", topic: data.get("topic"), priority: 0, allow: true });
      await api("POST", "/clients", { username: data.get("username"), password: data.get("password") });
      await api("POST", `/clients/${encodeURIComponent(data.get("username"))}/roles`, { rolename, priority: 0 });
    })),
    el("p", { class: "muted" }, "Then the device connects with that username and password and publishes; watch it under Connected."));
}

async function clientsPage() {
  const data = await api("GET", "/clients?verbose=true");
  const rows = (data.clients || []).map((c) => el("tr", {},
    el("td", {}, c.username), el("td", {}, c.clientid || ""), el("td", {}, c.disabled ? "disabled" : "enabled"),
    el("td", {}, (c.roles || []).map((r) => `${r.rolename} (${r.priority ?? 0})`).join(", ")),
    el("td", {}, (c.groups || []).map((g) => g.groupname).join(", ")),
    el("td", {},
      el("button", { type: "button", class: "secondary", onclick: () => act(`${c.disabled ? "Enable" : "Disable"} ${c.username}`,
        () => api("POST", `/clients/${encodeURIComponent(c.username)}/${c.disabled ? "enable" : "disable"}`)) }, c.disabled ? "Enable" : "Disable"),
      el("button", { type: "button", class: "danger", onclick: () => confirm(`Delete client ${c.username}?`) &&
        act(`Delete ${c.username}`, () => api("DELETE", `/clients/${encodeURIComponent(c.username)}`)) }, "Delete"))));
  page("Clients", table(["Username", "Client id", "State", "Roles (priority)", "Groups", "Actions"], rows),
    form("Create a client", [field("Username", input("username", { required: true })),
      field("Password", input("password", { type: "password", autocomplete: "new-password" })),
      field("Client id (optional)", input("clientid"))], "Create client",
    (d) => act("Create client", () => api("POST", "/clients", Object.fromEntries([...d].filter(([, v]) => v !== ""))))),
    form("Give a client a role", [field("Username", input("username", { required: true })),
      field("Role", input("rolename", { required: true })), field("Priority", input("priority", { type: "number", value: "0" }))],
    "Add role", (d) => act("Add role", () => api("POST", `/clients/${encodeURIComponent(d.get("username"))}/roles`,
      { rolename: d.get("rolename"), priority: Number(d.get("priority")) }))),
    form("Set a client's password", [field("Username", input("username", { required: true })),
      field("New password", input("password", { type: "password", autocomplete: "new-password", required: true }))],
    "Set password", (d) => act("Set password", () => api("PUT", `/clients/${encodeURIComponent(d.get("username"))}/password`,
      { password: d.get("password") }))));
}

async function groupsPage() {
  const data = await api("GET", "/groups?verbose=true");
  const rows = (data.groups || []).map((g) => el("tr", {}, el("td", {}, g.groupname),
    el("td", {}, (g.roles || []).map((r) => `${r.rolename} (${r.priority ?? 0})`).join(", ")),
    el("td", {}, (g.clients || []).map((c) => c.username).join(", ")),
    el("td", {}, el("button", { type: "button", class: "danger", onclick: () => confirm(`Delete group ${g.groupname}?`) &&
      act(`Delete ${g.groupname}`, () => api("DELETE", `/groups/${encodeURIComponent(g.groupname)}`)) }, "Delete"))));
  page("Groups", table(["Group", "Roles (priority)", "Clients", "Actions"], rows),
    form("Create a group", [field("Group name", input("groupname", { required: true }))], "Create group",
      (d) => act("Create group", () => api("POST", "/groups", { groupname: d.get("groupname") }))),
    form("Add a client to a group", [field("Group", input("groupname", { required: true })),
      field("Username", input("username", { required: true })), field("Priority", input("priority", { type: "number", value: "0" }))],
    "Add client", (d) => act("Add client to group", () => api("POST", `/groups/${encodeURIComponent(d.get("groupname"))}/clients`,
      { username: d.get("username"), priority: Number(d.get("priority")) }))),
    form("Give a group a role", [field("Group", input("groupname", { required: true })),
      field("Role", input("rolename", { required: true })), field("Priority", input("priority", { type: "number", value: "0" }))],
    "Add role", (d) => act("Add role to group", () => api("POST", `/groups/${encodeURIComponent(d.get("groupname"))}/roles`,
      { rolename: d.get("rolename"), priority: Number(d.get("priority")) }))));
}

async function rolesPage() {
  const data = await api("GET", "/roles?verbose=true");
  const sections = (data.roles || []).map((r) => el("section", { class: "card" },
    el("h3", {}, r.rolename, r.textname ? ` — ${r.textname}` : ""),
    table(["ACL type", "Topic", "Priority", "Allow", ""], (r.acls || []).map((a) => el("tr", {},
      el("td", {}, a.acltype), el("td", {}, el("code", {}, a.topic)), el("td", {}, a.priority), el("td", {}, a.allow ? "allow" : "deny"),
      el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => act(`Remove ACL ${a.topic}`,
        () => api("DELETE", `/roles/${encodeURIComponent(r.rolename)}/acls?acltype=${encodeURIComponent(a.acltype)}&topic=${encodeURIComponent(a.topic)}`)) }, "Remove"))))),
    el("button", { type: "button", class: "danger", onclick: () => confirm(`Delete role ${r.rolename}?`) &&
      act(`Delete ${r.rolename}`, () => api("DELETE", `/roles/${encodeURIComponent(r.rolename)}`)) }, "Delete role")));
  page("Roles", ...sections,
    form("Create a role", [field("Role name", input("rolename", { required: true })), field("Description (optional)", input("textname"))],
      "Create role", (d) => act("Create role", () => api("POST", "/roles", Object.fromEntries([...d].filter(([, v]) => v !== ""))))),
    form("Add an ACL to a role", [field("Role", input("rolename", { required: true })), field("ACL type", select("acltype", ACL_TYPES)),
      field("Topic", input("topic", { required: true })), field("Priority", input("priority", { type: "number", value: "0" })),
      field("Decision", select("allow", ["allow", "deny"]))], "Add ACL",
    (d) => act("Add ACL", () => api("POST", `/roles/${encodeURIComponent(d.get("rolename"))}/acls`, {
      acltype: d.get("acltype"), topic: d.get("topic"), priority: Number(d.get("priority")), allow: d.get("allow") === "allow" }))));
}

async function anonymousPage() {
  const group = await api("GET", "/anonymous-group");
  const defaults = await api("GET", "/default-acl-access");
  const current = (group.group && group.group.groupname) || "";
  const rows = (defaults.acls || []).map((a) => el("tr", {}, el("td", {}, a.acltype), el("td", {}, a.allow ? "allow" : "deny"),
    el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => act(`Default ${a.acltype}`,
      () => api("PUT", "/default-acl-access", { acls: [{ acltype: a.acltype, allow: !a.allow }] })) }, a.allow ? "Set to deny" : "Set to allow"))));
  page("Anonymous group and default access",
    el("p", {}, "Clients without a username get the roles of the anonymous group (when allow_anonymous lets them in)."),
    form("Anonymous group", [field("Group", input("groupname", { value: current, required: true }))], "Set anonymous group",
      (d) => act("Set anonymous group", () => api("PUT", "/anonymous-group", { groupname: d.get("groupname") }))),
    el("h3", {}, "Default ACL access (when no ACL matches)"), table(["Type", "Default", ""], rows));
}

async function connectedPage() {
  const filter = input("filter", { placeholder: "username, client id or address" });
  const list = el("div");
  async function load() {
    const q = filter.value.trim();
    const all = await api("GET", "/connected");
    const clients = (all.clients || []).filter((c) => !q || [c.username || "", c.clientid, c.address].some((v) => v.includes(q)));
    list.replaceChildren(table(["Client id", "Username", "Address", "State", "Since", "Protocol", "Subscriptions", "In flight / queued", ""], clients.map((c) => el("tr", {},
      el("td", {}, c.clientid), el("td", {}, c.username || "(anonymous)"), el("td", {}, c.address),
      el("td", {}, c.connected ? "connected" : "offline (session kept)"),
      el("td", {}, c.since ? new Date(c.since).toLocaleString() : ""),
      el("td", {}, c.protocol ? `MQTT ${c.protocol}` : ""), el("td", {}, (c.subscriptions || []).join(", ")),
      el("td", {}, c.connected && c.inflight !== undefined ? `${c.inflight} / ${c.queued}` : ""),
      el("td", {}, c.connected ? el("button", { type: "button", class: "danger", onclick: () => act(`Kick ${c.clientid}`,
        () => api("POST", `/connected/${encodeURIComponent(c.clientid)}/kick`)) }, "Kick") : "")))));
  }
  filter.addEventListener("input", () => load().catch((e) => say(e.message)));
  page("Connected clients", field("Filter", filter),
    el("button", { type: "button", class: "secondary", onclick: () => load().catch((e) => say(e.message)) }, "Refresh"), list);
  await load();
}

function parseMetrics(text) {
  const values = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

async function metricsPage() {
  const canvas = el("canvas", { width: 900, height: 260, role: "img", "aria-label": "Messages per second, received and sent" });
  const numbers = el("div");
  page("Live metrics", el("p", { class: "muted" }, "Messages per second (received: blue, sent: green), every 2 seconds. Raw: /metrics."),
    canvas, numbers);
  async function tick() {
    const response = await fetch("/metrics", { credentials: "same-origin", headers: { "X-Requested-With": "dynsec-console" } });
    if (!response.ok) { numbers.textContent = "/metrics refused this browser (it needs Basic credentials on this listener)."; return; }
    const m = parseMetrics(await response.text());
    const now = Date.now();
    state.samples.push({ now, rx: m.broker_messages_received_total || 0, tx: m.broker_messages_sent_total || 0 });
    if (state.samples.length > 60) state.samples.shift();
    numbers.replaceChildren(table(["Metric", "Value"], [
      ["Connected clients", m.broker_clients_connected], ["Sessions", m.broker_sessions], ["Subscriptions", m.broker_subscriptions],
      ["Retained messages", m.broker_retained_messages], ["Logins accepted", m.broker_client_auth_success_total],
      ["Logins refused", m.broker_client_auth_failure_total], ["changeIndex", m.dynsec_change_index],
    ].map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v ?? "-")))));
    draw(canvas);
  }
  clearInterval(state.metricsTimer);
  state.metricsTimer = setInterval(() => { if (location.hash === "#/metrics") tick().catch(() => {}); else clearInterval(state.metricsTimer); }, 2000);
  await tick();
}

function draw(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rates = [];
  for (let i = 1; i < state.samples.length; i++) {
    const a = state.samples[i - 1], b = state.samples[i], dt = Math.max((b.now - a.now) / 1000, 0.001);
    rates.push({ rx: (b.rx - a.rx) / dt, tx: (b.tx - a.tx) / dt });
  }
  const max = Math.max(1, ...rates.map((r) => Math.max(r.rx, r.tx)));
  ctx.fillStyle = "#333"; ctx.fillText(`${max.toFixed(1)} msg/s`, 4, 12);
  for (const [key, color] of [["rx", "#1f5fbf"], ["tx", "#2e7d32"]]) {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    rates.forEach((r, i) => {
      const x = (i / 59) * (canvas.width - 10) + 5, y = canvas.height - 10 - (r[key] / max) * (canvas.height - 30);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

async function auditPage() {
  const data = await api("GET", "/audit?limit=200");
  const rows = (data.entries || []).flatMap((e) => (e.commands || []).map((c) => el("tr", {},
    el("td", {}, new Date(e.time).toLocaleString()), el("td", {}, e.via), el("td", {}, e.username || "(anonymous)"),
    el("td", {}, c.command), el("td", {}, ["username", "clientid", "groupname", "rolename", "acltype", "topic", "name"]
      .filter((k) => c[k]).map((k) => `${k}=${c[k]}`).join(" ")),
    el("td", {}, c.error ? `error: ${c.error}` : "success"))));
  page("Audit trail", el("p", { class: "muted" }, "Every control command, from MQTT, the REST API and this UI, newest first."),
    table(["When", "Via", "Who", "Command", "Target", "Result"], rows));
}

async function explainPage() {
  const out = el("pre", { "aria-live": "polite" });
  page("Explain a decision",
    form("Which rule decides?", [field("Username (or leave empty for a client id / anonymous)", input("username")),
      field("Client id (optional)", input("clientid")), field("Topic", input("topic", { required: true })),
      field("Action", select("action", ["publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"]))],
    "Explain", async (d) => {
      try {
        const q = new URLSearchParams([...d].filter(([, v]) => v !== ""));
        const r = await api("GET", "/explain?" + q);
        out.textContent = `Decision: ${r.decision}\n${r.reason || ""}\nRoles visited: ${(r.roles || []).join(", ") || "none"}` +
          (r.rule ? `\nRule: ${r.rule.acltype} ${r.rule.topic} priority ${r.rule.priority} in role ${r.rule.role}: ${r.rule.allow ? "allow" : "deny"}` : "");
        say("");
      } catch (e) { say("Explain failed: " + e.message); }
    }), out);
}

async function tokensPage() {
  const data = await api("GET", "/tokens");
  const shown = el("pre", { "aria-live": "polite" });
  const rows = (data.tokens || []).map((t) => el("tr", {}, el("td", {}, t.name), el("td", {}, t.owner), el("td", {}, t.scope),
    el("td", {}, t.expires ? new Date(t.expires).toLocaleString() : "never"),
    el("td", {}, el("button", { type: "button", class: "danger", onclick: () => act(`Revoke ${t.name}`,
      () => api("DELETE", `/tokens/${encodeURIComponent(t.id)}`)) }, "Revoke"))));
  page("Application tokens", table(["Name", "Owner", "Scope", "Expires", ""], rows),
    form("Create a token", [field("Name", input("name", { required: true })), field("Scope", select("scope", ["read", "admin"])),
      field("Expires in (days, empty: never)", input("days", { type: "number", min: "1" }))], "Create token", async (d) => {
      try {
        const body = { name: d.get("name"), scope: d.get("scope") };
        if (d.get("days")) body.expiresIn = Number(d.get("days")) * 86400;
        const t = await api("POST", "/tokens", body);
        shown.textContent = `Copy it now, it is not shown again:\n${t.token}`;
        say("Token created.", "ok");
      } catch (e) { say("Create token failed: " + e.message); }
    }), shown);
}

const PAGES = { "#/start": startPage, "#/clients": clientsPage, "#/groups": groupsPage, "#/roles": rolesPage,
  "#/anonymous": anonymousPage, "#/connected": connectedPage, "#/metrics": metricsPage, "#/audit": auditPage,
  "#/explain": explainPage, "#/tokens": tokensPage };

async function route() {
  if (!state.csrf) return;
  const hash = PAGES[location.hash] ? location.hash : "#/start";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === hash) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  try { await PAGES[hash](); } catch (e) { if (e.message !== "not logged in") say(e.message); }
}

window.addEventListener("hashchange", () => { say(""); route(); });

(async function start() {
  try {
    const me = await fetch(API + "/me", { credentials: "same-origin", headers: { "X-Requested-With": "dynsec-console" } });
    if (me.ok) { const body = await me.json(); if (body.csrf) { loggedIn(body); await route(); return; } }
  } catch (e) { /* fall through to the login form */ }
  showLogin("");
})();
