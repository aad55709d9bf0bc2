"""Text distiller: a trace's call tree as compact text for a language model.

One line per span -- ``name [service] total 12.3ms self 4.1ms key=value`` --
indented by depth, with ``*`` marking the critical path. Siblings with
similar names fold into one line (``× 48 similar, 2.10s total (p50 40.0ms,
max 90.0ms)``), critical or not, with failing members and the slowest shown
beneath (see span_tree). Errors are gathered at the end with their exception types and
messages. A size budget is honoured by degrading in steps, least useful detail
first: attributes off the critical path, then deep subtrees off the critical
path, then all off-path detail; the output always says what was elided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracer.units import format_duration_ms

from .span_tree import FOLD_MIN, Node, Run, build, duration_ms, fold, walk

DEFAULT_BUDGET_CHARS = 16000  # about 4,000 tokens
CHARS_PER_TOKEN = 4
MAX_ATTRS = 5
MAX_ATTR_VALUE = 60
MAX_NAME = 120

# Attributes worth a model's attention, most telling first.
KEY_ATTRIBUTES = (
    "http.request.method", "http.method", "http.route", "url.path", "http.target",
    "http.response.status_code", "http.status_code", "rpc.method", "peer.service", "server.address",
    "db.system", "db.operation", "db.query.text", "db.statement", "messaging.destination.name",
    "celery.task_name", "celery.state", "celery.retries",
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.tool.name", "gen_ai.agent.name",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "contrail.ai.phase", "contrail.ai.purpose",
    "contrail.ai.cache_hit", "error.type", "exception.type",
)


@dataclass
class _Level:
    """How much detail one rendering attempt keeps."""

    attrs: str = "all"  # all | critical | none
    max_depth: int | None = None  # off-path spans deeper than this are elided
    offpath: bool = True  # False: off-path children of critical spans become one summary line
    fold_min: int = FOLD_MIN
    max_errors: int = 20
    name_limit: int = MAX_NAME
    examples: bool = True  # under a folded line, show the slowest member's subtree
    max_offpath: int | None = None  # off-path children kept per critical span (slowest and failing first)


@dataclass
class _Tally:
    elided_spans: int = 0
    elided_subtrees: int = 0
    folded_spans: int = 0


def _clip(value: Any, limit: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def _self_ms(node: Node) -> float:
    if node.span.get("self_time_ms") is not None:
        return float(node.span["self_time_ms"])
    intervals = sorted((c.span.get("start_ns") or 0, c.span.get("end_ns") or 0) for c in node.children)
    start, end = node.span.get("start_ns") or 0, node.span.get("end_ns") or 0
    covered, cursor = 0, start
    for a, b in intervals:
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return max(0.0, (end - start - covered) / 1e6)


def _attrs(span: dict[str, Any]) -> str:
    attributes = span.get("attributes") or {}
    parts = []
    for key in KEY_ATTRIBUTES:
        if key in attributes and attributes[key] not in (None, ""):
            parts.append(f"{key}={_clip(attributes[key], MAX_ATTR_VALUE)}")
            if len(parts) >= MAX_ATTRS:
                break
    return " ".join(parts)


def _line(node: Node, indent: str, level: _Level) -> str:
    span = node.span
    mark = "*" if node.critical else " "
    text = (f"{indent}{mark} {_clip(span.get('name') or '?', level.name_limit)} [{span.get('service') or '?'}]"
            f" total {format_duration_ms(duration_ms(span))} self {format_duration_ms(_self_ms(node))}")
    if span.get("status") == "error":
        text += " ERROR"
    if level.attrs == "all" or (level.attrs == "critical" and node.critical):
        attrs = _attrs(span)
        if attrs:
            text += " " + attrs
    return text


def _fold_line(run: Run, indent: str, level: _Level) -> str:
    mark = "*" if run.critical else " "
    services = run.services
    where = services[0] if len(services) == 1 else f"{services[0]} +{len(services) - 1} services"
    text = (f"{indent}{mark} {_clip(run.name, level.name_limit)} [{where}]"
            f" × {len(run.members)} similar, {format_duration_ms(run.total_ms)} total"
            f" (p50 {format_duration_ms(run.p50_ms)}, max {format_duration_ms(run.max_ms)})")
    if run.failures:
        text += f" {run.failures} ERROR"
    if run.spans_below:
        text += f" +{run.spans_below} spans below"
    if run.errors_below:
        text += f" ({run.errors_below} ERROR below)"
    return text


@dataclass
class _Shown:
    """A member of a folded run drawn on its own, with why (failed, slowest)."""

    node: Node
    reason: str
    subtree: bool


def _render_tree(roots: list[Node], level: _Level, tally: _Tally) -> list[str]:
    lines: list[str] = []
    stack: list[tuple[Any, int]] = [(root, 0) for root in reversed(roots)]
    while stack:
        item, depth = stack.pop()
        indent = "  " * depth
        if isinstance(item, str):
            lines.append(item)
            continue
        if isinstance(item, Run):
            lines.append(_fold_line(item, indent, level))
            tally.folded_spans += sum(n.size for n in item.members)
            # failing members always, the slowest when there is room for examples; subtrees only then
            shown = [(n, why) for n, why in item.shown() if level.examples or n.errors]
            stack.extend((_Shown(n, why, level.examples), depth + 1) for n, why in reversed(shown))
            continue
        note = ""
        if isinstance(item, _Shown):
            node, note = item.node, f" ({item.reason})"
            if not item.subtree and node.size > 1:
                lines.append(_line(node, indent, level) + note + f" (+{node.size - 1} spans below)")
                continue
        else:
            node = item
        children = node.children
        if not node.critical and level.max_depth is not None and depth >= level.max_depth and children:
            below = node.size - 1
            lines.append(_line(node, indent, level) + note + f" (+{below} spans elided)")
            tally.elided_spans += below
            tally.elided_subtrees += 1
            continue
        lines.append(_line(node, indent, level) + note)
        summary = None
        if node.critical and (not level.offpath or level.max_offpath is not None):
            offpath = [c for c in children if not c.critical]
            keep_n = level.max_offpath if level.offpath else 0
            ranked = sorted(offpath, key=lambda n: (n.errors > 0, duration_ms(n.span)), reverse=True)
            kept_ids = {id(n) for n in ranked[:keep_n]}
            dropped = [c for c in offpath if id(c) not in kept_ids]
            children = [c for c in children if c.critical or id(c) in kept_ids]
            if dropped:
                spans = sum(c.size for c in dropped)
                total = sum(duration_ms(c.span) for c in dropped)
                errors = sum(c.errors for c in dropped)
                more = "other " if kept_ids else ""
                summary = (f"{'  ' * (depth + 1)}… {len(dropped)} {more}off-path children ({spans} spans,"
                           f" {format_duration_ms(total)} summed){f', {errors} ERROR' if errors else ''}")
                tally.elided_spans += spans
                tally.elided_subtrees += len(dropped)
        elif not node.critical and not level.offpath:
            if node.size > 1:  # an extra root off the critical path: its subtree is summarised away
                lines[-1] += f" (+{node.size - 1} spans elided)"
                tally.elided_spans += node.size - 1
                tally.elided_subtrees += 1
            continue
        pending: list[tuple[Any, int]] = [(item, depth + 1) for item in fold(children, level.fold_min)]
        if summary:
            pending.append((summary, depth + 1))
        stack.extend(reversed(pending))
    return lines


def _errors(roots: list[Node], origin_ns: int, level: _Level) -> list[str]:
    """One line per distinct error (same span name, type and message counted together)."""
    seen: dict[tuple, list] = {}
    for node in walk(roots):
        span = node.span
        exc_types, messages = [], []
        for event in span.get("events") or []:
            if event.get("name") == "exception":
                attrs = event.get("attributes") or {}
                exc_types.append(str(attrs.get("exception.type") or ""))
                messages.append(str(attrs.get("exception.message") or ""))
        if span.get("status") != "error" and not exc_types:
            continue
        exc_type = next((t for t in exc_types if t), "") or str((span.get("attributes") or {}).get("error.type") or "")
        message = span.get("status_message") or next((m for m in messages if m), "") or "error"
        key = (span.get("name"), span.get("service"), exc_type, message)
        if key in seen:
            seen[key][0] += 1
        else:
            offset = ((span.get("start_ns") or origin_ns) - origin_ns) / 1e6
            seen[key] = [1, offset]
    if not seen:
        return []
    lines = [f"errors ({sum(v[0] for v in seen.values())}):"]
    for index, ((name, service, exc_type, message), (count, offset)) in enumerate(seen.items()):
        if index >= level.max_errors:
            lines.append(f"  … {len(seen) - level.max_errors} more distinct errors")
            break
        message = _without_type_prefix(str(message), exc_type)
        kind = f"{exc_type}: " if exc_type and not message.startswith(exc_type) else ""
        times = f" × {count}" if count > 1 else ""
        lines.append(f"  - {_clip(name, level.name_limit)} [{service}] at +{format_duration_ms(offset)}{times}: "
                     f"{kind}{_clip(message, 200)}")
    return lines


def _without_type_prefix(message: str, exc_type: str) -> str:
    """``Retry: Retry in 2s`` → ``Retry in 2s`` when the type is ``celery.exceptions.Retry``.

    A span's status message is ``<short type name>: <text>`` (what OpenTelemetry
    records); the line already names the full type, so it is not said twice.
    """
    short = exc_type.rsplit(".", 1)[-1]
    if short and short != exc_type and message.startswith(f"{short}: "):
        return message[len(short) + 2:]
    return message


def _header(trace: dict, spans: list[dict]) -> list[str]:
    summary = trace.get("summary") or {}
    services = summary.get("services") or sorted({s.get("service") or "?" for s in spans})
    duration = summary.get("duration_ms")
    if duration is None and spans:
        duration = (max(s.get("end_ns") or 0 for s in spans) - min(s.get("start_ns") or 0 for s in spans)) / 1e6
    error_count = sum(1 for s in spans if s.get("status") == "error")
    head = (f"trace {trace.get('trace_id', '?')} · {format_duration_ms(duration or 0)} · {len(spans)} spans"
            f" · {len(services)} services ({', '.join(services[:8])}{', …' if len(services) > 8 else ''})"
            f" · {error_count} error{'' if error_count == 1 else 's'}")
    lines = [head]
    if summary.get("incomplete"):
        lines.append("incomplete: some parent spans never arrived (shown as extra roots)")
    for warning in (trace.get("warnings") or [])[:3]:
        lines.append(f"warning: {_clip(warning.get('message', ''), 160)}")
    lines.append("legend: * critical path · total/self time · × N similar = folded siblings")
    return lines


def _levels(max_depth: int) -> list[_Level]:
    levels = [_Level(), _Level(attrs="critical")]
    depth = max_depth - 1
    while depth >= 1:
        levels.append(_Level(attrs="critical", max_depth=depth, max_errors=15, examples=depth > 2))
        depth = depth - 1 if depth <= 4 else depth // 2
    levels.append(_Level(attrs="none", max_depth=1, fold_min=2, max_errors=10, name_limit=80, examples=False))
    for keep in (40, 20, 10, 5, 2):
        levels.append(_Level(attrs="none", max_depth=1, fold_min=2, max_errors=8, name_limit=80, examples=False,
                             max_offpath=keep))
    levels.append(_Level(attrs="none", offpath=False, fold_min=2, max_errors=5, name_limit=60, examples=False))
    levels.append(_Level(attrs="none", offpath=False, fold_min=2, max_errors=2, name_limit=40, examples=False))
    return levels


def render(trace: dict, budget: int | None = None, budget_unit: str = "chars") -> str:
    """The distilled text of ``trace`` within ``budget`` (chars, or tokens ≈ chars/4)."""
    limit = int(budget) if budget else DEFAULT_BUDGET_CHARS // (CHARS_PER_TOKEN if budget_unit == "tokens" else 1)
    if budget_unit == "tokens":
        limit *= CHARS_PER_TOKEN
    spans = trace.get("spans") or []
    roots = build(spans)
    origin = min((s.get("start_ns") or 0 for s in spans), default=0)
    header = _header(trace, spans)
    max_depth = max((s.get("depth") or 0 for s in spans), default=0) + 1
    text = ""
    for level in _levels(max_depth):
        tally = _Tally()
        body = _render_tree(roots, level, tally)
        text = _compose(header, body, _errors(roots, origin, level), tally, limit, budget_unit)
        if len(text) <= limit:
            return text
    return _cut(text, header, roots, origin, limit, budget_unit)


def _compose(header: list[str], body: list[str], errors: list[str], tally: _Tally, limit: int, unit: str) -> str:
    lines = list(header) + body
    if tally.elided_spans:
        budget = f"{limit // CHARS_PER_TOKEN} tokens" if unit == "tokens" else f"{limit} chars"
        lines.append(f"elided: {tally.elided_spans} spans in {tally.elided_subtrees} subtrees off the critical path"
                     f" (to fit {budget})")
    lines.extend(errors)
    return "\n".join(lines) + "\n"


def _cut(text: str, header: list[str], roots: list[Node], origin: int, limit: int, unit: str) -> str:
    """Last resort: keep the first header line, the head of the tree and the errors; drop the middle.

    The header (trace id, duration, span and error counts) comes first whatever
    the budget; the errors get what remains after it and the note, the tree
    what the errors leave.
    """
    level = _Level(attrs="none", offpath=False, fold_min=2, max_errors=2, name_limit=40, examples=False)
    note = "… output cut to fit the budget; request a larger budget for more"
    head = header[0] if header else ""
    room = limit - len(head) - len(note) - 3
    errors = "\n".join(_errors(roots, origin, level))
    if len(errors) > max(room, 0):
        errors = errors[:max(room - 1, 0)].rstrip() + "…" if room > 1 else ""
    keep: list[str] = [head] if head else []
    used = len(head) + 1 + len(note) + 1 + (len(errors) + 1 if errors else 0)
    for line in text.splitlines()[1 if head else 0:]:
        if line.startswith("errors ("):
            break
        if used + len(line) + 1 > limit:
            break
        keep.append(line)
        used += len(line) + 1
    out = "\n".join(keep + [note] + ([errors] if errors else [])) + "\n"
    return out[:limit]
