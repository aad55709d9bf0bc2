// The collector's health in the footer of every page: backlog, lag and dead letters.
import { getJSON, fmtNum, contrail } from "./api.js";

const dot = document.getElementById("status-dot");
const text = document.getElementById("status-text");

function describeLag(status) {
  if (status.lag_ms !== undefined && status.lag_ms !== null) return `${fmtNum(status.lag_ms / 1000, 1)} s`;
  if (status.lag_seconds !== undefined && status.lag_seconds !== null) return `${fmtNum(status.lag_seconds, 1)} s`;
  if (status.lag !== undefined && status.lag !== null) return fmtNum(status.lag);
  return "–";
}

async function refresh() {
  try {
    const status = await getJSON("/status");
    const s = status.stream || status.collector || status;
    if (s.error) throw new Error(s.error);
    const dead = Number(s.dead_letters ?? 0);
    const pending = Number(s.pending ?? 0);
    const parts = [
      `stream ${fmtNum(s.stream_length)}`,
      `pending ${fmtNum(pending)}`,
      `lag ${describeLag(s)}`,
      `dead letters ${fmtNum(dead)}`,
    ];
    if (s.consumers !== undefined) parts.push(`collectors ${fmtNum(Array.isArray(s.consumers) ? s.consumers.length : s.consumers)}`);
    const level = dead > 0 ? "bad" : pending > 1000 ? "warn" : "ok";
    dot.className = `dot dot-${level}`;
    text.textContent = `Collector: ${parts.join(" · ")}`;
    contrail.status = s;
  } catch (error) {
    dot.className = "dot dot-warn";
    text.textContent = `Collector status unavailable: ${error.message}`;
  }
}

refresh();
setInterval(refresh, 10000);
