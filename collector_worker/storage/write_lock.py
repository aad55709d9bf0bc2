"""One writer at a time per process on SQLite: the lock ingest, the finalizer and retention take turns at.

On SQLite one process runs ingest and finalization in two threads over one
database with a single writer; :func:`write_lock` serializes their write
transactions inside the process, so neither has to wait in SQLite's busy
handler (which sleeps) nor fails to upgrade a read into a write.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

from sqlalchemy.engine import Engine

_write_locks: "weakref.WeakKeyDictionary[Engine, threading.RLock]" = weakref.WeakKeyDictionary()
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine) -> Any:
    """A context manager held around write transactions of this process on ``engine``.

    SQLite: one lock per engine, so the ingest and finalizer threads take turns
    at the database's single write lock. Other databases take row locks of
    their own: nothing is held.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _write_locks_guard:
        lock = _write_locks.get(engine)
        if lock is None:
            lock = _write_locks[engine] = threading.RLock()
    return lock


def take_write_lock(lock: Any, meanwhile: Any = None) -> None:
    """Enter ``lock`` (from :func:`write_lock`); if another thread holds it, call ``meanwhile()`` first.

    The caller does useful work (reads on, assembles the next batch) while the
    other writer finishes instead of waiting idle, then waits. Leave with
    ``lock.__exit__(None, None, None)``.
    """
    if meanwhile is None or not hasattr(lock, "acquire"):  # nothing to do meanwhile, or no lock at all
        lock.__enter__()
    elif not lock.acquire(blocking=False):
        meanwhile()
        lock.acquire()
