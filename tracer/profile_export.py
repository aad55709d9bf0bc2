"""Finished profiles → ``kind=profiles`` stream entries, on a thread of their own.

The thread that finishes a profile only appends its row to a bounded deque (full: the profile is
dropped and counted). A daemon thread, started with the first profile, encodes up to
``PROFILES_PER_ENTRY`` rows per entry and pushes them to the span stream; while Redis is unreachable
the entries go to a disk spool of their own (``<spool_dir>/profiles``) and are replayed first at the
next export that reaches Redis, as metrics are. A tracer without the redis exporter has no stream to send
profiles to: they are counted as dropped.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from typing import Any

from . import profile_codec
from .settings import TracerSettings
from .spool import DiskSpool

PROFILES_PER_ENTRY = 32
MAX_QUEUED = 256  # finished profiles waiting for the export thread; more are dropped and counted
EXPORT_DELAY = 1.0  # seconds the export thread waits for more profiles before it sends what it has


class ProfileExporter:
    """Ships finished profiles; ``submit`` never blocks and never raises."""

    def __init__(self, settings: TracerSettings, stream: Any = None, spool: DiskSpool | None = None,
                 enabled: bool = True) -> None:
        self.enabled = enabled  # False: no span stream to send to (no redis exporter); profiles are counted, dropped
        self.profiles_exported = 0
        self.profiles_dropped = 0  # queue full, not encodable, or no stream
        self.export_errors = 0
        self.last_export_error: str | None = None
        if not enabled:
            self.spool = None
            return
        if stream is None:
            from .export import RedisStreamExporter

            stream = RedisStreamExporter(settings)
        self.settings = settings
        self.stream = stream
        self.spool = spool if spool is not None else DiskSpool(
            os.path.join(settings.resolved_spool_dir, "profiles"), settings.spool_max_bytes)
        self.queue: deque = deque()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopped = False

    def _resource(self) -> tuple[str, dict]:
        return (self.settings.service_name, {"service.name": self.settings.service_name,
                                             "host.name": socket.gethostname(), "process.pid": os.getpid()})

    def submit(self, row: list[Any]) -> None:
        if not self.enabled:
            self.profiles_dropped += 1
            return
        if self._pid != os.getpid():  # forked: the parent's thread and locks are not ours
            self._pid, self._thread = os.getpid(), None
            self._cond, self._send_lock = threading.Condition(), threading.Lock()
            self.queue.clear()
            try:
                getattr(self.stream, "forget", self.stream.reset)()
            except Exception:
                pass
            self.spool.after_fork()
        if self._stopped or len(self.queue) >= MAX_QUEUED:
            self.profiles_dropped += 1
            return
        self.queue.append(row)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="contrail-profile-export", daemon=True)
            self._thread.start()
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        while not self._stopped:
            with self._cond:
                if not self.queue:
                    self._cond.wait(EXPORT_DELAY)
            self.send()

    def send(self) -> bool:
        """Encode and push what is queued (and the spool); True when it all reached Redis."""
        with self._send_lock:
            rows = []
            while self.queue and len(rows) < MAX_QUEUED:
                rows.append(self.queue.popleft())
            service, resource = self._resource()
            entries = []
            for start in range(0, len(rows), PROFILES_PER_ENTRY):
                chunk = rows[start:start + PROFILES_PER_ENTRY]
                try:
                    entries.append((profile_codec.encode_profiles(chunk, [(service, resource)]), len(chunk)))
                except Exception as exc:  # noqa: BLE001 - a value msgpack refuses: counted
                    self.profiles_dropped += len(chunk)
                    self._note(exc)
            return self._deliver(entries)

    def _deliver(self, entries: list[tuple[dict, int]]) -> bool:
        try:
            if self.spool.pending():
                self.spool.replay(self._push)
            if entries:
                self._push([fields for fields, _ in entries])
            return True
        except Exception as exc:  # noqa: BLE001 - Redis down or refusing: keep them for the next round
            self._note(exc)
            for fields, count in entries:
                self.spool.append(fields, count)
            return False

    def _push(self, fields_list: list[dict]) -> None:
        self.stream.push(fields_list)
        self.profiles_exported += sum(int(fields.get(b"n") or fields.get("n") or 0) for fields in fields_list)

    def _note(self, exc: BaseException) -> None:
        self.export_errors += 1
        self.last_export_error = f"{type(exc).__name__}: {exc}"

    def flush(self) -> bool:
        return self.enabled and self.send() and not self.spool.pending()

    def shutdown(self) -> None:
        if not self.enabled:
            return
        self.send()
        self._stopped = True
        with self._cond:
            self._cond.notify()
        self.spool.close()
        try:
            self.stream.shutdown()
        except Exception:
            pass

    def info(self) -> dict[str, Any]:
        spool = self.spool
        return {"profiles_exported": self.profiles_exported,
                "profiles_dropped": self.profiles_dropped + (spool.spans_dropped if spool else 0),
                "profiles_spooled": spool.spans_spooled if spool else 0, "profile_export_errors": self.export_errors,
                "last_profile_export_error": self.last_export_error}
