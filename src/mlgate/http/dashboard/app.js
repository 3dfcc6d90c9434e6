// mlgate dashboard: a single-page app over mlgate's own JSON APIs (no build step, no CDN).
// Every API call is a same-origin GET carrying the HttpOnly session cookie and the
// X-Mlgate-Dashboard header; data is written into the page as text, never as HTML.
import uPlot from "./vendor/uPlot.esm.js";

const HEADER = { "X-Mlgate-Dashboard": "1" };
const WINDOWS = ["1h", "24h", "7d"];
const COLORS = ["#2f6fed", "#e8590c", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#495057"];
const state = { me: null, paths: null, charts: [] };
// For tests and the curious: what each drawn chart plots ({title, data}).
window.mlgateCharts = state.charts;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const r = await fetch(path, { headers: HEADER, credentials: "same-origin" });
  if (r.status === 401) { showLogin("Your session has ended: sign in again."); throw new ApiError(401, "signed out"); }
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const msg = body && (body.message || (body.error && body.error.message) || body.detail);
    throw new ApiError(r.status, msg || `HTTP ${r.status}`);
  }
  return body;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { ...HEADER, "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  const data = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, data };
}

// -- DOM helpers (text only) ------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 2) => {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
};
const ms = (s) => (s === null || s === undefined ? "–" : `${fmt(s * 1000, 1)} ms`);
const pct = (r) => (r === null || r === undefined ? "–" : `${fmt(r * 100, 1)} %`);
const when = (t) => {
  if (t === null || t === undefined || t === "") return "–";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
};
const duration = (s) => {
  s = Math.floor(s || 0);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${mm}m` : `${mm}m ${s % 60}s`;
};
const badge = (text, cls) => h("span", { class: `badge ${cls || text}` }, text);
const card = (title, ...body) => h("div", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
const tile = (label, value, attrs) => h("div", { class: "tile", ...(attrs || {}) }, h("div", { class: "v" }, value), h("div", { class: "l" }, label));
const table = (heads, rows) => h("table", {}, h("thead", {}, h("tr", {}, heads.map((x) => h("th", { class: x.startsWith("#") ? "num" : null }, x.replace(/^#/, ""))))), h("tbody", {}, rows));
const json = (v) => h("pre", {}, JSON.stringify(v, null, 2));
const note = (text) => h("p", { class: "muted" }, text);
const isAdmin = () => state.me && state.me.role === "admin";
const has = (path) => Boolean(state.paths && state.paths.has(path));

// -- charts ---------------------------------------------------------------------------------
function chart(title, t, series, opts = {}) {
  const box = h("div", { class: "chart card", "data-chart": title }, h("h3", {}, title));
  const names = Object.keys(series);
  if (!t || !t.length || !names.length) { box.append(note("no data in this window")); return box; }
  const data = [t, ...names.map((n) => series[n])];
  state.charts.push({ title, names, data });
  const floor = opts.unit === "%" ? 0.05 : opts.unit === "ms" ? 0.01 : 1;  // an all-zero series still gets a sane axis
  let frames = 0;
  const draw = () => {
    if (!box.isConnected) { if (++frames < 600) requestAnimationFrame(draw); return; }  // drawn once on the page, at its width
    const width = Math.max(300, box.clientWidth - 34);
    new uPlot({
      width, height: opts.height || 180,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi || 0, floor) * 1.05] } },
      axes: [{}, { size: 60, values: (u, v) => v.map((x) => (opts.unit === "ms" ? fmt(x * 1000, 1) : opts.unit === "%" ? fmt(x * 100, 1) : fmt(x))) }],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.6, points: { show: t.length <= 70, size: 4 }, fill: opts.fill ? COLORS[i % COLORS.length] + "22" : undefined, spanGaps: false }))],
    }, data, box);
  };
  requestAnimationFrame(draw);
  return box;
}

function windowPicker(current, base) {
  return h("span", { class: "windows" }, WINDOWS.map((w) => h("a", { href: `${base}?window=${w}`, class: w === current ? "active" : null }, w)));
}

// -- sign-in ------------------------------------------------------------------------------
function showLogin(message) {
  state.me = null;
  $("page").replaceChildren();
  $("nav").hidden = true; $("logout").hidden = true; $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function signIn(ev) {
  ev.preventDefault();
  const key = $("login-key").value.trim();
  const username = $("login-user").value.trim();
  const password = $("login-password").value;
  const body = key ? { api_key: key } : { username, password };
  $("login-error").textContent = "";
  const r = await post("/dashboard/api/login", body);
  $("login-key").value = ""; $("login-password").value = "";
  if (!r.ok) { $("login-error").textContent = r.data.message || `Sign-in failed (HTTP ${r.status})`; return; }
  await start(r.data);
}

async function signOut() {
  await post("/dashboard/api/logout");
  location.hash = "#/";
  showLogin("Signed out.");
}

async function start(me) {
  state.me = me;
  $("login").hidden = true;
  $("nav").hidden = false; $("logout").hidden = false;
  for (const a of document.querySelectorAll("#nav [data-admin]")) a.hidden = !isAdmin();
  $("who").textContent = `${me.kind === "key" ? "key " + me.id : me.username} · ${me.role}`;
  if (!state.paths) {
    // Which APIs this server has (the stats APIs may not): its OpenAPI document.
    try {
      const doc = await fetch("/openapi.json", { credentials: "omit" }).then((r) => r.json());
      state.paths = new Set(Object.keys(doc.paths || {}));
    } catch { state.paths = new Set(); }
  }
  route();
}

// -- pages --------------------------------------------------------------------------------
async function overview() {
  const page = [h("h1", {}, "Overview")];
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const win = params.get("window") || "1h";
  const [models, ready, stats, alerts] = await Promise.all([
    api("/v1/models"),
    fetch("/readyz", { credentials: "omit" }).then((r) => r.json()).catch(() => null),
    isAdmin() && has("/v1/stats/models") ? api(`/v1/stats/models?window=${win}`).catch(() => null) : null,
    isAdmin() ? api("/v1/alerts").catch(() => null) : null,
  ]);
  const firing = alerts ? alerts.alerts.filter((a) => a.state === "firing") : [];
  const failed = ready ? ready.failed : [];
  page.push(h("div", { class: "tiles" },
    tile("models", fmt(models.models.length), { "data-k": "models" }),
    tile("versions loaded", fmt(ready ? ready.loaded.length : 0), { "data-k": "loaded" }),
    tile("failed versions", fmt(failed.length), { "data-k": "failed", class: failed.length ? "tile hot" : "tile" }),
    tile("status", ready ? ready.status : "–", { "data-k": "status" }),
    stats ? tile("uptime", duration(stats.uptime_s), { "data-k": "uptime" }) : null,
    alerts ? tile("alerts firing", fmt(firing.length), { "data-k": "firing", class: firing.length ? "tile hot" : "tile" }) : null,
  ));
  if (failed.length) page.push(card("Versions that failed to load", h("p", { class: "error" }, failed.join(", "))));
  if (firing.length) page.push(card(`Alerts firing (${firing.length})`, table(["alert", "labels", "#value", "since"], firing.slice(0, 8).map((a) => h("tr", {}, h("td", {}, h("a", { href: "#/alerts" }, a.alertname)), h("td", {}, Object.entries(a.labels || {}).map(([k, v]) => badge(`${k}=${v}`, "x"))), h("td", { class: "num" }, fmt(a.value, 4)), h("td", {}, when(a.firedAt))))), firing.length > 8 ? h("p", {}, h("a", { href: "#/alerts" }, `and ${firing.length - 8} more…`)) : null));
  const byModel = new Map((stats ? stats.models : []).map((m) => [m.model, m]));
  const policies = new Map();
  if (isAdmin()) {
    const described = await Promise.all(models.models.map((m) => api(`/v1/models/${encodeURIComponent(m.name)}`).catch(() => null)));
    described.forEach((d) => d && policies.set(d.name, d.policies || {}));
  }
  const rows = models.models.map((m) => {
    const s = byModel.get(m.name) || {};
    const pol = policies.get(m.name) || {};
    const aliases = Object.entries(m.aliases).map(([alias, v]) => {
      const p = pol[alias];
      const extra = [];
      if (p && p.split) extra.push(" split " + Object.entries(p.split).map(([ver, w]) => `v${ver}:${fmt(w, 0)}%`).join(" "));
      if (p && p.shadow) extra.push(` shadow v${p.shadow.version}`);
      return badge(`${alias} → v${v}${extra.join("")}`, p && (p.split || p.shadow) ? "warn" : "x");
    });
    const fails = failed.filter((f) => f.startsWith(m.name + ":"));
    return h("tr", { "data-model": m.name },
      h("td", {}, h("a", { href: `#/model/${encodeURIComponent(m.name)}` }, m.name)),
      h("td", {}, aliases),
      h("td", {}, m.loaded_versions.map((v) => badge(`v${v}`, "ok")), fails.map((f) => badge(`${f} failed`, "bad"))),
      h("td", { class: "num" }, fmt(m.latest_version)),
      h("td", { class: "num", "data-k": `requests:${m.name}` }, stats ? fmt(s.requests || 0) : "–"),
      h("td", { class: "num" }, stats ? fmt(s.rps || 0, 3) : "–"),
      h("td", { class: "num" }, stats ? pct(s.error_rate) : "–"),
      h("td", { class: "num" }, stats ? ms(s.p95_s) : "–"),
    );
  });
  page.push(card(h("span", {}, `Models (${win})`, stats ? windowPicker(win, "#/") : null),
    table(["model", "aliases", "loaded", "#latest", "#requests", "#req/s", "#errors", "#p95"], rows)));
  if (stats) page.push(note(`up since ${when(stats.started_at)}`));
  return page;
}

