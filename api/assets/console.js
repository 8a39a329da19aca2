// What the wall board (/) and the town page (/towns/{id}) share, served as
// /assets/console.js from this service (embedded in the binary like the pages, so
// nothing is fetched from anywhere else): the options in the URL, talking to the API,
// signing in with a token, and the rows of open alerts to acknowledge.
//
// A page loads it before its own script and provides what differs: `poll()`, which
// draws the page again, and the hooks in `account` and `alertList` below. Top-level
// names here are the page's globals (a classic script's `let` and functions are).
"use strict";

// One sign-in serves both pages in a tab: the token lives under this key in the tab's
// sessionStorage, never in a URL, a cookie or the local storage that outlives it.
const TOKEN_KEY = "stockpile-token";

// Options from the fragment (never sent to the server): a token there is kept for the
// session and removed from view at once.
const options = new URLSearchParams(location.hash.replace(/^#/, ""));
if (options.get("token")) {
  sessionStorage.setItem(TOKEN_KEY, options.get("token"));
  options.delete("token");
  history.replaceState(null, "", location.pathname + location.search + (options.toString() ? "#" + options : ""));
}
let token = sessionStorage.getItem(TOKEN_KEY);
// A page's settings live in the query, so a bookmark (a wall display's) keeps them.
const query = new URLSearchParams(location.search);
let lang = query.get("lang") === "en" ? "en" : "zh";
// Who the token belongs to (GET /api/v1/me), once known; null when signed out.
let me = null;

// ---- Talking to the API ----

// An API refusal, as the API put it: status, stable code, message, and for a refused
// count the reason of each rejected reading.
class ApiError extends Error {
  constructor(status, code, message, rejected) {
    super(message);
    this.status = status;
    this.code = code;
    this.rejected = rejected || [];
  }
  toString() {
    return this.status + (this.code ? " " + this.code : "") + ": " + this.message;
  }
}

async function api(path, { method = "GET", body, bearer = token } = {}) {
  const headers = { "Accept": "application/json" };
  if (bearer) headers["Authorization"] = "Bearer " + bearer;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", "服务无法连接 the service cannot be reached (" + error.message + ")");
  }
  if (!response.ok) {
    let code = "", message = response.statusText, rejected = [];
    try {
      ({ code, message, rejected } = (await response.json()).error);
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, code, message, rejected);
  }
  return response.json();
}

function byId(id) {
  return document.getElementById(id);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatDays(days) {
  if (days === null || days === undefined) return "—";
  return days >= 100 ? "99+" : days.toFixed(1);
}

// A moment in the city's time, in the page's language.
function formatTime(at) {
  return new Date(at).toLocaleString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false });
}

// ---- Signing in ----

const ROLE_NAMES = { admin: "管理员 admin", officer: "街镇负责人 officer", viewer: "只读 viewer" };

// What a page adds to signing in: how it names an officer's towns, what it draws with
// the account, and what it forgets when the holder changes.
const account = {
  townNames: towns => towns.join("、"),
  shown: () => {},
  changed: () => {},
};

function showAccount() {
  byId("sign-in").hidden = Boolean(me) || !byId("sign-in-form").hidden;
  byId("whoami").hidden = !me;
  byId("sign-out").hidden = !token;
  account.shown();
  if (!me) return;
  const towns = me.role === "admin" ? "全部街镇 all towns" : account.townNames(me.towns);
  byId("whoami").textContent = [me.name, ROLE_NAMES[me.role] || me.role, towns]
    .filter(Boolean).join(" · ");
}

// Asks who `candidate` belongs to; only on success is the page signed in with it.
async function signIn(candidate) {
  byId("account-error").textContent = "";
  try {
    me = await api("/api/v1/me", { bearer: candidate });
  } catch (error) {
    const why = error.status === 401 ? "令牌无效 Not a valid token" : "登录失败 Sign-in failed";
    byId("account-error").textContent = why + " (" + error + ")";
    return false;
  }
  token = candidate;
  sessionStorage.setItem(TOKEN_KEY, token);
  alertRows.clear();
  account.changed();
  showAccount();
  poll();
  return true;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  me = null;
  alertRows.clear();
  byId("account-error").textContent = "";
  account.changed();
  showAccount();
  poll();
}

byId("sign-in").addEventListener("click", () => {
  byId("sign-in-form").hidden = false;
  byId("sign-in").hidden = true;
  byId("token-input").focus();
});

