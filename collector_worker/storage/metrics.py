"""SQL of the application metrics tables (schema.metric_points, metric_histogram, metric_entries).

Writes are upserts that merge: several collectors may write the same series
and bucket at once. Counts and sums add, ``min``/``max`` keep the extremes,
``last`` keeps the value with the latest time. Reads are Core selects with
bound parameters.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..stats import saturating_add, upsert_rows
from . import schema

POINT_COLUMNS = ("resolution", "bucket", "series", "name", "service", "kind", "unit", "description", "attributes",
                 "count", "sum", "min", "max", "last", "last_ns", "exemplars")
BIN_COLUMNS = ("resolution", "bucket", "series", "bin", "count")
_sql: dict[tuple, str] = {}


def _point_upsert(dialect: str, paramstyle: str) -> str:
    key = (dialect, paramstyle)
    sql = _sql.get(key)
    if sql is None:
        mark = "?" if paramstyle == "qmark" else "%s"
        least, greatest = ("least", "greatest") if dialect == "postgresql" else ("min", "max")
        t = '"metric_points"'
        newer = f'excluded."last_ns" >= COALESCE({t}."last_ns", 0)'
        sets = [
            f'"count" = {saturating_add(t, "count")}',
            f'"sum" = {t}."sum" + excluded."sum"',
            # SQLite's min(x, NULL) is NULL, PostgreSQL's least ignores NULL: COALESCE gives both the same answer
            f'"min" = COALESCE({least}({t}."min", excluded."min"), {t}."min", excluded."min")',
            f'"max" = COALESCE({greatest}({t}."max", excluded."max"), {t}."max", excluded."max")',
            f'"last" = CASE WHEN {newer} THEN excluded."last" ELSE {t}."last" END',
            f'"last_ns" = CASE WHEN {newer} THEN excluded."last_ns" ELSE {t}."last_ns" END',
            f'"exemplars" = CASE WHEN excluded."exemplars" <> \'[]\' THEN excluded."exemplars" ELSE {t}."exemplars" END',
        ]
        sql = _sql[key] = (f"INSERT INTO {t} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in POINT_COLUMNS)}) "
                           f"VALUES ({', '.join([mark] * len(POINT_COLUMNS))}) "
                           f'ON CONFLICT ("resolution", "bucket", "series") DO UPDATE SET {", ".join(sets)}')
    return sql


def claim_entry(conn: Connection, entry_id: str, now_ns: int) -> bool:
    """Record that the stream entry ``entry_id`` is being stored; False if it was stored before."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    result = conn.exec_driver_sql(
        f'INSERT INTO "metric_entries" ("entry_id", "stored_ns") VALUES ({mark}, {mark}) '
        f'ON CONFLICT ("entry_id") DO NOTHING', (entry_id, now_ns))
    return bool(result.rowcount)


def write_points(conn: Connection, point_rows: list[tuple], bin_rows: list[tuple]) -> None:
    """Merge point rows (``POINT_COLUMNS`` order) and histogram bins (``BIN_COLUMNS``), sorted by key so
    concurrent writers lock rows in one order."""
    if point_rows:
        conn.exec_driver_sql(_point_upsert(conn.dialect.name, conn.dialect.paramstyle), sorted(point_rows,
                             key=lambda row: row[:3]))
    upsert_rows(conn, schema.metric_histogram, BIN_COLUMNS, sorted(bin_rows), ("count",))


def series_since(conn: Connection, since_bucket: int) -> Iterable[Any]:
    """Every series with an hourly row from ``since_bucket`` on: name, service, kind, unit, description,
    attributes."""
    p = schema.metric_points
    return conn.execute(
        select(p.c.name, p.c.service, p.c.kind, p.c.unit, p.c.description, p.c.attributes)
        .where(p.c.resolution == 3600, p.c.bucket >= since_bucket)
        .group_by(p.c.name, p.c.service, p.c.kind, p.c.unit, p.c.description, p.c.attributes)
        .order_by(p.c.name, p.c.service))


def point_rows(conn: Connection, name: str, resolution: int, first_bucket: int, end_bucket: int,
               service: str | None) -> Iterable[Any]:
    """The rows of metric ``name`` at ``resolution`` with ``first_bucket <= bucket < end_bucket``."""
    p = schema.metric_points
    query = (select(p.c.bucket, p.c.series, p.c.service, p.c.kind, p.c.unit, p.c.attributes, p.c.count, p.c.sum,
                    p.c.min, p.c.max, p.c.last, p.c.last_ns, p.c.exemplars)
             .where(p.c.name == name, p.c.resolution == resolution, p.c.bucket >= first_bucket,
                    p.c.bucket < end_bucket))
    if service is not None:
        query = query.where(p.c.service == service)
    return conn.execute(query.order_by(p.c.bucket))


def bin_rows(conn: Connection, name: str, resolution: int, first_bucket: int, end_bucket: int,
             service: str | None) -> Iterable[Any]:
    """The histogram bins of the rows :func:`point_rows` returns: bucket, series, bin, count."""
    p, h = schema.metric_points, schema.metric_histogram
    query = (select(h.c.bucket, h.c.series, h.c.bin, h.c.count)
             .join(p, (p.c.resolution == h.c.resolution) & (p.c.bucket == h.c.bucket) & (p.c.series == h.c.series))
             .where(p.c.name == name, h.c.resolution == resolution, h.c.bucket >= first_bucket,
                    h.c.bucket < end_bucket))
    if service is not None:
        query = query.where(p.c.service == service)
    return conn.execute(query)


def bucket_rows(conn: Connection, resolution: int, bucket: int, limit: int) -> list[Any]:
    """Up to ``limit`` rows of one bucket, every metric: series, name, service, kind, unit, description,
    attributes, count, sum, min, max, last."""
    p = schema.metric_points
    return conn.execute(
        select(p.c.series, p.c.name, p.c.service, p.c.kind, p.c.unit, p.c.description, p.c.attributes, p.c.count,
               p.c.sum, p.c.min, p.c.max, p.c.last)
        .where(p.c.resolution == resolution, p.c.bucket == bucket).order_by(p.c.name, p.c.series)
        .limit(limit)).all()


def bucket_bins(conn: Connection, resolution: int, bucket: int) -> Iterable[Any]:
    """The histogram bins of one bucket: series, bin, count."""
    h = schema.metric_histogram
    return conn.execute(select(h.c.series, h.c.bin, h.c.count)
                        .where(h.c.resolution == resolution, h.c.bucket == bucket))