async function modelPage(name) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const win = params.get("window") || "1h";
  const enc = encodeURIComponent(name);
  const admin = isAdmin();
  const [model, stats, capture] = await Promise.all([
    api(`/v1/models/${enc}`),
    has("/v1/stats/models/{name}") ? api(`/v1/stats/models/${enc}?window=${win}`).catch(() => null) : null,
    admin ? api(`/v1/models/${enc}/capture`).catch(() => null) : null,
  ]);
  // Drift and samples need captured traffic: asked for only when capture is on.
  const capturing = Boolean(capture && capture.effective && capture.effective.sample > 0);
  const [drift, records] = capturing ? await Promise.all([
    api(`/v1/models/${enc}/drift?since=24h`).catch((e) => ({ error: e.message })),
    api(`/v1/models/${enc}/capture/records?limit=12&since=24h`).catch(() => null),
  ]) : [{ error: admin ? "data capture is off for this model" : "admins only" }, null];
  const report = drift && !drift.error ? await api(`/v1/models/${enc}/drift/reports`).catch(() => null) : null;
  const page = [h("h1", {}, `Model ${name}`, windowPicker(win, `#/model/${enc}`))];
  // traffic per version
  if (stats && stats.t) {
    const vers = Object.keys(stats.versions || {});
    // version "0": requests refused before a version answered (the gateway, a bad input)
    const vname = (v) => (v === "0" ? "no version" : `v${v}`);
    const per = (field) => Object.fromEntries(vers.map((v) => [vname(v), stats.versions[v][field]]));
    const lat = {};
    for (const v of vers) for (const q of ["p50_s", "p95_s", "p99_s"]) lat[`${vname(v)} ${q.slice(0, 3)}`] = stats.versions[v][q];
    page.push(h("div", { class: "grid" },
      chart("requests/s", stats.t, per("rps"), { fill: true }),
      chart("latency (ms)", stats.t, lat, { unit: "ms" }),
      chart("error rate (%)", stats.t, per("error_rate"), { unit: "%" }),
      chart("batch size", stats.t, per("batch_size")),
    ));
    if (stats.totals) page.push(card("Totals", h("div", { class: "tiles" }, Object.entries(stats.totals).filter(([, v]) => typeof v === "number").map(([k, v]) => tile(k, fmt(v, 4), { "data-k": `total:${k}` })))));
  } else {
    page.push(card("Traffic", note("Per-minute history is not available on this server (the /v1/stats APIs).")));
  }
  // versions: manifest and metrics
  const policies = model.policies || {};
  page.push(card("Versions", table(["version", "aliases", "runtime", "created", "metrics", "loaded"], model.versions.map((v) => h("tr", {},
    h("td", {}, `v${v.version}`), h("td", {}, v.aliases.map((a) => badge(a, "x"))), h("td", {}, v.runtime), h("td", {}, when(v.created_at)),
    h("td", {}, Object.entries(v.metrics || {}).map(([k, x]) => badge(`${k}=${fmt(x, 4)}`, "x"))),
    h("td", {}, model.loaded_versions.includes(v.version) ? badge("loaded", "ok") : badge("not loaded", "x")),
  )))));
  const latest = model.versions[model.versions.length - 1];
  if (latest) page.push(card(`Manifest of v${latest.version}`, json({ runtime: latest.runtime, artifact: latest.artifact, description: latest.description, input_schema: latest.input_schema, output_schema: latest.output_schema, params: latest.params })));
  // drift
  page.push(driftCard(drift, report));
  // canary / shadow
  const aliasesWithShadow = Object.entries(policies).filter(([, p]) => p && p.shadow).map(([a]) => a);
  if (Object.keys(policies).length) page.push(card("Canary and shadow", json(policies)));
  for (const alias of aliasesWithShadow) {
    const cmp = await api(`/v1/models/${enc}/shadow?alias=${encodeURIComponent(alias)}`).catch((e) => ({ error: e.message }));
    page.push(card(`Shadow comparison (${alias})`, json(cmp)));
  }
  // captured samples
  page.push(samplesCard(records));
  const hist = has("/v1/models/{name}/history") ? await api(`/v1/models/${enc}/history`).catch(() => null) : null;
  if (hist) {
    const events = hist.events || hist.history || [];
    page.push(card("History", events.length ? table(["when", "what", "by", "details"], events.slice(0, 30).map((e) => h("tr", {}, h("td", {}, when(e.at || e.timestamp)), h("td", {}, e.action || e.type || e.event), h("td", {}, e.actor || ""), h("td", {}, h("code", {}, JSON.stringify(e.details || e.detail || {}).slice(0, 160)))))) : note("no changes recorded")));
  }
  return page;
}

