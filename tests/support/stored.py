"""What tests read back from storage: every stored span, and the search postings with their names."""

from __future__ import annotations

from collector_worker.storage import block_store, schema
from collector_worker.storage.search_keys import names_of, tag_hash

__all__ = ["span_rows", "operation_rows", "tag_rows", "tag_hash"]


def span_rows(engine) -> list[dict]:
    """Every stored span (block spans, then staging rows)."""
    with engine.connect() as conn:
        return block_store.all_spans(conn)


def _trace_ids(conn) -> dict[int, str]:
    t = schema.traces
    return {int(no): trace_id for no, trace_id in conn.execute(t.select().with_only_columns(t.c.trace_no,
                                                                                            t.c.trace_id))}


def operation_rows(engine) -> list[dict]:
    """trace_operations as {trace_id, service, operation, error}."""
    o = schema.trace_operations
    with engine.connect() as conn:
        found = conn.execute(o.select()).mappings().all()
        names = names_of(conn, [r["service_id"] for r in found] + [r["operation_id"] for r in found])
        ids = _trace_ids(conn)
    return [{"trace_id": ids.get(int(r["trace_no"])), "service": names[r["service_id"]],
             "operation": names[r["operation_id"]], "error": bool(r["error"])} for r in found]


def tag_rows(engine) -> list[dict]:
    """trace_tags and trace_tag_numbers as {trace_id, key, value_hash} and {trace_id, key, value_num}."""
    g, n = schema.trace_tags, schema.trace_tag_numbers
    with engine.connect() as conn:
        tags = conn.execute(g.select()).mappings().all()
        numbers = conn.execute(n.select()).mappings().all()
        names = names_of(conn, [r["key_id"] for r in tags] + [r["key_id"] for r in numbers])
        ids = _trace_ids(conn)
    return [{"trace_id": ids.get(int(r["trace_no"])), "key": names[r["key_id"]], "value_hash": r["value_hash"]}
            for r in tags] + [{"trace_id": ids.get(int(r["trace_no"])), "key": names[r["key_id"]],
                               "value_num": r["value_num"]} for r in numbers]
