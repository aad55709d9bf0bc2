"""The collector under stress and faults, checked against what was published.

A collector subprocess (SQLite) is killed with SIGKILL at random moments and
restarted, stopped with SIGTERM in the middle of finalization, or made to
meet a database another connection holds locked; late spans arrive for traces
already finalized and entries are published twice. Afterwards the database
must hold every span exactly once, a ``traces`` row per trace whose
``span_count`` matches its spans, span-scope statistics equal to the spans
stored, trace-scope statistics counting each trace once (re-finalizations
included), dependency edges equal to those of the stored traces, LLM usage
equal to the LLM spans stored, and no pending trace left.

The seed of a run is printed; ``CONTRAIL_STRESS_SEED`` replays it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import create_engine, event, func, select

from collector_worker import dependencies, finalizer
from collector_worker.storage import leases as lease_store
from collector_worker.consumer import Entry, StreamConsumer, consumer_stats, ensure_group
from collector_worker.stats import bucket_of
from collector_worker.storage import open_engine, schema
from collector_worker.storage import block_store
from collector_worker.storage import staging
from tests.support.stored import span_rows
from tests.collector.test_consumer import RunningConsumer, publish, settings_for
from tests.collector.test_faults import Collectors, pending
from tests.support.servers import wait_until

pytestmark = pytest.mark.xdist_group("collector-stress")

SERVICES = ("gateway", "orders", "payments", "inventory", "agent")
MODELS = ("gpt-4o-mini", "claude-3-haiku")


# --------------------------------------------------------------------------- data


class Workload:
    """Traces of varied sizes, their late spans, and the stream entries that carry them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.traces: dict[str, list[dict]] = {}  # every span ever published, by trace
        self.withheld: dict[str, dict] = {}  # trace id -> its root, published late

    def trace(self, size: int, withhold_root: bool = False) -> list[dict]:
        rng = self.rng
        t0 = time.time_ns() - rng.randrange(2, 150) * 1_000_000_000  # spread over a few minute buckets
        trace_id = os.urandom(16).hex()
        spans: list[dict] = []
        for i in range(size):
            parent = None if i == 0 else spans[rng.randrange(0, i) if i > 1 else 0]
            service = "gateway" if parent is None else (
                parent["service"] if rng.random() < 0.5 else rng.choice(SERVICES))
            start = t0 + i * 1000 if parent is None else parent["start_ns"] + rng.randrange(0, 500_000)
            span = {
                "trace_id": trace_id, "span_id": os.urandom(8).hex(),
                "parent_span_id": None if parent is None else parent["span_id"],
                "name": f"GET /r{rng.randrange(3)}" if parent is None else f"op-{rng.randrange(6)}",
                "kind": "server" if parent is None else rng.choice(("client", "server", "internal", "producer")),
                "start_ns": start, "end_ns": start + rng.randrange(0, 3_000_000),
                "status_code": "error" if rng.random() < 0.05 else "ok",
                "service": service, "resource": {"host.name": f"host-{service}"},
                "attributes": {"i": i, "http.route": "/x"} if rng.random() < 0.3 else {"i": i},
                "events": [], "links": [],
            }
            if parent is not None and rng.random() < 0.04:
                span["attributes"].update({"gen_ai.operation.name": "chat", "gen_ai.request.model": rng.choice(MODELS),
                                           "gen_ai.usage.input_tokens": rng.randrange(1, 2000),
                                           "gen_ai.usage.output_tokens": rng.randrange(1, 500)})
            spans.append(span)
        self.traces[trace_id] = list(spans)
        if withhold_root:
            self.withheld[trace_id] = spans[0]
            return spans[1:]
        return spans

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randrange(1, 21)
        if r < 0.92:
            return self.rng.randrange(21, 121)
        return self.rng.randrange(200, 501)

    def first_wave(self, spans_wanted: int) -> list[list[dict]]:
        """Pieces of traces (a trace may be split over entries) packed into entries of varied sizes."""
        pieces: list[list[dict]] = []
        total = 0
        while total < spans_wanted:
            spans = self.trace(self.size(), withhold_root=self.rng.random() < 0.05)
            total += len(spans)
            cuts = sorted(self.rng.sample(range(1, len(spans)), min(2, len(spans) - 1))) if len(spans) > 2 else []
            for a, b in zip([0] + cuts, cuts + [len(spans)]):
                if spans[a:b]:
                    pieces.append(spans[a:b])
        self.rng.shuffle(pieces)
        return self.pack(pieces)

    def pack(self, pieces: list[list[dict]]) -> list[list[dict]]:
        entries, current, limit = [], [], self.rng.randrange(100, 700)
        for piece in pieces:
            current.extend(piece)
            if len(current) >= limit:
                entries.append(current)
                current, limit = [], self.rng.randrange(100, 700)
        if current:
            entries.append(current)
        return entries

    def late_spans(self, finalized: list[str]) -> list[dict]:
        """New children for some finalized traces, and the withheld roots of finalized traces."""
        rng, late = self.rng, []
        for trace_id in finalized:
            if trace_id in self.withheld:
                late.append(self.withheld.pop(trace_id))
            for _ in range(rng.randrange(1, 5)):
                parent = rng.choice(self.traces[trace_id])
                start = parent["start_ns"] + rng.randrange(0, 100_000)
                span = dict(parent, span_id=os.urandom(8).hex(), parent_span_id=parent["span_id"],
                            service=rng.choice(SERVICES), name=f"late-{rng.randrange(3)}", kind="client",
                            start_ns=start, end_ns=start + rng.randrange(0, 1_000_000), attributes={"late": True})
                self.traces[trace_id].append(span)
                late.append(span)
        return late

    def published_keys(self, withheld_too: bool = False) -> set[tuple[str, str]]:
        keys = {(s["trace_id"], s["span_id"]) for spans in self.traces.values() for s in spans}
        if not withheld_too:
            keys -= {(s["trace_id"], s["span_id"]) for s in self.withheld.values()}
        return keys


