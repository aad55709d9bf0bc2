// Turns the API's flat span list into the tree every trace view draws from.
// Spans whose parent is not in the trace become extra roots (flagged), so nothing is hidden.

export function queueWaitMs(span) {
  const value = Number(span.attributes?.["celery.queue_wait_ms"]);
  return Number.isFinite(value) && value > 0 ? value : 0;
}

export function buildModel(trace) {
  const spans = trace.spans || [];
  const byId = new Map();
  const nodes = spans.map((span, order) => {
    const node = {
      span, order, id: span.span_id, children: [], parent: null, depth: 0,
      startMs: 0, endMs: 0, waitMs: queueWaitMs(span), missingParent: false, warnings: [],
      searchText: null,
    };
    byId.set(span.span_id, node);
    return node;
  });
  let base = Infinity, end = -Infinity;
  for (const node of nodes) {
    const start = Number(node.span.start_ns);
    if (start < base) base = start;
  }
  if (!Number.isFinite(base)) base = 0;
  for (const node of nodes) {
    const s = node.span;
    node.startMs = (Number(s.start_ns) - base) / 1e6;
    const duration = Number.isFinite(s.duration_ms) ? s.duration_ms : (Number(s.end_ns) - Number(s.start_ns)) / 1e6;
    node.durationMs = Math.max(0, duration);
    node.endMs = node.startMs + node.durationMs;
    if (node.endMs > end) end = node.endMs;
  }
  const roots = [];
  for (const node of nodes) {
    const parentId = node.span.parent_span_id;
    const parent = parentId ? byId.get(parentId) : null;
    if (parent && parent !== node) { node.parent = parent; parent.children.push(node); }
    else { roots.push(node); node.missingParent = Boolean(parentId); }
  }
  const byStart = (a, b) => a.startMs - b.startMs || a.order - b.order;
  roots.sort(byStart);
  // iterative depth-first pass: depth, preorder position, subtree sizes
  const preorder = [];
  const stack = roots.slice().reverse().map((n) => [n, 0]);
  let maxDepth = 0;
  while (stack.length) {
    const [node, depth] = stack.pop();
    node.depth = depth;
    if (depth > maxDepth) maxDepth = depth;
    node.children.sort(byStart);
    preorder.push(node);
    for (let i = node.children.length - 1; i >= 0; i--) stack.push([node.children[i], depth + 1]);
  }
  for (const warning of trace.warnings || []) {
    const node = warning.span_id ? byId.get(warning.span_id) : null;
    if (node) node.warnings.push(warning);
  }
  for (const node of nodes) {
    if (node.missingParent && !node.warnings.some((w) => w.code === "missing_parent")) {
      node.warnings.push({ code: "missing_parent", message: `parent ${node.span.parent_span_id} was never received` });
    }
  }
  return { trace, nodes, byId, roots, preorder, baseNs: base, totalMs: Math.max(end, 1e-3), maxDepth };
}

export function searchTextOf(node) {
  if (node.searchText === null) {
    const s = node.span;
    const attrs = Object.entries(s.attributes || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    node.searchText = [s.service, s.name, s.span_id, s.status_message || "", ...attrs].join("\n").toLowerCase();
  }
  return node.searchText;
}

/** Per service/operation totals for the statistics view. */
export function operationStats(model) {
  const rows = new Map();
  for (const node of model.nodes) {
    const key = `${node.span.service}\u0000${node.span.name}`;
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { service: node.span.service, operation: node.span.name, count: 0, total: 0, self: 0, max: 0, errors: 0 }));
    row.count += 1;
    row.total += node.durationMs;
    row.self += Number(node.span.self_time_ms ?? node.durationMs) || 0;
    row.max = Math.max(row.max, node.durationMs);
    if (node.span.status === "error") row.errors += 1;
  }
  for (const row of rows.values()) row.avg = row.total / row.count;
  return [...rows.values()];
}
