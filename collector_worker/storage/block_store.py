"""Reading and deleting stored spans: trace blocks plus staging rows, for every reader of spans.

Every reader of spans (the trace API, exports, AI pages, the CLI, tests) goes
through :func:`trace_spans`, which yields a trace's block spans merged with
its staging rows (spans not finalized yet, or arrived after the last
finalization). The finalizer deletes through the functions here, so the exact posting keys a block
recorded are what gets removed (retention removes whole days: partitions.py).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable

from sqlalchemy import select, union_all
from sqlalchemy.engine import Connection

from . import block_dictionary, blocks, partitions, periods, schema, search_keys, staging
from .sql_text import chunks, in_list as _in, mark as _mark

_CHUNK = 500


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    return chunks(items, size)


def read_blocks(conn: Connection, trace_nos: list[int]) -> dict[int, bytes]:
    """The block of each trace number that has one (in whichever part holds it)."""
    out: dict[int, bytes] = {}
    for chunk in _chunks(sorted(set(trace_nos))):
        found = periods.union(conn, schema.trace_blocks, lambda b: [b.c.trace_no, b.c.data],
                              lambda b: [b.c.trace_no.in_(chunk)], days=_days_of(chunk))
        for no, data in conn.execute(found):
            out[int(no)] = bytes(data)
    block_dictionary.load(conn, out.values())
    return out


def _days_of(trace_nos: list[int]) -> tuple[int, int]:
    return partitions.day_of_no(min(trace_nos)), partitions.day_of_no(max(trace_nos))


def trace_rows(conn: Connection, trace_ids: list[str], columns: Iterable[str] | None = None) -> dict[str, Any]:
    """The ``traces`` row (a mapping of ``columns``, all by default) of each finalized trace among
    ``trace_ids``, from whichever part holds it."""
    names = list(columns) if columns is not None else [c.name for c in schema.traces.columns]
    out: dict[str, Any] = {}
    for chunk in _chunks(sorted(set(trace_ids))):
        found = periods.union(conn, schema.traces, lambda t: [t.c[n] for n in names],
                              lambda t: [t.c.trace_id.in_(chunk)])
        for row in conn.execute(found).mappings():
            out[row["trace_id"]] = row
    return out


def trace_numbers(conn: Connection, trace_ids: list[str]) -> dict[str, int]:
    """The trace number of each finalized trace among ``trace_ids``."""
    return {t: int(row["trace_no"]) for t, row in trace_rows(conn, trace_ids, ("trace_id", "trace_no")).items()}


def staged_spans(conn: Connection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Staged spans of ``trace_ids`` as row dicts (see ``staging.as_row``), by trace."""
    return staging.rows_of(conn, trace_ids)


def trace_blocks(conn: Connection, trace_ids: list[str]) -> dict[str, bytes]:
    """The block of each finalized trace among ``trace_ids``: summary and block joined in one statement
    (per part), so a re-finalization committing meanwhile (new number, old block deleted) is seen whole or
    not at all."""
    out: dict[str, bytes] = {}
    for chunk in _chunks(sorted(set(trace_ids))):
        arms = []
        for part in periods.parts(conn):
            t, b = part.table(schema.traces), part.table(schema.trace_blocks)
            visible = part.visible(t.c.trace_no)
            arms.append(select(t.c.trace_id, b.c.data).join_from(t, b, b.c.trace_no == t.c.trace_no)
                        .where(t.c.trace_id.in_(chunk), *([visible] if visible is not None else [])))
        found = arms[0] if len(arms) == 1 else union_all(*arms)
        out.update((trace_id, bytes(data)) for trace_id, data in conn.execute(found))
    block_dictionary.load(conn, out.values())
    return out


def trace_parts(conn: Connection, trace_ids: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bytes]]:
    """The staging rows and the block of each of ``trace_ids`` (for readers that decode blocks their own way).

    Staging rows are read first: a finalizer moving spans into a block between the two reads (each
    statement sees its own snapshot on PostgreSQL) shows them in both, never in neither.
    """
    staged = staged_spans(conn, trace_ids)
    return staged, trace_blocks(conn, trace_ids)


