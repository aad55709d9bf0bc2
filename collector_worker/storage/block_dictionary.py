"""A zstd dictionary trained on a database's own blocks, so small blocks compress like big ones.

A block of a 10-span trace is too small for zstd to find much to repeat in
it; attribute keys, service and operation names and resource values repeat
across blocks instead. The first blocks a finalizer writes to a database are
compressed plainly and kept (up to ``SAMPLE_BLOCKS``) as training samples;
from them a dictionary of ``DICTIONARY_BYTES`` is trained, stored in
``block_dictionaries`` (in the same transaction as the first blocks that use
it, so no block ever names a dictionary that is not stored) and used for every
later block. A finalizer that finds a dictionary stored uses the newest one
instead of training its own. Dictionaries are never deleted: each block names
its dictionary's id in its zstd frame and reads back with it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

import zstandard
from sqlalchemy.engine import Connection, Engine

from . import blocks
from .schema import block_dictionaries

log = logging.getLogger(__name__)

SAMPLE_BLOCKS = 1000  # blocks trained on
DICTIONARY_BYTES = 32 * 1024


class _State:
    __slots__ = ("current", "stored", "looked", "samples", "lock")

    def __init__(self) -> None:
        self.current: zstandard.ZstdCompressionDict | None = None
        self.stored = False  # the current dictionary is committed in this database
        self.looked = False  # the database was searched for a dictionary
        self.samples: list[bytes] = []
        self.lock = threading.Lock()


_states: "weakref.WeakKeyDictionary[Engine, _State]" = weakref.WeakKeyDictionary()
_states_guard = threading.Lock()


def _state(engine: Engine) -> _State:
    with _states_guard:
        found = _states.get(engine)
        if found is None:
            found = _states[engine] = _State()
        return found


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _remember(dict_id: int, data: bytes) -> zstandard.ZstdCompressionDict:
    found = blocks.dictionaries.get(dict_id)
    if found is None:
        found = blocks.dictionaries[dict_id] = zstandard.ZstdCompressionDict(data)
    return found


def for_encoding(conn: Connection) -> zstandard.ZstdCompressionDict | None:
    """The dictionary new blocks are compressed with (None until one is trained or found); read-only ``conn``."""
    state = _state(conn.engine)
    with state.lock:
        if state.current is None and not state.looked:
            row = conn.exec_driver_sql(f"SELECT id, data FROM {block_dictionaries.name} "
                                       f"ORDER BY created_ns DESC, id DESC LIMIT 1").first()
            state.looked = True
            if row is not None:
                state.current, state.stored = _remember(int(row[0]), bytes(row[1])), True
        elif state.current is not None and not state.stored:
            state.stored = conn.exec_driver_sql(
                f"SELECT 1 FROM {block_dictionaries.name} WHERE id = {_mark(conn)}",
                (state.current.dict_id(),)).first() is not None
        return state.current


def add_samples(engine: Engine, bodies: list[bytes]) -> None:
    """Keep block bodies compressed without a dictionary; train one once there are enough."""
    state = _state(engine)
    with state.lock:
        if state.current is not None or len(state.samples) >= SAMPLE_BLOCKS:
            return
        state.samples.extend(bodies[:SAMPLE_BLOCKS - len(state.samples)])
        if len(state.samples) < SAMPLE_BLOCKS:
            return
        samples, state.samples = state.samples, []
    try:
        trained = zstandard.train_dictionary(DICTIONARY_BYTES, samples, level=blocks.LEVEL)
    except zstandard.ZstdError as exc:  # too little to learn from: blocks stay plainly compressed
        log.info("no block dictionary trained: %s", exc)
        return
    trained = _remember(trained.dict_id(), trained.as_bytes())
    with state.lock:
        if state.current is None:
            state.current, state.stored = trained, False


def store(conn: Connection, dictionary: zstandard.ZstdCompressionDict | None) -> None:
    """Store ``dictionary`` in the write transaction of the blocks compressed with it (once committed, a no-op)."""
    if dictionary is None or _state(conn.engine).stored:
        return
    m = _mark(conn)
    conn.exec_driver_sql(f"INSERT INTO {block_dictionaries.name} (id, data, created_ns) VALUES ({m},{m},{m}) "
                         f"ON CONFLICT (id) DO NOTHING", (dictionary.dict_id(), dictionary.as_bytes(), time.time_ns()))


def load(conn: Connection, datas) -> None:
    """Make sure the dictionaries of these blocks are loaded (a block names its dictionary in its frame)."""
    wanted = {blocks.dictionary_id(data) for data in datas} - {0} - set(blocks.dictionaries)
    for dict_id in sorted(wanted):
        row = conn.exec_driver_sql(f"SELECT data FROM {block_dictionaries.name} WHERE id = {_mark(conn)}",
                                   (dict_id,)).first()
        if row is not None:
            _remember(dict_id, bytes(row[0]))
