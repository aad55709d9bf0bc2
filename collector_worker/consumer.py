"""The collector's stream loop: read batches, store them idempotently, acknowledge after commit.

Delivery is at least once: an entry is acknowledged (XACK) only after the
transaction holding its spans has committed, and storage ignores spans it
already has, so an entry read twice changes nothing. What cannot be read goes
to the dead-letter stream with its reason, and is acknowledged only once the
dead letter is written. Entries left pending by a collector that died are
claimed by another (XAUTOCLAIM) after ``claim_idle``; an entry delivered more
than ``max_deliveries`` times is dead-lettered instead of tried again. The
stream is trimmed only below the oldest entry some consumer group has not yet
acknowledged, so nothing unread is ever trimmed.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracer import shards
from tracer.codec import REASON_CHARS, CodecError, decode_entry, encode_rejected
from tracer.limits import SpanLimits
from tracer.metrics_codec import decode_metrics, is_metrics_entry
from tracer.profile_codec import is_profiles_entry
from tracer.redis_client import connect, is_cluster

from . import finalizer
from . import forwarding, metrics_store, pricing, profile_store, reports, sampling, validation, write_pipeline
from .recent_spans import RecentSpans
from .settings import CollectorSettings
from .storage.engine import open_engine
from .storage.writer import dropped_over_limit, prepare_spans, store_spans, take_write_lock, write_lock

log = logging.getLogger("contrail.collector")

FINALIZE_EVERY = 0.5  # seconds the finalizer thread waits after a pass that found nothing quiet
FINALIZE_PARTIAL_WAIT = 0.1  # ... after a pass that found fewer traces than a full batch
RECENT_SPANS = 200_000  # spans kept in memory for the finalizer at most (see recent_spans.RecentSpans)
# Garbage-collector thresholds while a collector runs. Every batch allocates hundreds of thousands of
# short-lived containers (decoded spans, rows) that reference counting frees; with Python's default
# (700, 10, 10) the cyclic collector ran thousands of times per 100k spans (the older generations'
# passes walking every span held for the finalizer) and took about a sixth of the collector's time.
GC_THRESHOLDS = (200_000, 20, 10)
# After every stored batch the objects alive (mostly the spans held for the finalizer) are moved out of the
# cyclic collector's generations (gc.freeze), so its passes no longer walk them again and again; reference
# counting still frees them. Every GC_UNFREEZE_EVERY seconds they are handed back and collected once, so
# cyclic garbage among them is reclaimed (one full pass, tens of milliseconds per 100k live spans).
GC_UNFREEZE_EVERY = 60.0
CHECKPOINT_EVERY = 1.0  # seconds between SQLite WAL checkpoints by the checkpointer thread
# SQLite settings of a collector's connections while it runs, and SQLite's defaults restored afterwards.
# The page cache holds the index pages random trace ids touch (spans, trace_tags, trace_operations keys);
# with SQLite's 2 MB default most inserts missed it once the database outgrew a few megabytes.
SQLITE_COLLECTOR_PRAGMAS = {"wal_autocheckpoint": 0, "cache_size": -65536}  # cache_size < 0: KiB (64 MiB)
SQLITE_DEFAULT_PRAGMAS = {"wal_autocheckpoint": 1000, "cache_size": -2000}
TRIM_EVERY = 5.0  # seconds between stream trims
STALE_CONSUMER_MS = 24 * 3600 * 1000  # a consumer idle this long, holding nothing, is a stopped collector's
PRUNE_EVERY = 600.0  # seconds between looks for such consumers
DEAD_STREAM_MAXLEN = 100_000  # dead letters kept (approximate cap, oldest go first)
TRIAL_TTL = 24 * 3600  # seconds the marks of entries tried alone are kept (see StreamConsumer._try_alone)
STORE_ATTEMPTS = 3  # tries of a batch while the database answers, before entries are tried one by one
MAX_BACKOFF = 30.0
RETENTION_BATCH = 2000

_COUNTER_NAMES = ("entries_read", "spans_stored", "duplicates_skipped", "spans_rejected", "dead_lettered",
                  "claimed", "acked", "db_errors", "redis_errors", "trimmed", "finalized", "retention_runs",
                  "metric_points_stored", "metric_points_rejected", "profiles_stored")
_counters = dict.fromkeys(_COUNTER_NAMES, 0)
_counters_lock = threading.Lock()


def _count(name: str, amount: int = 1) -> None:
    with _counters_lock:
        _counters[name] += amount


def consumer_stats() -> dict[str, int]:
    """This process's consumer counters (entries read, spans stored, duplicates skipped, ...)."""
    with _counters_lock:
        return dict(_counters)


_TRANSIENT = finalizer.TRANSIENT_ERRORS


class StorageUnavailable(Exception):
    """The database did not answer; the batch stays pending and is retried."""