# --------------------------------------------------------------------------- checks


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def span_count(engine) -> int:
    return len(span_rows(engine))


def pending_traces(engine) -> int:
    return _count(engine, schema.pending_traces)


def finalized_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.traces.c.trace_id)).scalars())


def _nonzero(rows) -> dict:
    return {key: values for key, values in rows.items() if any(values)}


def check_invariants(engine, workload: Workload) -> None:
    """Everything stored exactly once and every figure derived from the stored spans exactly."""
    expected = workload.published_keys()
    with engine.connect() as conn:
        spans = block_store.all_spans(conn)
        traces = [dict(r._mapping) for r in conn.execute(select(schema.traces))]
        stats_rows = [tuple(r) for r in conn.execute(select(
            schema.stats.c.scope, schema.stats.c.resolution, schema.stats.c.bucket, schema.stats.c.service,
            schema.stats.c.operation, schema.stats.c.count, schema.stats.c.error_count, schema.stats.c.total_ns))]
        hist_rows = [tuple(r) for r in conn.execute(select(
            schema.stats_histogram.c.scope, schema.stats_histogram.c.resolution, schema.stats_histogram.c.bucket,
            schema.stats_histogram.c.service, schema.stats_histogram.c.operation,
            func.sum(schema.stats_histogram.c.count)).group_by(
            schema.stats_histogram.c.scope, schema.stats_histogram.c.resolution, schema.stats_histogram.c.bucket,
            schema.stats_histogram.c.service, schema.stats_histogram.c.operation))]
        edge_rows = [tuple(r) for r in conn.execute(select(schema.dependencies))]
        usage = conn.execute(select(func.coalesce(func.sum(schema.llm_usage.c.calls), 0),
                                    func.coalesce(func.sum(schema.llm_usage.c.input_tokens), 0),
                                    func.coalesce(func.sum(schema.llm_usage.c.output_tokens), 0))
                             .where(schema.llm_usage.c.resolution == 60)).one()
        left_pending = conn.execute(select(schema.pending_traces)).fetchall()

    # Every published span stored once, nothing else.
    keys = [(s["trace_id"], s["span_id"]) for s in spans]
    assert len(keys) == len(set(keys))
    assert set(keys) == expected, (len(set(keys) - expected), len(expected - set(keys)))
    assert not left_pending, f"{len(left_pending)} pending traces left, e.g. {left_pending[:3]}"

    by_trace: dict[str, list[dict]] = defaultdict(list)
    for s in spans:
        by_trace[s["trace_id"]].append(s)
    # Every trace finalized with all its spans (late ones included) and assembled.
    assert {t["trace_id"] for t in traces} == set(by_trace)
    wrong = [(t["trace_id"], t["span_count"], len(by_trace[t["trace_id"]])) for t in traces
             if t["span_count"] != len(by_trace[t["trace_id"]])]
    assert not wrong, f"{len(wrong)} traces whose span_count differs from their spans: {wrong[:5]}"
    assert all(s["depth"] is not None for s in spans), "spans left unassembled"

    # Span-scope statistics: one sample per stored span.
    want_span: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in spans:
        for resolution in (60, 3600):
            row = want_span[(resolution, bucket_of(s["start_ns"], resolution), s["service"], s["name"])]
            row[0] += 1
            row[1] += s["status_code"] == "error"
            row[2] += max(s["end_ns"] - s["start_ns"], 0)
    got_span = _nonzero({r[1:5]: list(r[5:]) for r in stats_rows if r[0] == "span"})
    assert got_span == dict(want_span), _diff(got_span, want_span)

    # Trace-scope statistics: one sample per finalized trace, whatever happened before.
    want_trace: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t in traces:
        for resolution in (60, 3600):
            row = want_trace[(resolution, bucket_of(t["start_ns"], resolution), t["root_service"],
                              t["root_operation"])]
            row[0] += 1
            row[1] += t["error_count"] > 0
            row[2] += t["duration_ns"]
    got_trace = _nonzero({r[1:5]: list(r[5:]) for r in stats_rows if r[0] == "trace"})
    assert got_trace == dict(want_trace), _diff(got_trace, want_trace)

    # Histograms hold as many samples as the rows they belong to; error histograms ("e:" scopes) as many as
    # their rows' errors.
    counts = {r[:5]: r[5] for r in stats_rows}
    counts.update({("e:" + r[0], *r[1:5]): r[6] for r in stats_rows})
    bad_hist = [r for r in hist_rows if r[5] != counts.get(r[:5], 0)]
    assert not bad_hist, bad_hist[:5]

    # Dependency edges: those of the stored traces, counted once.
    want_edges: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for trace_spans in by_trace.values():
        for key, values in dependencies.trace_edges(trace_spans).items():
            for i in range(3):
                want_edges[key][i] += values[i]
    got_edges = _nonzero({r[:5]: list(r[5:8]) for r in edge_rows})
    assert got_edges == _nonzero(dict(want_edges)), _diff(got_edges, want_edges)

    # LLM usage: every stored LLM span once.
    llm = [s for spans_ in workload.traces.values() for s in spans_
           if "gen_ai.usage.input_tokens" in s["attributes"] and (s["trace_id"], s["span_id"]) in expected]
    assert tuple(int(v) for v in usage) == (len(llm), sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in llm),
                                             sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in llm))