byId("sign-in-form").addEventListener("submit", async event => {
  event.preventDefault();
  const input = byId("token-input");
  const candidate = input.value.trim();
  if (!candidate) return;
  if (await signIn(candidate)) {
    input.value = "";
    byId("sign-in-form").hidden = true;
    showAccount();
  }
});

byId("sign-out").addEventListener("click", signOut);

// A token from an earlier sign-in (or #token=): find out whose it is. A token that is
// no longer valid is said so, and the page goes on as before (its banner says why).
async function restoreSignIn() {
  if (!token) return;
  try {
    me = await api("/api/v1/me");
  } catch (error) {
    byId("account-error").textContent = "登录已失效 Signed-in token refused (" + error + ")";
  }
  showAccount();
}

// ---- Open alerts, acknowledged with a note ----

// What a page draws of an alert: its row (`row`), what of it can change (`key`: the row
// is rebuilt only when this does), and the words of acknowledging.
const alertList = {
  row: () => el("div"),
  // The cluster's view without heard_at, which moves with every heartbeat: a row is not
  // rebuilt (and a note being typed lost) for that.
  key: alert => [alert.severity, alert.state, alert.summary.en, JSON.stringify(alert.acknowledged),
    alert.cluster_state ? alert.cluster_state.state + alert.cluster_state.acknowledged_at : ""].join("|"),
  words: {
    acknowledge: "确认 Acknowledge", acknowledging: "确认中… Acknowledging",
    acknowledged: "已确认 Acknowledged: ", not_acknowledged: "确认失败 Not acknowledged: ",
    at_cluster: "组团确认 Acknowledged at the cluster: ",
    note: "备注（可选）Note (optional)",
  },
};

// Rows of the alert list by alert id, kept across polls so a note being typed survives.
const alertRows = new Map();

// Who acknowledged, when, and their note (who and note only for a token's reads).
function ackText(ack) {
  return alertList.words.acknowledged + [ack.by, formatTime(ack.at), ack.note].filter(Boolean).join(" · ");
}

// The row's act: who acknowledged it, or (for those who may) a note and the button.
function ackControls(alert, row, may) {
  const act = el("div", "act");
  const cluster = alert.cluster_state;
  if (alert.acknowledged && cluster && cluster.acknowledged_at) {
    // Taken on by the cluster's officers at their own instance (docs/design.md#cluster-instance).
    act.appendChild(el("span", "acked at-cluster",
      alertList.words.at_cluster + cluster.cluster + " · " + formatTime(cluster.acknowledged_at)));
  } else if (alert.acknowledged) {
    act.appendChild(el("span", "acked", ackText(alert.acknowledged)));
  } else if (may) {
    const note = el("input", "ack-note");
    note.placeholder = alertList.words.note;
    note.maxLength = 1000;
    const button = el("button", "ack", alertList.words.acknowledge);
    button.type = "button";
    button.addEventListener("click", () => acknowledge(alert, row, note, button));
    act.append(note, button);
  }
  return act;
}

async function acknowledge(alert, row, note, button) {
  button.disabled = true;
  button.textContent = alertList.words.acknowledging;
  row.querySelector(".ack-error").textContent = "";
  try {
    const acked = await api("/api/v1/alerts/" + alert.id + "/ack",
      { method: "POST", body: { note: note.value.trim() } });
    const fresh = alertList.row(acked);
    alertRows.set(acked.id, { row: fresh, key: alertList.key(acked) });
    row.replaceWith(fresh);
  } catch (error) {
    button.disabled = false;
    button.textContent = alertList.words.acknowledge;
    row.querySelector(".ack-error").textContent = alertList.words.not_acknowledged + error;
  }
}

// The rows of `alerts`: the kept ones where nothing shown changed, new ones otherwise;
// rows of alerts no longer listed are forgotten.
function alertRowsOf(alerts) {
  const rows = alerts.map(alert => {
    const kept = alertRows.get(alert.id);
    const key = alertList.key(alert);
    if (kept && kept.key === key) return kept.row;
    const row = alertList.row(alert);
    alertRows.set(alert.id, { row, key });
    return row;
  });
  const shown = new Set(alerts.map(a => a.id));
  for (const id of alertRows.keys()) if (!shown.has(id)) alertRows.delete(id);
  return rows;
}

// The 中/EN toggle and the like keep their setting in the query, so a reload (or a
// bookmark) keeps it.
function setQuery(key, value) {
  if (value === null) query.delete(key); else query.set(key, value);
  const search = query.toString().replace(/=(&|$)/g, "$1");
  history.replaceState(null, "", location.pathname + (search ? "?" + search : "") + location.hash);
}
