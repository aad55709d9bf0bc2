"""What tests read back from storage: every stored span, and the search postings with their names.

On PostgreSQL the tag and operation postings are arrays of packed keys (``trace_search_keys``), so a
tag's value is known by the low 40 bits of its hash: ``tag_rows`` gives those bits on both backends and
``tag_hash`` here gives the same bits of a value's hash, so tests compare alike everywhere.
"""

from __future__ import annotations

from collector_worker.storage import block_store, periods, schema, search_keys
from collector_worker.storage.search_keys import names_of

__all__ = ["span_rows", "operation_rows", "tag_rows", "tag_hash"]


def tag_hash(value: str) -> int:
    """The bits of a value's hash both backends keep in a tag posting."""
    return search_keys.tag_hash(value) & search_keys.TAG_VALUE_MASK


def span_rows(engine) -> list[dict]:
    """Every stored span (block spans, then staging rows)."""
    with engine.connect() as conn:
        return block_store.all_spans(conn)


def _trace_ids(conn) -> dict[int, str]:
    every = periods.union(conn, schema.traces, lambda t: [t.c.trace_no, t.c.trace_id])
    return {int(no): trace_id for no, trace_id in conn.execute(every)}


def _every(conn, table, columns: list[str]) -> list[dict]:
    """The rows of a posting table readers see (SQLite: in the main file and the period files)."""
    return [dict(r) for r in conn.execute(periods.union(conn, table, lambda t: [t.c[c] for c in columns]))
            .mappings()]


def _unpacked(conn) -> tuple[list[dict], list[dict]]:
    """PostgreSQL's arrays as the rows SQLite's posting tables hold (operations, tags)."""
    ops, tags = [], []
    k = schema.trace_search_keys
    for no, tag_keys, op_keys, error_ops in conn.execute(k.select()):
        errors = set(error_ops)
        for key in op_keys:
            service, operation = key >> search_keys.OP_SHIFT, key & ((1 << search_keys.OP_SHIFT) - 1)
            if service and operation:
                ops.append({"service_id": service, "operation_id": operation, "trace_no": no, "error": key in errors})
        for key in tag_keys:
            unsigned = key & ((1 << 64) - 1)
            value = unsigned & search_keys.TAG_VALUE_MASK
            if value:  # not the key's marker
                tags.append({"key_id": unsigned >> search_keys.TAG_VALUE_BITS, "value_hash": value, "trace_no": no})
    return ops, tags


def operation_rows(engine) -> list[dict]:
    """trace_operations as {trace_id, service, operation, error}."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = _unpacked(conn)[0]
        else:
            found = _every(conn, schema.trace_operations, ["service_id", "operation_id", "trace_no", "error"])
        names = names_of(conn, [r["service_id"] for r in found] + [r["operation_id"] for r in found])
        ids = _trace_ids(conn)
    return [{"trace_id": ids.get(int(r["trace_no"])), "service": names[r["service_id"]],
             "operation": names[r["operation_id"]], "error": bool(r["error"])} for r in found]


def tag_rows(engine) -> list[dict]:
    """Tag postings as {trace_id, key, value_hash} (the hash's low 40 bits) and numbers as
    {trace_id, key, value_num}."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            tags = _unpacked(conn)[1]
        else:
            tags = [{**r, "value_hash": r["value_hash"] & search_keys.TAG_VALUE_MASK}
                    for r in _every(conn, schema.trace_tags, ["key_id", "value_hash", "trace_no"])]
        numbers = _every(conn, schema.trace_tag_numbers, ["key_id", "value_num", "trace_no"])
        names = names_of(conn, [r["key_id"] for r in tags] + [r["key_id"] for r in numbers])
        ids = _trace_ids(conn)
    return [{"trace_id": ids.get(int(r["trace_no"])), "key": names[r["key_id"]], "value_hash": r["value_hash"]}
            for r in tags] + [{"trace_id": ids.get(int(r["trace_no"])), "key": names[r["key_id"]],
                               "value_num": r["value_num"]} for r in numbers]