@dataclass
class Entry:
    """One stream entry in hand and what became of it."""

    id: str
    fields: dict[bytes, bytes] | None
    deliveries: int = 1
    spans: list[dict[str, Any]] = field(default_factory=list)
    dead_reason: str | None = None
    # Spans of a readable entry that cannot be stored: they alone are dead-lettered (one record per entry).
    rejected_rows: list[Any] = field(default_factory=list)  # raw rows the codec refused
    rejected_spans: list[dict[str, Any]] = field(default_factory=list)  # decoded spans refused after decoding
    reject_reasons: list[str] = field(default_factory=list)
    resources: list[Any] = field(default_factory=list)  # the entry's raw resources, for its rejected rows
    metrics: list[dict[str, Any]] = field(default_factory=list)  # the points of a kind=metrics entry
    profiles: list[dict[str, Any]] = field(default_factory=list)  # the profiles of a kind=profiles entry


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _printable(text: str) -> str:
    """``text`` cut to REASON_CHARS and made encodable (a lone surrogate would make Redis refuse the write)."""
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS] + f"... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _successor(entry_id: str) -> str:
    """The smallest stream id greater than ``entry_id``."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# --------------------------------------------------------------------------- stream helpers


def ensure_group(client: redis.Redis, settings: CollectorSettings) -> None:
    """Create the consumer group (and the stream) if absent; an existing group is left as it is."""
    try:
        client.xgroup_create(settings.stream, settings.consumer_group, id="0", mkstream=True)
        log.info("created consumer group %s on %s", settings.consumer_group, settings.stream)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def trim_bound(client: redis.Redis, stream: str) -> str | None:
    """The lowest id any consumer group still needs; entries below it are safe to trim.

    For every group that is the older of its oldest pending entry and the
    successor of its last-delivered id. The group list and pending summaries
    are read in one MULTI so the snapshot is consistent; the last-delivered id
    is read before the pending summary, so an entry delivered in between is
    above the bound anyway.
    """
    groups = client.xinfo_groups(stream)
    if not groups:
        return None
    pipe = client.pipeline(transaction=True)
    pipe.xinfo_groups(stream)
    for group in groups:
        pipe.xpending(stream, group["name"])
    replies = pipe.execute()
    snapshot = [{_text(k): v for k, v in group.items()} for group in replies[0]]  # a cluster MULTI: bytes keys
    summaries = [_pending_summary(summary) for summary in replies[1:]]
    if len(snapshot) != len(groups):
        return None  # a group came or went meanwhile; try again next time
    bounds = []
    for group, summary in zip(snapshot, summaries):
        bound = _successor(_text(group["last-delivered-id"]))
        if summary and summary.get("pending") and summary.get("min"):
            oldest = _text(summary["min"])
            if _id_key(oldest) < _id_key(bound):
                bound = oldest
        bounds.append(bound)
    return min(bounds, key=_id_key)


def _pending_summary(summary: Any) -> dict[str, Any]:
    """XPENDING's summary as a mapping (a cluster client's MULTI returns the raw reply list)."""
    if isinstance(summary, (list, tuple)):
        return {"pending": int(summary[0] or 0), "min": summary[1], "max": summary[2]}
    return summary


def trim_stream(client: redis.Redis, settings: CollectorSettings) -> int:
    """Trim acknowledged entries off the stream; return how many were removed."""
    bound = trim_bound(client, settings.stream)
    if bound is None or bound == "0-1":
        return 0
    removed = client.xtrim(settings.stream, minid=bound, approximate=False)
    if removed:
        _count("trimmed", removed)
        log.debug("trimmed %d acknowledged entries below %s", removed, bound)
    return removed


# Atomic, so a consumer that reads between the look and the delete cannot lose pending entries with it
# (XGROUP DELCONSUMER drops a consumer's pending entries).
_PRUNE_CONSUMERS = """
local pruned = {}
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #fields, 2 do c[fields[i]] = fields[i + 1] end
  if c['pending'] == 0 and c['idle'] >= tonumber(ARGV[2]) and c['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    table.insert(pruned, c['name'])
  end
end
return pruned
"""


def prune_consumers(client: redis.Redis, settings: CollectorSettings, idle_ms: int = STALE_CONSUMER_MS) -> list[str]:
    """Remove consumers of the group that hold no pending entry and have been idle ``idle_ms``; their names.

    Collectors under generated names (one per pod or process) leave a consumer
    behind when they stop; without this the group lists them forever. One that
    still holds entries is kept: another collector claims those first.
    """
    try:
        names = client.eval(_PRUNE_CONSUMERS, 1, settings.stream, settings.consumer_group, int(idle_ms),
                            settings.resolved_consumer_name)
    except redis.ResponseError as exc:  # no group yet
        if "NOGROUP" in str(exc) or "no such key" in str(exc):
            return []
        raise
    names = [_text(n) for n in names or []]
    if names:
        log.info("removed %d stopped consumers from group %s: %s", len(names), settings.consumer_group,
                 ", ".join(names[:10]))
    return names


def stream_health(redis_client: Any, settings: CollectorSettings) -> dict[str, Any]:
    """Backlog of the span stream, for ``contrail doctor`` and ``/metrics``: totals over every stream the
    collectors read, and each one's own figures under ``shards`` (one item when the stream is not sharded).

    ``lag`` is the number of entries not yet delivered to the group. Redis 7
    reports it exactly; on older servers it is estimated as stream length
    minus pending entries (exact right after a trim, an upper bound otherwise).
    """
    each = [stream_shard_health(redis_client, shard) for shard in shard_settings(settings)]
    if len(each) == 1:
        return {**each[0], "shards": [dict(each[0])]}
    consumers: dict[str, dict[str, Any]] = {}
    for health in each:
        for c in health["consumers"]:
            known = consumers.setdefault(c["name"], {"name": c["name"], "pending": 0, "idle_ms": c["idle_ms"]})
            known["pending"] += c["pending"]
            known["idle_ms"] = min(known["idle_ms"], c["idle_ms"])
    last_ids = [h["last_entry_id"] for h in each if h["last_entry_id"]]
    return {
        "stream_length": sum(h["stream_length"] for h in each), "pending": sum(h["pending"] for h in each),
        "lag": sum(h["lag"] for h in each), "consumers": list(consumers.values()),
        "dead_letters": sum(h["dead_letters"] for h in each),
        "last_entry_id": max(last_ids, key=_id_key) if last_ids else None,
        "oldest_pending_idle_ms": max(h["oldest_pending_idle_ms"] for h in each),
        "group_exists": all(h["group_exists"] for h in each), "shards": each,
    }


def stream_shard_health(redis_client: Any, settings: CollectorSettings) -> dict[str, Any]:
    """Length, pending entries, lag, consumers and dead letters of the one stream ``settings.stream``."""
    health: dict[str, Any] = {
        "stream": settings.stream, "stream_length": 0, "pending": 0, "lag": 0, "consumers": [], "dead_letters": 0,
        "last_entry_id": None, "oldest_pending_idle_ms": 0, "group_exists": False,
    }
    if is_cluster(redis_client):  # where the shard lives
        health["node"] = redis_client.get_node_from_key(settings.stream).name
    pipe = redis_client.pipeline(transaction=False)
    pipe.xlen(settings.stream)
    pipe.xlen(settings.dead_stream)
    pipe.exists(settings.stream)
    length, dead, exists = pipe.execute()
    health["stream_length"], health["dead_letters"] = int(length), int(dead)
    if not exists:
        return health
    info = redis_client.xinfo_stream(settings.stream)
    last = info.get("last-generated-id")
    health["last_entry_id"] = _text(last) if last is not None else None
    group = next((g for g in redis_client.xinfo_groups(settings.stream)
                  if _text(g["name"]) == settings.consumer_group), None)
    if group is None:
        health["lag"] = health["stream_length"]
        return health
    health["group_exists"] = True
    health["pending"] = int(group.get("pending") or 0)
    lag = group.get("lag")
    if lag is None:
        last_delivered = _text(group.get("last-delivered-id") or "0-0")
        if health["last_entry_id"] is None or _id_key(last_delivered) >= _id_key(health["last_entry_id"]):
            lag = 0
        else:
            lag = max(health["stream_length"] - health["pending"], 1)
    health["lag"] = int(lag)
    health["consumers"] = [
        {"name": _text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
        for c in redis_client.xinfo_consumers(settings.stream, settings.consumer_group)
    ]
    if health["pending"]:
        oldest = redis_client.xpending_range(settings.stream, settings.consumer_group, "-", "+", 1)
        if oldest:
            health["oldest_pending_idle_ms"] = int(oldest[0]["time_since_delivered"])
    return health


def shard_settings(settings: CollectorSettings) -> list[CollectorSettings]:
    """One copy of ``settings`` per stream the collectors read, its ``stream`` set to that stream (so its
    ``dead_stream`` is that stream's dead letters); the first is shard 0 (see tracer.shards)."""
    streams = shards.consumed_streams(settings)
    if streams == [settings.stream]:
        return [settings]
    return [dataclasses.replace(settings, stream=stream) for stream in streams]


# --------------------------------------------------------------------------- the consumer


class StreamConsumer:
    """One collector's consumer in the group: the state its loop carries between reads."""

    def __init__(self, settings: CollectorSettings, engine: Engine, client: redis.Redis, name: str,
                 shared: "StreamConsumer | None" = None):
        """``shared``: the consumer of this collector's first stream, whose caches and forwarder this one
        (of another shard) uses too, so the process keeps one of each (see :func:`shard_consumers`)."""
        self.settings = settings
        self.engine = engine
        self.redis = client
        self.name = name
        self._retention_thread: threading.Thread | None = None
        self.held: list[Entry] = []  # entries read but not yet acknowledged (kept across a database outage)
        # Spans stored by this process lately, so finalizing their traces needs no read back.
        self.recent = RecentSpans(RECENT_SPANS, settings.recent_spans_memory)
        # Traces leased for the next finalize pass in the write transaction of the last one (SQLite).
        self.ahead = finalizer.ClaimAhead()
        self.limits = SpanLimits.from_settings(settings)  # what admit_span cuts every span to
        # Sends stored spans (or, forward_mode=kept, the finalizer's kept spans) on to an OTLP endpoint.
        self.keyed_by_stream = False  # set when the collector reads several streams (see entry_key)
        self.forwarder = forwarding.start(settings, engine) if shared is None else None
        if shared is not None:
            self.recent, self.ahead, self.limits, self.forwarder = (shared.recent, shared.ahead, shared.limits,
                                                                    shared.forwarder)

    def entry_key(self, entry: Entry) -> str:
        """What marks an entry as stored where its id alone would not do: entry ids are unique within one
        stream only, so with several streams (shards) the id is prefixed with a checksum of the stream's
        name (short enough for metric_entries' 64 characters whatever the name)."""
        if not self.keyed_by_stream:
            return entry.id
        return f"{zlib.crc32(self.settings.stream.encode()):08x}/{entry.id}"

    # ----------------------------------------------------------------- reading
    def read_new(self, wait: bool = True, block_s: float | None = None) -> list[Entry]:
        """Entries never delivered to the group; ``wait=False`` returns at once when there are none, else
        it waits up to ``block_s`` (default: the ``block`` setting)."""
        block = max(1, int((self.settings.block if block_s is None else block_s) * 1000)) if wait else None
        reply = self.redis.xreadgroup(self.settings.consumer_group, self.name, {self.settings.stream: ">"},
                                      count=self.settings.read_count, block=block)
        return [Entry(_text(entry_id), fields) for _, entries in reply or () for entry_id, fields in entries]

    def read_own_pending(self) -> list[Entry]:
        """Entries this consumer name was given before and never acknowledged (a restart under the same name)."""
        reply = self.redis.xreadgroup(self.settings.consumer_group, self.name, {self.settings.stream: "0"},
                                      count=self.settings.read_count)
        entries = [Entry(_text(entry_id), fields) for _, items in reply or () for entry_id, fields in items]
        self._attach_delivery_counts(entries)
        return entries

    def claim_stale(self) -> int:
        """Take over entries other consumers left pending longer than ``claim_idle``; process them."""
        start, claimed = "0-0", 0
        idle_ms = max(1, int(self.settings.claim_idle * 1000))
        while True:
            reply = self.redis.xautoclaim(self.settings.stream, self.settings.consumer_group, self.name,
                                          min_idle_time=idle_ms, start_id=start, count=self.settings.read_count)
            next_start, items = _text(reply[0]), reply[1]
            entries = [Entry(_text(entry_id), fields) for entry_id, fields in items]
            deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
            if deleted:  # pending ids whose entries no longer exist: nothing to store
                log.warning("dropped %d pending ids whose entries no longer exist", len(deleted))
            if entries:
                claimed += len(entries)
                _count("claimed", len(entries))
                log.info("claimed %d stale pending entries (%s .. %s)", len(entries), entries[0].id, entries[-1].id)
                self._attach_delivery_counts(entries)
                self.process(entries)
            if next_start in ("0-0", "0") or not items:
                return claimed
            start = next_start

    def _attach_delivery_counts(self, entries: list[Entry]) -> None:
        if not entries:
            return
        ordered = sorted(entries, key=lambda e: _id_key(e.id))
        details = self.redis.xpending_range(self.settings.stream, self.settings.consumer_group,
                                            ordered[0].id, ordered[-1].id, len(entries) + 16, consumername=self.name)
        counts = {_text(d["message_id"]): int(d["times_delivered"]) for d in details}
        for entry in entries:
            entry.deliveries = counts.get(entry.id, entry.deliveries)

    # ----------------------------------------------------------------- processing
    def process(self, entries: list[Entry], read_ahead: bool = False) -> None:
        """Decode, store in one transaction, then dead-letter and acknowledge in one MULTI.

        ``read_ahead``: when the write lock is busy (SQLite: the finalizer
        thread is writing) once the rows are built, read, decode and build the
        next entries meanwhile and store them in the same transaction; they
        are appended to ``entries`` and acknowledged with them.
        """
        if not entries:
            return
        if entries is not self.held:
            _count("entries_read", len(entries))
        over = [e for e in entries if e.fields and e.deliveries > self.settings.max_deliveries]
        if over:
            entries = [e for e in entries if not (e.fields and e.deliveries > self.settings.max_deliveries)]
            for index, entry in enumerate(over):
                self.held = over[index:] + entries  # what stays in hand if this one cannot be stored now
                self._try_alone(entry)
            self.held = []
            if not entries:
                return
        self.held = entries
        for entry in entries:
            self._decode(entry)
        self._store(entries, read_ahead)
        self._store_metrics(entries)
        self._acknowledge(entries)
        self.held = []

    def _read_ahead(self, entries: list[Entry]) -> list[Entry]:
        """New entries read without waiting and decoded, appended to ``entries``; those with spans."""
        try:
            more = self.read_new(wait=False)
        except redis.RedisError:  # the next read of the loop reports it
            return []
        if not more:
            return []
        _count("entries_read", len(more))
        for entry in more:
            self._decode(entry)
        entries.extend(more)
        return [e for e in more if e.spans]

    def _try_alone(self, entry: Entry) -> None:
        """An entry delivered more than ``max_deliveries`` times, processed on its own.

        Collectors that stopped while holding a batch (killed, out of memory)
        left every entry of it with a high delivery count, though perhaps only
        one of them stopped them. So each is tried alone, marked in Redis while
        in hand; the one a collector stopped on is found marked next time and
        dead-lettered, the others of its batches are stored as usual.
        """
        marks = self.trial_marks
        if self.redis.sismember(marks, entry.id):
            entry.spans, entry.dead_reason = [], (
                f"delivered {entry.deliveries} times; a collector stopped while it was tried alone")
            self._acknowledge([entry])
            self.redis.srem(marks, entry.id)
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(marks, entry.id)
        pipe.expire(marks, TRIAL_TTL)
        pipe.execute()
        try:
            self._decode(entry)
            self._store([entry])
            self._store_metrics([entry])
            self._acknowledge([entry])
        finally:  # stored, or an error that is no stop (database down): the entry is retried unmarked
            self.redis.srem(marks, entry.id)

    @property
    def trial_marks(self) -> str:
        """The Redis set of entries a collector of the group is trying alone (see :meth:`_try_alone`)."""
        return f"{self.settings.stream}:{self.settings.consumer_group}:on-trial"

    def _decode(self, entry: Entry) -> None:
        """Decode an entry; whatever the exception, that entry alone is dead-lettered with it as the reason."""
        entry.rejected_rows, entry.rejected_spans, entry.reject_reasons, entry.resources = [], [], [], []
        try:
            self._read_spans(entry)
        except Exception as exc:  # noqa: BLE001 - one entry never costs another entry or the process
            log.exception("entry %s could not be read", entry.id)
            entry.spans, entry.dead_reason = [], f"unreadable entry: {type(exc).__name__}: {exc}"

    def _read_spans(self, entry: Entry) -> None:
        entry.spans, entry.metrics, entry.dead_reason = [], [], None
        if entry.fields is None or not entry.fields:
            entry.dead_reason = None  # deleted from the stream while pending: nothing to do
            return
        try:
            if is_metrics_entry(entry.fields):
                self._read_metrics(entry)
                return
            if is_profiles_entry(entry.fields):
                entry.profiles, entry.dead_reason = profile_store.read_entry(entry.fields)
                return
            decoded = decode_entry(entry.fields)
        except CodecError as exc:
            entry.dead_reason = str(exc)
            return
        entry.resources = decoded.resources
        entry.rejected_rows = decoded.rejected_rows
        entry.reject_reasons = [f"row {index}: {reason}" for index, reason in decoded.rejected]
        for index, span in enumerate(decoded.spans):
            reason = validation.admit_span(span, self.limits)  # times bounded, token counts checked, sizes cut
            if reason:
                self._reject(entry, span, reason)
            else:
                entry.spans.append(span)
        if decoded.rejected:
            _count("spans_rejected", len(decoded.rejected))

    @staticmethod
    def _read_metrics(entry: Entry) -> None:
        """A kind=metrics entry: its points, or the whole entry dead-lettered if a point is unreadable (metric
        rows have no dead letter of their own; the entry's fields are kept as they came)."""
        decoded = decode_metrics(entry.fields)
        if decoded.rejected:
            _count("metric_points_rejected", len(decoded.rejected))
            entry.dead_reason = "; ".join(f"metric row {i}: {reason}" for i, reason in decoded.rejected[:3])
        else:
            entry.metrics = decoded.points

    def _store_metrics(self, entries: list[Entry]) -> None:
        """Store each metrics entry in its own transaction; acknowledged after, dead-lettered if refused."""
        for entry in entries:
            if not entry.metrics and not entry.profiles:
                continue
            try:
                if entry.profiles:  # a kind=profiles entry: stored with its traces (profile_store)
                    _count("profiles_stored", profile_store.store_entry(self.engine, entry.profiles))
                    entry.profiles = []
                    continue
                stored = metrics_store.store_entry(self.engine, self.entry_key(entry), entry.metrics)
            except _TRANSIENT as exc:
                _count("db_errors")
                raise StorageUnavailable(_short(exc)) from exc
            except Exception as exc:  # refused for what it holds: this entry alone is dead-lettered
                _count("db_errors")
                what = "profiles" if entry.profiles else "metric points"
                entry.dead_reason = f"storage refused the {what}: {type(exc).__name__}: {_short(exc)}"
                entry.profiles = []
            else:
                _count("metric_points_stored" if stored else "duplicates_skipped", len(entry.metrics))
            entry.metrics = []

    @staticmethod
    def _reject(entry: Entry, span: dict[str, Any], reason: str) -> None:
        """Set one decoded span of ``entry`` aside for its dead letter; the rest of the entry goes on."""
        entry.rejected_spans.append(span)
        entry.reject_reasons.append(f"span {span.get('span_id')}: {reason}")
        _count("spans_rejected")

    def _store(self, entries: list[Entry], read_ahead: bool = False) -> None:
        """Store the spans of all entries in one transaction.

        Operational errors (database down, read-only, locked, deadlock) are
        transient: after a few quick tries the batch is held and retried with
        back-off, never dead-lettered. Any other error depends on the data, so
        the entries are stored one by one and those refused are dead-lettered.
        """
        batch = [e for e in entries if e.spans]
        if not batch:
            return
        for attempt in range(STORE_ATTEMPTS):
            try:
                self._store_together(batch, (lambda: self._read_ahead(entries)) if read_ahead else None)
                return
            except _TRANSIENT as exc:
                read_ahead = False
                batch = [e for e in entries if e.spans]  # with any entries read ahead
                _count("db_errors")
                if attempt == STORE_ATTEMPTS - 1:
                    raise StorageUnavailable(_short(exc)) from exc
                log.warning("storing %d entries failed (attempt %d), retrying: %s", len(batch), attempt + 1,
                            _short(exc))
                time.sleep(0.2 * (attempt + 1))
            except Exception as exc:  # refused for what it holds: find the entries at fault
                batch = [e for e in entries if e.spans]
                _count("db_errors")
                log.warning("storing %d entries failed, storing them one by one: %s", len(batch), _short(exc))
                break
        for entry in batch:
            try:
                self._store_together([entry])
            except _TRANSIENT as exc:
                raise StorageUnavailable(_short(exc)) from exc
            except Exception as exc:
                log.warning("entry %s could not be stored (%s); storing its spans one by one", entry.id, _short(exc))
                self._store_span_by_span(entry)

    def _store_span_by_span(self, entry: Entry) -> None:
        """Store an entry the database refused span by span; only the spans it refuses are dead-lettered."""
        spans, entry.spans = entry.spans, []
        for span in spans:
            try:
                self._store_together([Entry(entry.id, None, spans=[span])])
            except _TRANSIENT as exc:
                entry.spans = spans  # retried whole (storage is idempotent); its refusals are found again
                raise StorageUnavailable(_short(exc)) from exc
            except Exception as exc:
                self._reject(entry, span, f"storage refused the span: {type(exc).__name__}: {_short(exc)}")
            else:
                entry.spans.append(span)

    def _store_together(self, batch: list[Entry], read_ahead: Any = None) -> None:
        spans = [span for entry in batch for span in entry.spans]
        received_ns = time.time_ns()
        parts = [self._prepare(batch, received_ns)]  # grouped and statistics computed before the write lock

        def read_on() -> None:  # the finalizer thread is writing: read, decode and group the next entries
            nonlocal spans
            entries = read_ahead()
            more = [span for entry in entries for span in entry.spans]
            if more:
                parts.append(self._prepare(entries, time.time_ns()))
                spans = spans + more

        lock = write_lock(self.engine)
        take_write_lock(lock, read_on if read_ahead is not None else None)
        stored_rows: list = []
        try:
            with self.engine.begin() as conn:
                new: list = []
                for part_spans, part_ns, prepared, figures in parts:  # a span in two parts is new in the first only
                    part_new = store_spans(conn, part_spans, part_ns, prepared=prepared, stored_rows=stored_rows,
                                           trace_span_limit=self.settings.trace_span_limit)
                    if len(part_new) == len(prepared.keys):  # all new: the figures computed ahead are exact
                        figures.write(conn)
                    else:
                        finalizer.on_spans_stored(conn, part_new)
                    new += part_new
        finally:
            lock.__exit__(None, None, None)
        self.recent.add(stored_rows)  # committed: the finalizer may use these rows
        _count("spans_stored", len(new))
        if self.forwarder is not None and self.forwarder.mode == "stored":  # committed: forward, never waiting
            self.forwarder.put(new)
        _count("duplicates_skipped", len(spans) - len(new))
        if len(new) < len(spans):
            log.info("skipped %d spans already stored (redelivered entries)", len(spans) - len(new))

    @staticmethod
    def _prepare(entries: list[Entry], received_ns: int) -> tuple:
        """The entries' spans grouped by trace and entry for staging, and the statistics they add if all are
        new (both need no database)."""
        spans = [span for entry in entries for span in entry.spans]
        prepared = prepare_spans(spans, received_ns, runs=[(entry.id, len(entry.spans)) for entry in entries])
        unique = spans if len(prepared.by_key) == len(spans) else list(prepared.by_key.values())
        return spans, received_ns, prepared, finalizer.SpanFigures(unique, sort_usage=True)

    def _acknowledge(self, entries: list[Entry]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        dead = 0
        for entry in entries:
            if entry.dead_reason is not None and entry.fields:
                pipe.xadd(self.settings.dead_stream, self._dead_letter(entry), maxlen=DEAD_STREAM_MAXLEN,
                          approximate=True)
                dead += 1
            elif entry.reject_reasons:
                pipe.xadd(self.settings.dead_stream, self._spans_dead_letter(entry), maxlen=DEAD_STREAM_MAXLEN,
                          approximate=True)
                dead += 1
        pipe.xack(self.settings.stream, self.settings.consumer_group, *[e.id for e in entries])
        pipe.execute()
        _count("acked", len(entries))
        if dead:
            _count("dead_lettered", dead)
            for entry in entries:
                if entry.dead_reason is not None and entry.fields:
                    log.warning("entry %s dead-lettered to %s: %s", entry.id, self.settings.dead_stream,
                                _printable(entry.dead_reason))
                elif entry.reject_reasons:
                    log.warning("%d spans of entry %s dead-lettered to %s: %s", len(entry.reject_reasons), entry.id,
                                self.settings.dead_stream, _printable("; ".join(entry.reject_reasons[:3])))

    def _dead_letter(self, entry: Entry) -> dict[Any, Any]:
        """The dead letter of a whole entry: its reason and its original fields (names kept as bytes)."""
        fields = self._letter(entry, entry.dead_reason or "", "entry")
        for key, value in (entry.fields or {}).items():
            name = b"orig_" + bytes(key) if isinstance(key, (bytes, bytearray)) else "orig_" + _printable(str(key))
            fields[name] = value if isinstance(value, (bytes, bytearray)) else _printable(str(value))
        return fields

    def _spans_dead_letter(self, entry: Entry) -> dict[Any, Any]:
        """The dead letter of the spans of an entry that cannot be stored: just those, re-encoded as an entry."""
        reasons = entry.reject_reasons
        shown = "; ".join(reasons[:10]) + (f"; ... {len(reasons) - 10} more" if len(reasons) > 10 else "")
        total = len(reasons) + len(entry.spans)
        fields = self._letter(entry, f"rejected {len(reasons)} of {total} spans: {shown}", "spans")
        for key, value in encode_rejected(entry.rejected_rows, entry.resources, entry.rejected_spans).items():
            fields[b"orig_" + key] = value
        return fields

    def _letter(self, entry: Entry, reason: str, scope: str) -> dict[Any, Any]:
        return {"reason": _printable(reason), "scope": scope, "source_id": entry.id, "consumer": self.name,
                "deliveries": str(entry.deliveries), "dead_ns": str(time.time_ns())}

    # ----------------------------------------------------------------- periodic work
    def finalize(self, pipeline: "write_pipeline.WritePipeline | None" = None) -> int:
        """One finalize pass; with ``pipeline`` the batch's write is handed over (counted once committed)."""
        try:
            if pipeline is not None:
                return pipeline.step()
            done = finalizer.finalize_ready(self.engine, self.settings, self.name, recent=self.recent,
                                            ahead=self.ahead)
        except SQLAlchemyError as exc:
            log.warning("finalizing traces failed, will retry: %s", _short(exc))
            return 0
        except Exception:  # a bug in assembly must not stop ingest; the trace stays pending
            log.exception("finalizing traces failed")
            return 0
        if done:
            _count("finalized", done)
        return done

    def write_pipeline(self) -> "write_pipeline.WritePipeline | None":
        """On SQLite, a pipeline writing finalized batches beside the finalizer thread's assembly."""
        if self.engine.dialect.name != "sqlite":
            return None
        return write_pipeline.WritePipeline(self.engine, self.settings, self.name, self.recent, self.ahead,
                                       on_written=lambda n: _count("finalized", n))

    def release_ahead(self) -> None:
        """Give back leases taken for a finalize pass that will not run (the collector is stopping)."""
        try:
            self.ahead.release(self.engine, self.name)
        except Exception as exc:  # the leases expire after finalizer.LEASE_NS anyway
            log.warning("giving back finalizer leases failed: %s", _short(exc))

    def release_own_leases(self) -> None:
        """Give back finalizer leases an earlier collector of this name held (it died holding them)."""
        try:
            released = finalizer.release_own(self.engine, self.name)
        except Exception as exc:  # they expire after finalizer.LEASE_NS anyway
            log.warning("giving back finalizer leases of an earlier %s failed: %s", self.name, _short(exc))
            return
        if released:
            log.info("gave back %d finalizer leases an earlier collector named %s held", released, self.name)

    def maybe_start_retention(self) -> None:
        """Run one retention pass in a thread with its own connection, once per interval per group."""
        if self.settings.retention <= 0:
            return
        if self._retention_thread is not None and self._retention_thread.is_alive():
            return
        lock = f"{self.settings.stream}:retention-lock"
        hold = max(1, int(self.settings.retention_interval))
        if not self.redis.set(lock, self.name, nx=True, ex=hold):
            return  # another collector in the group ran it this interval
        cutoff = time.time_ns() - int(self.settings.retention * 1e9)
        self._retention_thread = threading.Thread(target=self._retention, args=(cutoff,),
                                                  name="contrail-retention", daemon=True)
        self._retention_thread.start()

    def _retention(self, cutoff_ns: int) -> None:
        from .retention import run_retention

        try:
            counts = run_retention(self.engine, cutoff_ns, batch_size=RETENTION_BATCH)
        except Exception as exc:  # retention retries next interval; ingest goes on
            log.warning("retention pass failed: %s", _short(exc))
            return
        _count("retention_runs")
        deleted = sum(int(v) for v in counts.values() if isinstance(v, int))
        if deleted:
            log.info("retention deleted %d rows older than the cutoff: %s", deleted, counts)


class FinalizerThread(threading.Thread):
    """Finalizes quiet traces beside the stream loop, so reading, storing and acknowledging never wait for it.

    On SQLite each batch's write runs on a thread of its own while this one
    assembles the next (:class:`write_pipeline.WritePipeline`).
    A pass that filled a whole batch (or leased a whole next batch, see
    :class:`finalizer.ClaimAhead`) is followed by the next at once; after a
    partial one it waits :data:`FINALIZE_PARTIAL_WAIT`; after an empty one it
    waits until the oldest pending trace becomes quiet, at most
    :data:`FINALIZE_EVERY`. What it has not finished is in ``pending_traces``
    in the database, so a collector killed at any point loses no finalization:
    the leases of its claimed traces expire and any collector takes them.
    """

    def __init__(self, consumer: StreamConsumer, stop: threading.Event) -> None:
        super().__init__(name="contrail-finalizer", daemon=True)
        self.consumer = consumer
        self.stop = stop

    def run(self) -> None:
        pipeline = self.consumer.write_pipeline()
        try:
            while not self.stop.is_set():
                done = self.consumer.finalize(pipeline)
                full = finalizer.MAX_TRACES_PER_CALL
                if done >= full or len(self.consumer.ahead.claimed) >= full:
                    continue
                self.stop.wait(FINALIZE_PARTIAL_WAIT if done else self._idle_wait())
        finally:
            if pipeline is not None:
                pipeline.close()

    def _idle_wait(self) -> float:
        quiet_ns = int(float(self.consumer.settings.quiet_period) * 1e9)
        try:
            ready_ns = finalizer.next_ready_ns(self.consumer.engine, quiet_ns)
        except Exception:  # the database is unavailable: the next pass reports it
            return FINALIZE_EVERY
        if ready_ns is None:
            return FINALIZE_EVERY
        return min(FINALIZE_EVERY, max(0.01, (ready_ns - time.time_ns()) / 1e9 + 0.005))


_checkpointing: "weakref.WeakKeyDictionary[Engine, int]" = weakref.WeakKeyDictionary()  # engine -> running
_checkpoint_lock = threading.Lock()


def _on_checkout(engine: Engine):
    def checkout(dbapi_connection, record, _proxy):
        want = SQLITE_COLLECTOR_PRAGMAS if _checkpointing.get(engine) else SQLITE_DEFAULT_PRAGMAS
        if record.info.get("contrail_pragmas", SQLITE_DEFAULT_PRAGMAS) is not want:
            cursor = dbapi_connection.cursor()
            try:
                for name, value in want.items():
                    cursor.execute(f"PRAGMA {name}={value}")
            finally:
                cursor.close()
            record.info["contrail_pragmas"] = want
    return checkout


class Checkpointer(threading.Thread):
    """Checkpoints the SQLite write-ahead log in the background while a collector runs.

    SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL
    pages, so with large batches nearly every commit copied the log into the
    database and synced it while holding the write lock. While a checkpointer
    runs on an engine, that engine's connections have the automatic checkpoint
    off and a 64 MiB page cache (:data:`SQLITE_COLLECTOR_PRAGMAS`, SQLite's
    defaults are restored at checkout once no collector runs), and this thread runs a
    PASSIVE checkpoint (never blocks readers or writers) every
    :data:`CHECKPOINT_EVERY` seconds on its own connection, mostly outside the
    interpreter lock. Durability is unchanged: a commit is in the WAL either way.
    """

    def __init__(self, engine: Engine, stop: threading.Event) -> None:
        super().__init__(name="contrail-checkpoint", daemon=True)
        self.engine = engine
        self.stop = stop
        with _checkpoint_lock:
            if engine not in _checkpointing:
                event.listen(engine, "checkout", _on_checkout(engine))
                _checkpointing[engine] = 0
            _checkpointing[engine] += 1

    def run(self) -> None:
        try:
            while not self.stop.wait(CHECKPOINT_EVERY):
                self.checkpoint()
        finally:
            with _checkpoint_lock:
                _checkpointing[self.engine] -= 1
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # the next pass (or SQLite itself, later) catches up
            log.debug("WAL checkpoint failed: %s", _short(exc))


def _short(exc: BaseException | None) -> str:
    message = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else type(exc).__name__
    return message[:300]


def _report(client: redis.Redis, settings: CollectorSettings, recent: RecentSpans | None = None) -> None:
    """This collector's counters next to the stream (collector_worker.reports), for the web app and doctor."""
    reports.write_collector_report(client, settings, reports.build_collector_report(
        {**consumer_stats(), **validation.counters(), "trace_spans_dropped": dropped_over_limit["spans"],
         **forwarding.counters(), **(recent.counters() if recent is not None else {})},
        finalizer.counters(), sampling.counters()))


def prepare_partitions(engine: Engine) -> None:
    """Day partitions from yesterday to two days on (PostgreSQL); retention passes renew them. A failure is
    only logged: a finalizer makes a missing day's partitions itself."""
    from .storage import partitions

    try:
        with engine.begin() as conn:
            partitions.prepare_days(conn, time.time_ns())
    except Exception as exc:
        log.warning("preparing day partitions failed, finalizers will make them: %s", _short(exc))


def open_redis(settings: CollectorSettings, stop: threading.Event) -> Any:
    """The collector's Redis client (single server or cluster, see tracer.redis_client). A cluster client
    reaches a node as it is made: while none answers this retries with back-off; None once ``stop`` is set."""
    backoff = 0.0
    while not stop.is_set():
        try:
            return connect(settings.redis_url, socket_timeout=max(10.0, settings.block + 5),
                           socket_connect_timeout=5, health_check_interval=30)
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
            _count("redis_errors")
            backoff = min(MAX_BACKOFF, backoff * 2 or 0.5)
            log.error("redis unreachable (%s); retrying in %.1fs", _short(exc), backoff)
            stop.wait(backoff)
    return None


def shard_consumers(settings: CollectorSettings, engine: Engine, client: Any, name: str) -> list[StreamConsumer]:
    """One consumer per stream the collector reads (see :func:`shard_settings`), all under ``name``; the
    first one's recent spans, finalizer leases and forwarder serve them all."""
    each = shard_settings(settings)
    first = StreamConsumer(each[0], engine, client, name)
    consumers = [first] + [StreamConsumer(one, engine, client, name, shared=first) for one in each[1:]]
    for consumer in consumers:
        consumer.keyed_by_stream = len(consumers) > 1
    return consumers


def read_round(consumers: list[StreamConsumer], turn: int) -> int:
    """Read and process new entries of every stream once; when none has any, wait on one of them (the
    ``turn``-th, in rotation) for a share of ``block``. The number of entries processed."""
    got = 0
    for consumer in consumers:
        entries = consumer.read_new(wait=False)
        consumer.process(entries, read_ahead=True)
        got += len(entries)
    if got:
        return got
    consumer = consumers[turn % len(consumers)]
    entries = consumer.read_new(block_s=consumer.settings.block / len(consumers))
    consumer.process(entries, read_ahead=True)
    return len(entries)


def run_consumer(settings: CollectorSettings, stop_event: threading.Event | None = None, engine: Engine | None = None,
                 redis_client: Any = None) -> None:
    """Consume the span stream (every shard of it) until ``stop_event`` is set; finish the batch in hand, then
    finalize once more."""
    stop = stop_event or threading.Event()
    pricing.configure(settings.price_table)  # LLM cost is computed at ingest: load the configured table first
    own_engine = engine is None
    engine = engine or open_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
    client = redis_client or open_redis(settings, stop)
    if client is None:  # stopped before Redis answered
        if own_engine:
            engine.dispose()
        return
    name = settings.resolved_consumer_name
    consumers = shard_consumers(settings, engine, client, name)
    consumer = consumers[0]  # finalizing, retention and the caches are the process's; the first one keeps them
    log.info("collector %s consuming %s as group %s", name, ", ".join(c.settings.stream for c in consumers),
             settings.consumer_group)
    consumer.release_own_leases()
    prepare_partitions(engine)

    backoff = 0.0
    ready = False
    recovered = False
    turn = 0
    now = time.monotonic()
    next_claim = next_trim = next_report = next_prune = now
    next_unfreeze = now + GC_UNFREEZE_EVERY
    next_retention = now + min(settings.retention_interval, 10.0)
    gc_thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    finalizer_stop = threading.Event()
    finalizer_thread = FinalizerThread(consumer, finalizer_stop)
    finalizer_thread.start()
    checkpointer = Checkpointer(engine, finalizer_stop) if engine.dialect.name == "sqlite" else None
    if checkpointer is not None:
        checkpointer.start()
    try:
        while not stop.is_set():
            try:
                for each in consumers:
                    if each.held:  # a batch the database refused to take: retry it before reading more
                        each.process(each.held)
                if not ready:
                    for each in consumers:
                        ensure_group(client, each.settings)
                    ready = True
                if not recovered:  # our own unacknowledged entries first (restart under the same name)
                    for each in consumers:
                        while not stop.is_set():
                            own = each.read_own_pending()
                            if not own:
                                break
                            each.process(own)
                    recovered = True
                now = time.monotonic()
                if now >= next_claim:
                    for each in consumers:
                        each.claim_stale()
                    next_claim = now + max(0.5, min(settings.claim_idle / 2, 10.0))
                got = read_round(consumers, turn)
                turn += 1
                now = time.monotonic()
                if got:
                    if now >= next_unfreeze:
                        gc.unfreeze()
                        gc.collect()
                        next_unfreeze = now + GC_UNFREEZE_EVERY
                    gc.freeze()
                if now >= next_trim:
                    for each in consumers:
                        trim_stream(client, each.settings)
                    next_trim = now + TRIM_EVERY
                if now >= next_prune:
                    for each in consumers:
                        prune_consumers(client, each.settings)
                    next_prune = now + PRUNE_EVERY
                if now >= next_retention:
                    consumer.maybe_start_retention()
                    next_retention = now + settings.retention_interval
                if settings.report_interval > 0 and now >= next_report:
                    _report(client, settings, consumer.recent)
                    next_report = now + settings.report_interval
                backoff = 0.0
            except StorageUnavailable as exc:
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.5)
                log.error("database unavailable (%s); %d entries stay pending, retrying in %.1fs",
                          _short(exc), sum(len(each.held) for each in consumers), backoff)
                stop.wait(backoff)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("consumer group missing (Redis restarted?); creating it again")
                    ready = recovered = False
                    continue
                _count("redis_errors")
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.5)
                log.error("redis error: %s; retrying in %.1fs", _short(exc), backoff)
                stop.wait(backoff)
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
                    redis.exceptions.RedisClusterException) as exc:
                _count("redis_errors")
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.5)
                log.error("redis unreachable (%s); retrying in %.1fs", _short(exc), backoff)
                ready = recovered = False
                stop.wait(backoff)
        finalizer_stop.set()
        finalizer_thread.join()
        try:
            consumer.finalize()
        except Exception:  # stopping anyway; pending traces are finalized by the next collector
            log.exception("final finalize pass failed")
        consumer.release_ahead()
        forwarding.stop(engine, consumer.forwarder)
        log.info("collector %s stopped: %s", name, consumer_stats())
        if settings.report_interval > 0:
            try:
                _report(client, settings, consumer.recent)
            except redis.RedisError:
                pass
    finally:
        finalizer_stop.set()
        if finalizer_thread.is_alive():
            finalizer_thread.join(timeout=60)
        forwarding.stop(engine, consumer.forwarder)  # once more after a failure; a no-op after a clean stop
        if checkpointer is not None:
            checkpointer.join(timeout=60)
        gc.unfreeze()
        gc.set_threshold(*gc_thresholds)
        if redis_client is None:
            client.close()
        if own_engine:
            engine.dispose()