function driftCard(drift, report) {
  const body = [];
  const features = drift && drift.features;
  if (features && features.length) {
    const max = Math.max(0.25, ...features.map((f) => f.psi || 0));
    body.push(h("div", { class: "bars" }, features.map((f) => {
      const fill = h("div", { class: `fill ${f.band || ""}` });
      fill.style.width = `${Math.min(100, ((f.psi || 0) / max) * 100)}%`;
      return h("div", { class: "bar", "data-feature": f.name }, h("span", {}, `${f.name}${f.kind === "output" ? " (output)" : ""}`), h("div", { class: "track" }, fill), h("span", { class: "num" }, `psi ${fmt(f.psi, 3)}`));
    })));
    body.push(note(`${drift.drifted && drift.drifted.length ? "drifted: " + drift.drifted.join(", ") : "no feature drifted"} · ${fmt(drift.n_rows || drift.rows || 0)} rows`));
  } else {
    body.push(note(drift && drift.error ? `No drift evaluation: ${drift.error}` : "No drift evaluation (no baseline or no captured traffic)."));
  }
  if (report && (report.report || report.features)) {
    const r = report.report || report;
    body.push(h("h3", {}, `Last report ${when(r.evaluated_at || r.created_at || report.at)}`), json(r));
  }
  return card("Drift per feature", ...body);
}