def trace_spans(conn: Connection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every stored span of ``trace_ids``: block spans (assembled) merged with staging rows, by trace.

    A staging row whose span id is already in the block (a redelivery) is left out; a staging row of a
    span not in the block has ``depth`` None (not assembled yet). Traces with no span are absent.
    """
    staged, found = trace_parts(conn, trace_ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for trace_id in trace_ids:
        spans = merged(found.get(trace_id), staged.get(trace_id, ()))
        if spans:
            out[trace_id] = spans
    return out


def merged(data: bytes | None, staged: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trace's spans from its block (if any) and its staging rows (a span in the block keeps that copy)."""
    return blocks.merge(blocks.decode(data), staged) if data is not None else list(staged)


def stored_span_ids(conn: Connection, trace_ids: list[str]) -> dict[str, set[str]]:
    """Span ids already in the blocks of ``trace_ids`` (ingest leaves redelivered ones out)."""
    numbers = trace_numbers(conn, trace_ids)
    if not numbers:
        return {}
    by_no = {no: t for t, no in numbers.items()}
    return {by_no[no]: blocks.span_ids(data) for no, data in read_blocks(conn, list(by_no)).items()}


def postings_of(conn: Connection, spans: list[dict[str, Any]]) -> list[list] | None:
    """The search postings a block's trace wrote, derived from its spans as the finalizer derived them."""
    from collector_worker.assembler import assemble  # assembly is pure; storage only borrows it here

    a = assemble(spans)
    tags = search_keys.search_tags(a)
    try:
        return search_keys.postings(a.operations, tags,
                                    search_keys.lookup(conn, search_keys.names_in(a.operations, tags)))
    except KeyError:  # a name never stored: that trace never wrote postings with it
        return None


def insert_postings(conn: Connection, numbered: list[tuple[int, list[list]]]) -> None:
    """Write the search postings of new trace numbers, ``(trace_no, [ops, tags, numbers])`` each.

    SQLite: a row per posting in ``trace_operations``, ``trace_tags`` and ``trace_tag_numbers``, in key order
    (each index is filled front to back, and concurrent writers lock alike). PostgreSQL: one
    ``trace_search_keys`` row of arrays per trace, and the numbers.
    """
    if conn.dialect.name == "postgresql":
        nums = sorted((k, n, no) for no, posted in numbered for k, n in posted[2])
        rows = [(no, *search_keys.search_arrays(posted)) for no, posted in sorted(numbered)]
        if rows:
            conn.exec_driver_sql(f"INSERT INTO {schema.trace_search_keys.name} (trace_no, tag_keys, op_keys, error_ops) "
                                 f"VALUES (%s, %s, %s, %s)", rows)
        _insert(conn, schema.trace_tag_numbers, ("key_id", "value_num", "trace_no"), nums)
        return
    ops, tags, nums = [], [], []
    for no, (posted_ops, posted_tags, posted_nums) in numbered:  # comprehensions: no generator per trace
        ops += [(s, no, o, 1 if e else 0) for s, o, e in posted_ops]  # an int binds several times faster than a bool
        tags += [(k, h, no) for k, h in posted_tags]
        if posted_nums:
            nums += [(k, n, no) for k, n in posted_nums]
    ops.sort()
    tags.sort()
    nums.sort()
    _insert(conn, schema.trace_operations, ("service_id", "trace_no", "operation_id", "error"), ops)
    _insert(conn, schema.trace_tags, ("key_id", "value_hash", "trace_no"), tags)
    _insert(conn, schema.trace_tag_numbers, ("key_id", "value_num", "trace_no"), nums)


_MAX_SQLITE_PARAMS = 32766


def _insert(conn: Connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Many rows: multi-row INSERTs on SQLite (one statement per few thousand rows releases the interpreter
    lock once, not per row), executemany on PostgreSQL."""
    if not rows:
        return
    names = ",".join(f'"{c}"' for c in columns)
    m = _mark(conn)
    row = "(" + ",".join([m] * len(columns)) + ")"
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES {row}", rows)
        return
    step = _MAX_SQLITE_PARAMS // len(columns)
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES " + ",".join([row] * len(chunk)),
                             tuple(itertools.chain.from_iterable(chunk)))


def delete_finalized(conn: Connection, traces: list[tuple[int, Any]]) -> None:
    """Delete the blocks and search postings of ``(trace_no, postings)`` (postings from :func:`postings_of`).

    The ``traces`` rows themselves are the caller's to delete. PostgreSQL's array row goes by trace number.
    """
    if not traces:
        return
    m = _mark(conn)
    postgres = conn.dialect.name == "postgresql"
    ops, tags, nums = [], [], []
    for no, posted in traces:
        if not posted:
            continue
        ops.extend((s, no, o) for s, o, _ in posted[0])
        tags.extend((k, h, no) for k, h in posted[1])
        nums.extend((k, n, no) for k, n in posted[2])
    plan = [(schema.trace_tag_numbers, ("key_id", "value_num", "trace_no"), nums)]
    if not postgres:
        plan += [(schema.trace_operations, ("service_id", "trace_no", "operation_id"), ops),
                 (schema.trace_tags, ("key_id", "value_hash", "trace_no"), tags)]
    for table, columns, rows in plan:
        if rows:
            where = " AND ".join(f"{c} = {m}" for c in columns)
            conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE {where}", sorted(rows))
    for chunk in _chunks(sorted(no for no, _ in traces)):
        tables = (schema.trace_blocks, schema.trace_search_keys) if postgres else (schema.trace_blocks,)
        for table in tables:
            conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE trace_no IN {_in(conn, len(chunk))}", tuple(chunk))


def delete_staged(conn: Connection, keys: list[tuple[str, str]]) -> None:
    """Delete staged rows by exact (trace_id, batch_id) (the rows a finalizer merged into blocks)."""
    staging.delete(conn, keys)


def all_spans(conn: Connection) -> list[dict[str, Any]]:
    """Every stored span once: each block's spans, then the staging rows of spans in no block.

    Staging first, then blocks (see :func:`trace_spans`). For checks and small exports, not for search.
    """
    staged = staging.all_rows(conn)
    every = periods.union(conn, schema.trace_blocks, lambda b: [b.c.trace_no, b.c.data]).subquery()
    found = [bytes(data) for (data,) in conn.execute(select(every.c.data).order_by(every.c.trace_no))]
    block_dictionary.load(conn, found)
    out: list[dict[str, Any]] = []
    for data in found:
        out.extend(blocks.decode(data))
    in_blocks = {(s["trace_id"], s["span_id"]) for s in out}
    out.extend(s for s in staged if (s["trace_id"], s["span_id"]) not in in_blocks)
    return out
