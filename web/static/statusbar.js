// The collector's health in the footer of every page: backlog, lag, dead letters, and spans the
// tracing processes reported dropping (they never reach the stream, so only their reports tell).
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
    const tracers = status.tracers && !status.tracers.error ? status.tracers : null;
    const dropped = tracers ? Number(tracers.spans_dropped ?? 0) : 0;
    if (tracers) {
      parts.push(`tracers ${fmtNum(tracers.instances)}`);
      if (dropped > 0) parts.push(`spans dropped by tracers ${fmtNum(dropped)}`);
      text.title = `Reported by ${fmtNum(tracers.instances)} tracing processes: ${fmtNum(tracers.spans_exported)} spans exported, ` +
        `${fmtNum(tracers.spans_sampled_out)} sampled out, ${fmtNum(dropped)} dropped (queue or spool full).`;
    }
    const collectors = status.collectors && !status.collectors.error ? status.collectors : null;
    if (collectors && collectors.traces_tail_dropped > 0) {
      // dropped on purpose by tail sampling: shown so an absent trace is explained, not a warning
      parts.push(`tail-sampled out ${fmtNum(collectors.traces_tail_dropped)} traces`);
    }
    const level = dead > 0 ? "bad" : pending > 1000 || dropped > 0 ? "warn" : "ok";
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