function findImages(v, out, path = "") {
  if (out.length >= 12) return out;
  if (typeof v === "string" && v.length > 1 && (v[0] === "{" || v[0] === "[")) {
    try { return findImages(JSON.parse(v), out, path); } catch { /* not JSON: a plain string */ }
  }
  if (typeof v === "string") {
    const m = v.match(/^data:(image\/(png|jpeg|gif|webp));base64,/);
    if (m) out.push({ src: v, path });
    else if (v.length > 64 && /^(\/9j\/|iVBORw0KGgo|R0lGOD|UklGR)/.test(v)) {
      const type = v.startsWith("/9j/") ? "jpeg" : v.startsWith("iVBOR") ? "png" : v.startsWith("R0lG") ? "gif" : "webp";
      out.push({ src: `data:image/${type};base64,${v}`, path });
    }
  } else if (Array.isArray(v)) v.forEach((x, i) => findImages(x, out, `${path}[${i}]`));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) findImages(x, out, path ? `${path}.${k}` : k);
  return out;
}

const recordTime = (r) => (r.eventMetadata && r.eventMetadata.inferenceTime) || r.time || r.at;
function sampleText(r) {
  const c = r.captureData || {};
  const part = (p) => (p ? (p.encoding === "JSON" ? p.data : `(${p.observedContentType}, ${p.encoding})`) : "");
  return `in:  ${part(c.endpointInput).slice(0, 160)}\nout: ${part(c.endpointOutput).slice(0, 160)}`;
}

function samplesCard(records) {
  if (!records) return card("Captured samples", note("No capture for this model."));
  const figs = [];
  for (const r of (records.records || []).slice(-12).reverse()) {
    const images = findImages(r, []);
    if (images.length) for (const im of images.slice(0, 1)) figs.push(h("figure", { class: "sample" }, h("img", { src: im.src, alt: im.path }), h("figcaption", {}, `${when(recordTime(r))} · ${im.path}`)));
    else figs.push(h("figure", { class: "sample" }, h("figcaption", {}, when(recordTime(r))), h("pre", {}, sampleText(r))));
  }
  return card(`Captured samples (${fmt(records.count)})`, figs.length ? h("div", { class: "samples" }, figs) : note("nothing captured yet"));
}