def _diff(got: dict, want: dict) -> str:
    want = _nonzero(dict(want))
    keys = sorted(set(got) ^ set(want) | {k for k in set(got) & set(want) if got[k] != want[k]}, key=repr)
    return f"{len(keys)} rows differ, e.g. " + "; ".join(f"{k}: got {got.get(k)} want {want.get(k)}"
                                                         for k in keys[:5])


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def rng():
    seed = int(os.environ.get("CONTRAIL_STRESS_SEED") or random.randrange(1 << 30))
    print(f"stress seed: CONTRAIL_STRESS_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
def collectors(tmp_path, redis_url, sqlite_url):
    collectors = Collectors(tmp_path, redis_url, sqlite_url)
    yield collectors
    collectors.kill_all()


NAME = "stress"


def start(collectors: Collectors, **env: str):
    return collectors.start("--consumer-name", NAME, "--log-level", "info", CONTRAIL_READ_COUNT="8",
                            CONTRAIL_REPORT_INTERVAL="0", **env)


def state(engine) -> str:
    """What the database holds, printed at each fault (shown with ``-s``)."""
    with engine.connect() as conn:
        leased = conn.execute(select(func.count()).select_from(schema.pending_traces)
                              .where(schema.pending_traces.c.claimed_by.is_not(None))).scalar_one()
    return (f"spans={span_count(engine)} traces={_count(engine, schema.traces)} "
            f"pending_traces={pending_traces(engine)} leased={leased}")


def kill(process, engine, what: str) -> int:
    process.kill()
    process.wait(10)
    print(f"SIGKILL {what}: {state(engine)}")
    return time.time_ns()


def dead_leases(engine, killed_ns: int) -> int:
    """Pending traces still leased by a collector killed at ``killed_ns`` (its leases end by then + LEASE_NS)."""
    p = schema.pending_traces
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(p).where(
            p.c.claimed_until_ns.is_not(None), p.c.claimed_until_ns <= killed_ns + finalizer.LEASE_NS)).scalar_one()


