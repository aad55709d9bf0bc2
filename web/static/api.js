// Talking to the Contrail JSON API, plus the small DOM and formatting helpers every page shares.
// Data from spans is only ever put into the page with textContent / attributes (see el()),
// never parsed as HTML, so a span attribute cannot inject markup or script.

export const API_BASE = document.body.dataset.apiBase || "/api/v1";
const TOKEN_KEY = "contrail.token";
let tokenPrompt = null; // one prompt at a time, shared by concurrent requests

export const contrail = (window.__contrail = window.__contrail || {});

export class ApiError extends Error {
  constructor(status, code, message, parameter) {
    super(message);
    this.status = status;
    this.code = code;
    this.parameter = parameter;
  }
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken() {
  if (!tokenPrompt) {
    tokenPrompt = Promise.resolve().then(() => {
      const token = window.prompt("This Contrail API needs a token (kept for this browser tab only):");
      if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
      return Boolean(token);
    });
  }
  return tokenPrompt;
}

export function buildUrl(path, params) {
  const url = new URL(API_BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.filter((v) => v !== "").forEach((v) => url.searchParams.append(key, v));
    else url.searchParams.set(key, value);
  }
  return url.pathname + url.search;
}

async function request(path, params, as) {
  const url = buildUrl(path, params);
  for (let attempt = 0; attempt < 2; attempt++) {
    const sent = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(url, { headers: { Accept: as === "text" ? "text/plain" : "application/json", ...authHeaders(sent) } });
    if (response.status === 401 && attempt === 0) {
      // Sent before a token was entered (another request asked meanwhile): try again with it, ask nobody.
      if (sessionStorage.getItem(TOKEN_KEY) !== sent) continue;
      sessionStorage.removeItem(TOKEN_KEY);
      if (await askForToken()) { tokenPrompt = null; continue; }
    }
    if (!response.ok) {
      let code = "http_" + response.status, message = response.statusText || "request failed", parameter;
      try {
        const body = await response.json();
        if (body && body.error) ({ code = code, message = message, parameter } = body.error);
      } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, code, message, parameter);
    }
    return as === "text" ? response.text() : response.json();
  }
  throw new ApiError(401, "unauthorized", "a valid API token is required");
}

export const getJSON = (path, params) => request(path, params, "json");
export const getText = (path, params) => request(path, params, "text");

/** Services, whether the API answers a bare list or {services: [...]}, as [{name, ...}]. */
export async function listServices() {
  const body = await getJSON("/services");
  const list = Array.isArray(body) ? body : body.services || [];
  return list.map((s) => (typeof s === "string" ? { name: s } : s)).filter((s) => s && s.name);
}

export async function listOperations(service) {
  const body = await getJSON(`/services/${encodeURIComponent(service)}/operations`);
  const list = Array.isArray(body) ? body : body.operations || [];
  return list.map((o) => (typeof o === "string" ? o : o.name || o.operation)).filter(Boolean);
}

// ------------------------------------------------------------------ DOM helpers

/** Create an element; `text` goes in as textContent, attrs as attributes/properties. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of present(children)) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** Skip null / undefined / false: DOM append() and replaceChildren() would print them as "null". */
export function present(children) {
  return children.flat().filter((child) => child !== null && child !== undefined && child !== false);
}

/** replaceChildren() that leaves absent children out instead of printing them. */
export function fill(node, ...children) {
  node.replaceChildren(...present(children));
  return node;
}

/** append() that leaves absent children out instead of printing them. */
export function add(node, ...children) {
  node.append(...present(children));
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function showError(box, error) {
  if (!box) return;
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  const param = error.parameter ? ` (parameter: ${error.parameter})` : "";
  box.textContent = `${error.message || error}${param}`;
}

// ------------------------------------------------------------------ formatting

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms >= 60000) return (ms / 60000).toFixed(1) + " min";
  if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 1 : 2) + " s";
  if (ms >= 10) return ms.toFixed(1) + " ms";
  if (ms >= 0.9995) return ms.toFixed(2) + " ms";  // 0.9999 ms reads "1.00 ms", not "1000 µs"
  return (ms * 1000).toFixed(0) + " µs";
}

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function fmtPct(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  return (ratio * 100).toFixed(ratio > 0 && ratio < 0.01 ? 2 : 1) + " %";
}

export function fmtTime(iso, ns) {
  const date = iso ? new Date(iso) : new Date(Number(ns) / 1e6);
  if (Number.isNaN(date.getTime())) return "–";
  return date.toISOString().replace("T", " ").replace("Z", "").slice(0, 23);
}