async function keysPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const win = params.get("window") || "24h";
  const [keys, stats] = await Promise.all([
    api("/v1/keys"),
    has("/v1/stats/keys") ? api(`/v1/stats/keys?window=${win}`).catch(() => null) : null,
  ]);
  const page = [h("h1", {}, "Keys and usage", stats ? windowPicker(win, "#/keys") : null)];
  const byId = new Map((stats ? stats.keys : []).map((k) => [k.key_id, k]));
  const list = keys.keys || keys;
  const rows = list.map((k) => {
    const s = byId.get(k.id) || {};
    const q = s.quota || null;
    const hot = q && q.used_ratio !== null && q.used_ratio > 0.8;
    const meterFill = h("div", { class: `fill ${hot ? "hot" : ""}` });
    if (q && q.used_ratio !== null) meterFill.style.width = `${Math.min(100, q.used_ratio * 100)}%`;
    const t = s.totals || {};
    return h("tr", { class: hot ? "hot" : null, "data-key": k.id },
      h("td", {}, k.name), h("td", {}, h("code", {}, k.id)), h("td", {}, k.owner || "–"), h("td", {}, k.role),
      h("td", {}, k.disabled ? badge("disabled", "bad") : badge("active", "ok")),
      h("td", { class: "num", "data-k": `key-requests:${k.id}` }, stats ? fmt(t.requests || 0) : "–"),
      h("td", { class: "num", "data-k": `key-units:${k.id}` }, stats ? fmt(t.units || 0) : "–"),
      h("td", { class: "num" }, stats ? fmt(t.throttled || 0) : "–"),
      h("td", {}, q && q.limit ? [h("span", { class: "meter" }, meterFill), ` ${fmt(q.used)} / ${fmt(q.limit)} (${pct(q.used_ratio)})`, hot ? badge("quota > 80 %", "warn") : null] : "no quota"),
      h("td", {}, q && q.remaining !== undefined && q.limit ? fmt(q.remaining) : "–"),
      h("td", {}, q && q.projected_exhaustion ? when(q.projected_exhaustion) : "–"),
    );
  });
  page.push(card(isAdmin() ? "All keys" : "Your keys", table(["name", "id", "owner", "role", "state", "#requests", "#units", "#throttled", "quota used", "remaining", "projected exhaustion"], rows)));
  if (stats && stats.t) {
    const top = stats.keys.slice(0, 8);
    page.push(h("div", { class: "grid" },
      chart("requests per key", stats.t, Object.fromEntries(top.map((k) => [k.name || k.key_id, k.requests]))),
      chart("units per key", stats.t, Object.fromEntries(top.map((k) => [k.name || k.key_id, k.units]))),
      chart("throttled per key", stats.t, Object.fromEntries(top.map((k) => [k.name || k.key_id, k.throttled]))),
    ));
    if (stats.owners && stats.owners.length) page.push(card("Per owner", table(["owner", "#requests", "#units", "#throttled"], stats.owners.map((o) => h("tr", { "data-owner": o.owner }, h("td", {}, o.owner || "(no owner)"), h("td", { class: "num" }, fmt(o.requests)), h("td", { class: "num" }, fmt(o.units)), h("td", { class: "num" }, fmt(o.throttled)))))));
  } else {
    page.push(note("Usage history is not available on this server (the /v1/stats APIs)."));
  }
  return page;
}

