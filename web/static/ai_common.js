// Shared by the AI session, user and LLM call pages: links between them and money with its caveats.
import { el } from "./api.js";

const UNPRICED = "no price for this model in the price table: add it to a JSON price table named by CONTRAIL_PRICE_TABLE (docs/ai.md, Price table)";

export const sessionHref = (id) => `/ai/sessions/${encodeURIComponent(id)}`;
export const userHref = (id) => `/ai/users/${encodeURIComponent(id)}`;
export const llmHref = (traceId, spanId) => `/ai/llm/${encodeURIComponent(traceId)}/${encodeURIComponent(spanId)}`;

/** "$0.0123"; "unpriced" when nothing had a price; "$0.0123 + unpriced" when some models had none. */
export function moneyText(cost, unpricedModels = [], priced = true) {
  const value = Number(cost || 0);
  const money = `$${value.toFixed(value && value < 0.01 ? 6 : 4)}`;  // a single call often costs fractions of a cent
  if (!priced) return { text: "unpriced", title: UNPRICED };
  if (!unpricedModels.length) return { text: money };
  if (!Number(cost)) return { text: "unpriced", title: `${unpricedModels.join(", ")}: ${UNPRICED}` };
  return { text: `${money} + unpriced`, title: `${unpricedModels.join(", ")}: ${UNPRICED}` };
}

/** A <dt>/<dd> pair for a .summary list; `value` may be a node. */
export function fact(label, value, attrs = {}) {
  return [el("dt", { text: label }), el("dd", attrs, value instanceof Node ? value : String(value ?? "–"))];
}

export function idLink(href, text) {
  return el("a", { href, text });
}