def drained(client, engine, workload: Workload) -> bool:
    return (span_count(engine) == len(workload.published_keys()) and pending(client) == 0
            and pending_traces(engine) == 0)


def stop_cleanly(collectors: Collectors, process) -> None:
    # Stopping one that has not yet set up its signal handlers would just kill it.
    collectors.wait_until(lambda: " consuming " in collectors.log(process), process, timeout=60,
                          message="the collector running")
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, collectors.log(process)[-4000:]


def assert_no_errors(collectors: Collectors, process) -> None:
    output = collectors.log(process)
    assert "Traceback" not in output, output[-4000:]


# --------------------------------------------------------------------------- tests


def test_sigkill_three_times_with_late_spans_and_duplicates(client, collectors, sqlite_engine, rng):
    workload = Workload(rng)
    first = workload.first_wave(45_000)
    doubled = rng.sample(range(len(first)), max(1, len(first) // 20))
    entries = []
    for index, entry in enumerate(first):
        entries.append(entry)
        if index in doubled:  # published twice in a row: read together, or read ahead into one transaction
            entries.append(entry)
    publish(client, entries)
    stored_total = len(workload.published_keys())

    # 1: killed while storing.
    victim = start(collectors)
    collectors.wait_until(lambda: span_count(sqlite_engine) >= rng.uniform(0.1, 0.5) * stored_total, victim,
                          timeout=120, message="the first collector storing")
    time.sleep(rng.uniform(0, 0.3))
    kill(victim, sqlite_engine, "while storing")

    # 2: restarted; once traces are finalized, their late spans (and some entries again) arrive; killed meanwhile.
    victim = start(collectors)
    collectors.wait_until(lambda: len(finalized_ids(sqlite_engine)) >= 150, victim, timeout=120,
                          message="traces finalized")
    ids = finalized_ids(sqlite_engine)
    targets = sorted(set(rng.sample(ids, 100)) | (set(ids) & set(workload.withheld)))
    late = workload.late_spans(targets)
    again = [first[i] for i in rng.sample(range(len(first)), max(1, len(first) // 10))]
    publish(client, workload.pack([[s] for s in late]) + again)
    time.sleep(rng.uniform(0.05, 1.0))
    kill(victim, sqlite_engine, "amid late spans and redeliveries")

    # 3: restarted and killed again at a random moment, usually amid finalizing and re-finalizing.
    victim = start(collectors)
    collectors.wait_until(lambda: span_count(sqlite_engine) >= stored_total, victim, timeout=120,
                          message="the first wave stored")
    time.sleep(rng.uniform(0, 1.5))
    killed_ns = kill(victim, sqlite_engine, "amid finalization")

    # The last run drains everything. The killed runs' leases are its own (same consumer name): it takes them
    # back as it starts rather than after they expire.
    # (They would last until killed_ns + LEASE_NS, 60 s; the wait below is half that.)
    survivor = start(collectors)
    collectors.wait_until(lambda: dead_leases(sqlite_engine, killed_ns) == 0, survivor,
                          timeout=finalizer.LEASE_NS / 2e9, message="the killed collector's leases taken back")
    collectors.wait_until(lambda: drained(client, sqlite_engine, workload), survivor, timeout=120,
                          message="every span stored, acknowledged and finalized")
    stop_cleanly(collectors, survivor)
    assert_no_errors(collectors, survivor)
    assert client.xlen("contrail:spans:dead") == 0
    check_invariants(sqlite_engine, workload)


def test_sigterm_during_heavy_finalization_hands_back_its_leases(client, collectors, sqlite_engine, rng):
    workload = Workload(rng)
    publish(client, workload.first_wave(30_000))
    # Traces are quiet long before the collector has stored the rest: finalization runs beside ingest.
    collector = start(collectors, CONTRAIL_QUIET_PERIOD="100ms")
    collectors.wait_until(lambda: len(finalized_ids(sqlite_engine)) >= rng.randrange(50, 400), collector,
                          timeout=120, message="finalization under way")
    time.sleep(rng.uniform(0, 0.5))
    stop_cleanly(collectors, collector)
    assert_no_errors(collectors, collector)
    assert pending(client) == 0  # what it read it stored and acknowledged
    with sqlite_engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(schema.pending_traces)
                            .where(schema.pending_traces.c.claimed_by.is_not(None))).scalar_one()
    assert held == 0, f"{held} traces still leased by a collector that stopped cleanly"

    ids = finalized_ids(sqlite_engine)
    late = workload.late_spans(rng.sample(ids, min(50, len(ids))))
    publish(client, workload.pack([[s] for s in late]))
    successor = start(collectors, CONTRAIL_QUIET_PERIOD="100ms")
    collectors.wait_until(lambda: drained(client, sqlite_engine, workload), successor, timeout=120,
                          message="the rest stored and finalized by the successor")
    stop_cleanly(collectors, successor)
    check_invariants(sqlite_engine, workload)


def test_restart_under_the_same_name_takes_back_its_own_leases(client, redis_url, sqlite_url, sqlite_engine, rng):
    """Leases a killed collector held are its successor's at once when it restarts under the same name."""
    workload = Workload(rng)
    publish(client, workload.pack([workload.trace(5) for _ in range(20)]))
    settings = settings_for(redis_url, sqlite_url, consumer_name="same-name")
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: span_count(sqlite_engine) == 100 and pending(client) == 0
                   and pending_traces(sqlite_engine) == 0, timeout=60, message="spans stored and finalized")
    now = time.time_ns()
    stored = span_rows(sqlite_engine)
    with sqlite_engine.begin() as conn:  # undo the finalization, and lease every trace for an hour to the name
        for table in (schema.traces, schema.trace_blocks, schema.trace_operations, schema.trace_tags,
                      schema.trace_tag_numbers, schema.dependencies):
            conn.execute(table.delete())
        conn.execute(schema.stats.delete().where(schema.stats.c.scope == "trace"))
        conn.execute(schema.stats_histogram.delete().where(schema.stats_histogram.c.scope.in_(("trace", "e:trace"))))
        by_trace: dict = {}
        for s in stored:  # staged again, as ingest stages them (no assembly results)
            by_trace.setdefault((s["trace_id"], s["received_ns"]), []).append({k: s[k] for k in staging.SPAN_FIELDS})
        staging.insert(conn, [staging.row(t, spans, received) for (t, received), spans in by_trace.items()])
        conn.execute(schema.pending_traces.insert(), [
            {"trace_id": t, "first_seen_ns": now - 10**10, "last_seen_ns": now - 10**10, "claimed_by": "same-name",
             "claimed_until_ns": now + 3600 * 10**9} for t in workload.traces])
    other = settings_for(redis_url, sqlite_url, consumer_name="someone-else")
    with RunningConsumer(other, sqlite_engine):
        time.sleep(1.0)  # another name must leave the leases alone
        assert pending_traces(sqlite_engine) == 20
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: pending_traces(sqlite_engine) == 0, timeout=30, message="its own leases finalized")
    check_invariants(sqlite_engine, workload)


def _short_timeout_engine(sqlite_url: str, timeout: float):
    """An engine like the collector's, but whose connections give up on a locked database after ``timeout``."""
    open_engine(sqlite_url).dispose()  # schema
    engine = create_engine(sqlite_url, connect_args={"timeout": timeout, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def test_locked_database_loses_and_double_counts_nothing(client, redis_url, sqlite_url, rng, monkeypatch):
    """Another connection holds the database locked longer than the busy timeout, again and again, during
    ingest (reading ahead), finalization and its write thread. (The tests run as root, for whom a read-only
    file is still writable, so a lock is the database error injected.)

    Leases last an hour here: a lease a failed write (or its failed give-back) abandoned would never be
    finalized during the test, so finishing at all shows none was."""
    monkeypatch.setattr(lease_store, "LEASE_NS", 3600 * 10**9)
    engine = _short_timeout_engine(sqlite_url, 0.2)
    path = sqlite_url.removeprefix("sqlite:///")
    workload = Workload(rng)
    first = workload.first_wave(15_000)
    settings = settings_for(redis_url, sqlite_url, quiet_period=0.2, read_count=4)
    stop_faults = threading.Event()
    faults_rng = random.Random(rng.random())
    locked = []

    def inject() -> None:
        blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            while not stop_faults.wait(faults_rng.uniform(0.05, 0.4)):
                blocker.execute("BEGIN EXCLUSIVE")
                stop_faults.wait(faults_rng.uniform(0.3, 1.2))
                blocker.execute("ROLLBACK")
                locked.append(1)
        finally:
            blocker.close()

    injector = threading.Thread(target=inject, daemon=True)
    try:
        with RunningConsumer(settings, engine):
            publish(client, first[: len(first) // 2])
            injector.start()
            wait_until(lambda: len(finalized_ids(engine)) >= 40, timeout=120, message="traces finalized")
            ids = finalized_ids(engine)
            late = workload.late_spans(rng.sample(ids, 40))
            publish(client, first[len(first) // 2:] + workload.pack([[s] for s in late]) + rng.sample(first, 5))
            wait_until(lambda: len(locked) >= 10, timeout=60, message="faults injected")
            stop_faults.set()
            injector.join(10)
            wait_until(lambda: drained(client, engine, workload), timeout=120,
                       message="every span stored, acknowledged and finalized after the faults")
    finally:
        stop_faults.set()
        if injector.is_alive():
            injector.join(10)
    check_invariants(engine, workload)
    engine.dispose()


@pytest.mark.postgres
def test_collectors_stealing_each_others_entries_on_postgres_count_everything_once(client, tmp_path, redis_url,
                                                                                    postgres_url, rng):
    """Two collectors on PostgreSQL whose claim idle is shorter than a batch takes: each claims (XAUTOCLAIM)
    entries the other is still storing, so the same spans are inserted by both at once, between one's
    statistics computed ahead and its insert. One is killed and restarted; late spans and duplicates arrive."""
    engine = open_engine(postgres_url)
    collectors = Collectors(tmp_path, redis_url, postgres_url)
    try:
        workload = Workload(rng)
        first = workload.first_wave(20_000)
        publish(client, first + rng.sample(first, len(first) // 10))

        def run(name: str):
            return collectors.start("--consumer-name", name, CONTRAIL_READ_COUNT="24", CONTRAIL_CLAIM_IDLE="50ms",
                                    CONTRAIL_REPORT_INTERVAL="0")

        a, b = run("pg-a"), run("pg-b")
        collectors.wait_until(lambda: len(finalized_ids(engine)) >= 60, a, timeout=120, message="traces finalized")
        killed_ns = kill(a, engine, "one of two on PostgreSQL")
        ids = finalized_ids(engine)
        late = workload.late_spans(rng.sample(ids, 60))
        publish(client, workload.pack([[s] for s in late]) + rng.sample(first, 5))
        a = run("pg-a")
        collectors.wait_until(lambda: dead_leases(engine, killed_ns) == 0, a, timeout=finalizer.LEASE_NS / 2e9,
                              message="the killed collector's leases taken back")
        collectors.wait_until(lambda: drained(client, engine, workload), a, timeout=120,
                              message="every span stored, acknowledged and finalized")
        for process in (a, b):
            stop_cleanly(collectors, process)
        stolen = sum(collectors.log(p).count("claimed ") for p in collectors.processes)
        print(f"claims logged: {stolen}")
        assert client.xlen("contrail:spans:dead") == 0
        check_invariants(engine, workload)
    finally:
        collectors.kill_all()
        engine.dispose()


def test_two_consumers_storing_the_same_entries_at_once_count_them_once(client, redis_url, database_url, rng):
    """Consumer b takes over (XCLAIM, as XAUTOCLAIM does once they look idle) part of the entries consumer a
    has just read, and both store them at the same moment, each having computed its statistics ahead of its
    insert and reading ahead meanwhile; late spans of finalized traces arrive the same way."""
    engine = open_engine(database_url)
    settings = settings_for(redis_url, database_url, read_count=12)
    ensure_group(client, settings)
    workload = Workload(rng)
    a, b = (StreamConsumer(settings, engine, client, name) for name in ("a", "b"))

    def race() -> None:
        while True:
            got_a = a.read_new(wait=False)
            if not got_a:
                return
            taken = [e.id for e in rng.sample(got_a, rng.randrange(1, len(got_a) + 1))]
            got_b = [Entry(i.decode(), fields) for i, fields in
                     client.xclaim(settings.stream, settings.consumer_group, "b", 0, taken)]
            got_b += b.read_new(wait=False)
            start = threading.Barrier(2)
            errors: list[BaseException] = []

            def run(consumer, entries):
                try:
                    start.wait()
                    consumer.process(entries, read_ahead=True)
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=args) for args in ((a, got_a), (b, got_b))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not errors, errors

    def finalize_all() -> None:
        while finalizer.finalize_ready(engine, settings, "f", now_ns=time.time_ns() + 10**10):
            pass

    try:
        first = workload.first_wave(8_000)
        publish(client, first + rng.sample(first, len(first) // 5))
        skipped = consumer_stats()["duplicates_skipped"]
        race()
        assert consumer_stats()["duplicates_skipped"] > skipped  # the two did store the same spans
        finalize_all()
        late = workload.late_spans(rng.sample(finalized_ids(engine), 40))
        publish(client, workload.pack([[s] for s in late]) + rng.sample(first, 3))
        race()
        finalize_all()
        assert pending(client) == 0
        check_invariants(engine, workload)
    finally:
        engine.dispose()