async function alertsPage() {
  const [alerts, rules] = await Promise.all([api("/v1/alerts?since=7d&limit=500"), api("/v1/alerts/rules")]);
  const page = [h("h1", {}, "Alerts")];
  const active = alerts.alerts || [];
  page.push(card(`Active (${active.length})`, active.length ? table(["alert", "state", "labels", "#value", "since", "summary"], active.map((a) => h("tr", { "data-alert": a.alertname },
    h("td", {}, a.alertname), h("td", {}, badge(a.state)), h("td", {}, Object.entries(a.labels || {}).map(([k, v]) => badge(`${k}=${v}`, "x"))),
    h("td", { class: "num" }, fmt(a.value, 4)), h("td", {}, when(a.firedAt || a.activeAt)), h("td", {}, (a.annotations || {}).summary || "")))) : note("nothing firing")));
  const history = alerts.history || [];
  const byRule = {};
  for (const ev of history) (byRule[ev.alertname] = byRule[ev.alertname] || []).push(ev);
  const charts = [];
  for (const [rule, evs] of Object.entries(byRule)) {
    const pts = evs.filter((e) => typeof e.value === "number").map((e) => [Date.parse(e.at) / 1000, e.value]).sort((a, b) => a[0] - b[0]);
    if (pts.length) charts.push(chart(`${rule}: value at each change`, pts.map((p) => p[0]), { value: pts.map((p) => p[1]) }, { height: 140 }));
  }
  if (charts.length) page.push(h("div", { class: "grid" }, charts));
  page.push(card("State changes (7 days)", history.length ? table(["when", "alert", "state", "#value", "labels"], history.slice(0, 100).map((e) => h("tr", {},
    h("td", {}, when(e.at)), h("td", {}, e.alertname), h("td", {}, badge(e.state)), h("td", { class: "num" }, fmt(e.value, 4)), h("td", {}, Object.entries(e.labels || {}).map(([k, v]) => badge(`${k}=${v}`, "x")))))) : note("no state changes")));
  const ruleRows = [];
  for (const g of rules.groups || []) for (const r of g.rules || []) ruleRows.push(h("tr", { "data-rule": r.name }, h("td", {}, g.name || g.file || ""), h("td", {}, r.name), h("td", {}, badge(r.state || "inactive")), h("td", {}, h("code", {}, r.query || "")), h("td", { class: "num" }, fmt(r.duration))));
  page.push(card("Rules", table(["group", "rule", "state", "expression", "#for (s)"], ruleRows)));
  return page;
}

async function workflowsPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const wf = params.get("workflow") || "", st = params.get("status") || "", since = params.get("since") || "";
  const q = new URLSearchParams({ limit: "500" });
  if (wf) q.set("workflow", wf);
  if (st) q.set("status", st);
  const [workflows, list, stats] = await Promise.all([
    api("/v1/workflows"),
    api(`/v1/executions?${q}`),
    isAdmin() && has("/v1/stats/workflows") ? api("/v1/stats/workflows?window=24h").catch(() => null) : null,
  ]);
  let execs = list.executions;
  if (since) { const cut = Date.now() - ({ "1h": 3600, "24h": 86400, "7d": 604800 }[since] || 0) * 1000; execs = execs.filter((e) => Date.parse(e.startDate) >= cut); }
  const page = [h("h1", {}, "Workflows")];
  // executions by status over time: the stats API's when present, else from the list itself
  let t, byStatus;
  if (stats && stats.t && stats.by_status) { t = stats.t; byStatus = stats.by_status; }
  else {
    const minute = (e) => Math.floor(Date.parse(e.startDate) / 60000) * 60;
    const ts = [...new Set(execs.map(minute))].sort((a, b) => a - b);
    if (ts.length === 1) ts.unshift(ts[0] - 60);
    const idx = new Map(ts.map((x, i) => [x, i]));
    byStatus = {};
    for (const e of execs) { (byStatus[e.status] = byStatus[e.status] || ts.map(() => 0))[idx.get(minute(e))] += 1; }
    t = ts;
  }
  page.push(chart("executions by status", t, byStatus, { fill: true }));
  const sel = (name, value, options) => h("select", { name, id: `f-${name}` }, options.map((o) => h("option", { value: o, selected: o === value }, o || "any")));
  const form = h("form", { class: "filters", id: "wf-filters" },
    h("label", {}, "workflow", sel("workflow", wf, ["", ...workflows.workflows.map((w) => w.name)])),
    h("label", {}, "status", sel("status", st, ["", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"])),
    h("label", {}, "started within", sel("since", since, ["", "1h", "24h", "7d"])),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["workflow", "status", "since"]) { const v = form.elements[k].value; if (v) p.set(k, v); }
    location.hash = `#/workflows?${p}`;
  });
  page.push(card(`Executions (${execs.length})`, form, table(["execution", "workflow", "status", "started", "stopped", "error"], execs.slice(0, 200).map((e) => h("tr", { "data-execution": e.executionId },
    h("td", {}, h("a", { href: `#/execution/${encodeURIComponent(e.executionId)}` }, e.name || e.executionId)), h("td", {}, `${e.workflow} r${e.revision}`),
    h("td", {}, badge(e.status)), h("td", {}, when(e.startDate)), h("td", {}, when(e.stopDate)), h("td", { class: "error" }, e.error || ""))))));
  page.push(card("Deployed", table(["workflow", "#revision", "description", "updated"], workflows.workflows.map((w) => h("tr", {}, h("td", {}, w.name), h("td", { class: "num" }, w.revision), h("td", {}, w.description || ""), h("td", {}, when(w.updatedAt)))))));
  return page;
}