export function traceHref(traceId, spanId) {
  return `/trace/${encodeURIComponent(traceId)}` + (spanId ? `?span=${encodeURIComponent(spanId)}` : "");
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#86bcb6", "#8cd17d"];
const serviceColours = new Map();
/** A stable colour per service name. */
export function serviceColour(name) {
  if (!serviceColours.has(name)) {
    let hash = 0;
    for (const ch of String(name)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    serviceColours.set(name, PALETTE[hash % PALETTE.length]);
  }
  return serviceColours.get(name);
}

/** Black or white, whichever reads better on a "#rrggbb" background (WCAG relative luminance). */
export function textOn(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(String(hex));
  if (!m) return "#fff";
  const [r, g, b] = m.slice(1).map((h) => { const c = parseInt(h, 16) / 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) ? "#111" : "#fff";
}

/** Text from span data for Plotly (legends, hover labels, axis ticks). Plotly reads a subset of HTML in
 * those strings (<a href>, <b>, <br>, <span style>), so markup in a service, operation or model name would
 * become links and styles; entities make Plotly show it as the literal text. */
export function plotText(value) {
  return String(value ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Plotly layout colours that follow the current theme. */
export function plotTheme() {
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--fg").trim() || "#222";
  const grid = css.getPropertyValue("--grid").trim() || "#ddd";
  return {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: fg, size: 12 },
    xaxis: { gridcolor: grid, zerolinecolor: grid },
    yaxis: { gridcolor: grid, zerolinecolor: grid },
    margin: { l: 55, r: 15, t: 10, b: 40 },
  };
}

/** Wait for the classic Plotly script (loaded with defer) to be ready. */
export function plotlyReady() {
  return new Promise((resolve, reject) => {
    if (window.Plotly) return resolve(window.Plotly);
    let tries = 0;
    const timer = setInterval(() => {
      if (window.Plotly) { clearInterval(timer); resolve(window.Plotly); }
      else if (++tries > 200) { clearInterval(timer); reject(new Error("the charting library did not load")); }
    }, 25);
  });
}

/** Run fn now and every `ms` while the checkbox is ticked; the box state lives in the URL as refresh=1. */
export function autoRefresh(checkbox, fn, ms = 10000) {
  let timer = null;
  const params = new URLSearchParams(window.location.search);
  checkbox.checked = params.get("refresh") === "1";
  const apply = () => {
    if (timer) clearInterval(timer);
    timer = checkbox.checked ? setInterval(fn, ms) : null;
  };
  checkbox.addEventListener("change", () => {
    const url = new URL(window.location.href);
    if (checkbox.checked) url.searchParams.set("refresh", "1"); else url.searchParams.delete("refresh");
    history.replaceState(null, "", url);
    apply();
  });
  apply();
}

// ------------------------------------------------------------------ bottleneck hints

/** GET /ai/bottlenecks: operations whose recent p95 or error rate departs from their own baseline. */
export async function loadBottlenecks(params = {}) {
  const body = await getJSON("/ai/bottlenecks", params);
  return { hints: body.bottlenecks || [], recentS: body.recent_s, baselineS: body.baseline_s };
}

/** The reasons of one hint as short texts: "p95 11.9 ms → 62.5 ms (×5.3)", "error rate 0.0 % → 50.0 %". */
export function hintReasons(hint) {
  const flags = hint.flags || (hint.flag ? [hint.flag] : []);
  const out = [];
  if (flags.includes("slower")) {
    out.push({ flag: "slower", text: `p95 ${fmtMs(hint.baseline_p95_ms)} → ${fmtMs(hint.recent_p95_ms)}` +
      (hint.p95_ratio ? ` (×${fmtNum(hint.p95_ratio, 1)})` : "") });
  }
  if (flags.includes("more_errors")) {
    out.push({ flag: "more_errors", text: `error rate ${fmtPct(hint.baseline_error_rate)} → ${fmtPct(hint.recent_error_rate)}` });
  }
  return out;
}

/** "15 min" / "24 h" for a window in seconds. */
export function fmtWindow(seconds) {
  if (!seconds) return "–";
  if (seconds % 86400 === 0 && seconds >= 2 * 86400) return `${seconds / 86400} days`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  return `${Math.round(seconds / 60)} min`;
}

/** The badge(s) of a hint, with the reason as text (not only colour), then its likely cause (every cause found
 * in the tooltip). */
export function hintBadges(hint) {
  const trend = hint.trend === "rising" ? " ↗" : hint.trend === "falling" ? " ↘" : "";
  return hintReasons(hint).map((r) => el("span", {
    class: `hint-flag hint-${r.flag}`, dataset: { flag: r.flag },
    title: `${r.flag === "slower" ? "Slower than its baseline" : "Fails more often than its baseline"}` +
      `: ${r.text}, ${fmtNum(hint.recent_calls)} recent calls vs ${fmtNum(hint.baseline_calls)} in the baseline` +
      (trend ? `, trend ${hint.trend}` : ""),
  }, el("strong", { text: r.flag === "slower" ? "slower" : "more errors" }), ` ${r.text}${trend}`))
    .concat(hint.likely_cause ? [el("span", { class: "hint-cause", title: (hint.causes || []).map((c) => c.text).join("\n") },
      el("span", { class: "muted", text: "likely: " }), hint.likely_cause)] : []);
}