// -- one execution: the state graph (SVG from the definition) with the path taken ---------------
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function transitions(st) {
  const out = [];
  if (st.Next) out.push({ to: st.Next, kind: "next" });
  if (st.Default) out.push({ to: st.Default, kind: "next" });
  for (const c of st.Choices || []) if (c.Next) out.push({ to: c.Next, kind: "next" });
  for (const c of st.Catch || []) if (c.Next) out.push({ to: c.Next, kind: "catch" });
  return out;
}

function layout(def) {
  const states = def.States || {};
  const level = {};
  const queue = [[def.StartAt, 0]];
  while (queue.length) {
    const [name, d] = queue.shift();
    if (!states[name] || (level[name] !== undefined && level[name] >= d) || d > 200) continue;
    if (level[name] !== undefined) continue;
    level[name] = d;
    for (const t of transitions(states[name])) queue.push([t.to, d + 1]);
  }
  let extra = Math.max(0, ...Object.values(level)) + 1;
  for (const name of Object.keys(states)) if (level[name] === undefined) level[name] = extra++;
  const rows = {};
  for (const [name, d] of Object.entries(level)) (rows[d] = rows[d] || []).push(name);
  return { states, level, rows };
}

function stateRuns(events) {
  // per state: entered input, exited output, error (from the execution's history)
  const runs = {};
  const order = [];
  let current = null;
  for (const e of events) {
    const name = e.state;
    const d = e.details || {};
    if (name && !(d.scope)) {
      const r = runs[name] || (runs[name] = { name, entered: 0 });
      if (/StateEntered$/.test(e.type)) { r.entered += 1; r.input = d.input; order.push(name); current = name; }
      else if (/StateExited$/.test(e.type)) { r.output = d.output; }
      else if (/Failed$|TimedOut$/.test(e.type)) { r.error = d.error || r.error; r.cause = d.cause || r.cause; }
    }
    if (e.type === "ExecutionFailed" && current) { const r = runs[current]; if (r && !r.output) { r.error = r.error || d.error; r.cause = r.cause || d.cause; r.failed = true; } }
  }
  return { runs, order };
}

async function executionPage(id) {
  const enc = encodeURIComponent(id);
  const [exec, hist] = await Promise.all([api(`/v1/executions/${enc}`), api(`/v1/executions/${enc}/history`)]);
  const wf = await api(`/v1/workflows/${encodeURIComponent(exec.workflow)}`);
  const def = wf.definition || {};
  const { states, level, rows } = layout(def);
  const { runs, order } = stateRuns(hist.events || []);
  const W = 170, H = 44, GX = 40, GY = 46;
  const width = Math.max(...Object.values(rows).map((r) => r.length)) * (W + GX) + GX;
  const depth = Object.keys(rows).length;
  const pos = {};
  for (const [d, names] of Object.entries(rows)) names.forEach((n, i) => { pos[n] = { x: GX + i * (W + GX) + ((width - GX - names.length * (W + GX)) / 2), y: 20 + Number(d) * (H + GY) }; });
  const taken = new Set();
  for (let i = 1; i < order.length; i++) taken.add(`${order[i - 1]}>${order[i]}`);
  const svg = s("svg", { width, height: depth * (H + GY) + 20, viewBox: `0 0 ${width} ${depth * (H + GY) + 20}`, role: "img", "aria-label": "state graph" });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" }))));
  for (const [name, st] of Object.entries(states)) for (const tr of transitions(st)) {
    if (!pos[tr.to]) continue;
    const a = pos[name], b = pos[tr.to];
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const back = y2 <= y1;
    const d = back ? `M${a.x + W},${a.y + H / 2} C${a.x + W + 60},${a.y + H / 2} ${b.x + W + 60},${b.y + H / 2} ${b.x + W},${b.y + H / 2}` : `M${x1},${y1} C${x1},${y1 + GY / 2} ${x2},${y2 - GY / 2} ${x2},${y2}`;
    svg.append(s("path", { d, class: `edge ${taken.has(`${name}>${tr.to}`) ? "taken" : ""} ${tr.kind === "catch" ? "catch" : ""}`, "marker-end": "url(#arrow)" }));
  }
  const detail = h("div", { id: "state-detail" });
  const select = (name) => {
    for (const g of svg.querySelectorAll(".node")) g.classList.toggle("selected", g.getAttribute("data-state") === name);
    const r = runs[name];
    const parts = [h("h2", {}, `${name} (${states[name] ? states[name].Type : "?"})`)];
    if (!r) parts.push(note("not entered in this execution"));
    else {
      parts.push(h("p", {}, `entered ${r.entered} time(s)`), h("h3", {}, "input"), json(r.input === undefined ? null : r.input));
      if (r.output !== undefined) parts.push(h("h3", {}, "output"), json(r.output));
      if (r.error) parts.push(h("h3", {}, "error"), h("pre", { class: "error" }, `${r.error}${r.cause ? "\n" + r.cause : ""}`));
    }
    detail.replaceChildren(...parts);
  };
  for (const [name, st] of Object.entries(states)) {
    const p = pos[name];
    const r = runs[name];
    const cls = `node ${r ? "taken" : ""} ${r && (r.error || r.failed) && !r.output ? "failed" : ""}`;
    const g = s("g", { class: cls, "data-state": name, transform: `translate(${p.x},${p.y})`, tabindex: "0" },
      s("rect", { width: W, height: H, rx: 8 }),
      s("text", { x: W / 2, y: 19, "text-anchor": "middle" }, name.length > 24 ? name.slice(0, 23) + "…" : name),
      s("text", { x: W / 2, y: 34, "text-anchor": "middle", class: "type" }, st.Type + (r && r.entered > 1 ? ` ×${r.entered}` : "")));
    g.addEventListener("click", () => select(name));
    svg.append(g);
  }
  const failedState = Object.values(runs).find((r) => r.error && !r.output);
  select(failedState ? failedState.name : order[order.length - 1] || def.StartAt);
  return [
    h("h1", {}, `Execution ${exec.name || exec.executionId}`),
    h("div", { class: "tiles" }, tile("workflow", `${exec.workflow} r${exec.revision}`), tile("status", exec.status, { "data-k": "exec-status" }), tile("started", when(exec.startDate)), tile("stopped", when(exec.stopDate)), exec.error ? tile("error", exec.error) : null),
    h("div", { class: "split" }, card("State graph (path taken in green)", h("div", { class: "graph" }, svg)), h("div", { class: "card" }, detail)),
    h("div", { class: "split" }, card("Execution input", json(exec.input)), card(exec.error ? "Error" : "Execution output", exec.error ? h("pre", { class: "error" }, `${exec.error}\n${exec.cause || ""}`) : json(exec.output))),
    card(`History (${(hist.events || []).length} events)`, table(["#", "type", "state", "when"], (hist.events || []).map((e) => h("tr", {}, h("td", {}, e.id), h("td", {}, e.type), h("td", {}, e.state || ""), h("td", {}, when(e.timestamp)))))),
  ];
}

// -- routing ------------------------------------------------------------------------------
const ROUTES = [
  [/^#\/?$/, () => (isAdmin() || (state.me && state.me.kind === "key") ? overview() : keysPage()), "overview"],
  [/^#\/\?/, () => overview(), "overview"],
  [/^#\/model\/([^?]+)/, (m) => modelPage(decodeURIComponent(m[1])), "overview"],
  [/^#\/keys/, () => keysPage(), "keys"],
  [/^#\/alerts/, () => alertsPage(), "alerts"],
  [/^#\/workflows/, () => workflowsPage(), "workflows"],
  [/^#\/execution\/([^?]+)/, (m) => executionPage(decodeURIComponent(m[1])), "workflows"],
];

let generation = 0;
async function route() {
  if (!state.me) return;
  const hash = location.hash || "#/";
  const mine = ++generation;
  state.charts.length = 0;
  const page = $("page");
  page.setAttribute("data-loading", "1");
  page.replaceChildren(note("Loading…"));
  for (const [re, render, nav] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === nav);
    try {
      const content = await render(m);
      if (mine !== generation) return;
      page.replaceChildren(...content);
    } catch (err) {
      if (mine !== generation || (err instanceof ApiError && err.status === 401)) return;
      page.replaceChildren(card("Could not load this page", h("p", { class: "error" }, err.message)));
    }
    requestAnimationFrame(() => requestAnimationFrame(() => { if (mine === generation) page.removeAttribute("data-loading"); }));
    return;
  }
  page.replaceChildren(card("Not found", note(hash)));
  page.removeAttribute("data-loading");
}

window.addEventListener("hashchange", route);
$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", signOut);
(async () => {
  const r = await fetch("/dashboard/api/me", { headers: HEADER, credentials: "same-origin" });
  const me = r.ok ? await r.json() : null;
  if (me && me.signed_in) await start(me);
  else showLogin("");
})();
