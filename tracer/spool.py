"""A bounded on-disk spool of encoded stream entries, kept while Redis is unreachable.

Entries are appended as length-prefixed msgpack records to segment files
named ``<created_ns>-<pid>-<seq>.seg`` so that several processes can share one
directory and sorting names gives the order of writing. A process replays its
own segments and those left behind by processes that are no longer alive
(claimed by an atomic rename, so two survivors never replay the same file).
A segment is deleted once every record in it has been pushed.

When the spool is full, the *newest* entry is dropped and counted: what is
already on disk keeps its order and nothing replayed is ever rewritten.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import Any, Callable, Mapping, Sequence

import msgpack

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
_HEADER = struct.Struct(">I")
REPLAY_CHUNK = 32  # entries pushed per round trip while replaying


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _owner(name: str) -> int | None:
    parts = name[:-4].split("-")
    if len(parts) < 3 or not name.endswith(".seg"):
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


class DiskSpool:
    """Append-only segments of encoded entries with in-order replay."""

    def __init__(self, directory: str, max_bytes: int, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.entries_spooled = 0
        self.spans_spooled = 0
        self.entries_dropped = 0
        self.spans_dropped = 0
        self.records_corrupt = 0
        self._reset_process_state()
        self.bytes = self._scan_bytes()
        self._pending = self._has_replayable()

    # ------------------------------------------------------------ process state
    def _reset_process_state(self) -> None:
        self.pid = os.getpid()
        self._seq = 0
        self._writer = None
        self._writer_path: str | None = None
        self._writer_size = 0
        self._offsets: dict[str, int] = {}

    def after_fork(self) -> None:
        """In a forked child: forget the parent's open segment; the parent replays its own files."""
        writer = self._writer
        self._reset_process_state()
        if writer is not None:
            try:
                writer.close()  # the child's copy of the descriptor; unbuffered, so nothing is rewritten
            except OSError:
                pass
        self.entries_spooled = self.spans_spooled = self.entries_dropped = self.spans_dropped = 0
        self._pending = False

    def _segments(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        except FileNotFoundError:
            return []

    def _scan_bytes(self) -> int:
        total = 0
        for name in self._segments():
            try:
                total += os.path.getsize(os.path.join(self.directory, name))
            except OSError:
                pass
        return total

    def _has_replayable(self) -> bool:
        for name in self._segments():
            owner = _owner(name)
            if owner is not None and (owner == self.pid or not _pid_alive(owner)):
                return True
        return False

    # ------------------------------------------------------------ writing
    def pending(self) -> bool:
        """True when this process has spooled entries (or adopted leftovers) not yet replayed."""
        return self._pending

    def append(self, fields: Mapping[bytes, bytes], spans: int = 0) -> bool:
        """Write one encoded entry; False (and counted) if the spool is full or the disk refuses."""
        try:
            record = msgpack.packb(dict(fields), use_bin_type=True)
            frame = _HEADER.pack(len(record)) + record
            if self.bytes + len(frame) > self.max_bytes:
                self.entries_dropped += 1
                self.spans_dropped += spans
                return False
            if self._writer is None or self._writer_size >= self.segment_bytes:
                self._open_segment()
            self._writer.write(frame)
        except OSError as exc:
            logger.warning("contrail: cannot write spool in %s: %s", self.directory, exc)
            self.entries_dropped += 1
            self.spans_dropped += spans
            return False
        self._writer_size += len(frame)
        self.bytes += len(frame)
        self.entries_spooled += 1
        self.spans_spooled += spans
        self._pending = True
        return True

    def _open_segment(self) -> None:
        self._close_writer()
        os.makedirs(self.directory, exist_ok=True)
        self._seq += 1
        name = f"{time.time_ns():020d}-{self.pid}-{self._seq:06d}.seg"
        path = os.path.join(self.directory, name)
        self._writer = open(path, "ab", buffering=0)
        self._writer_path = path
        self._writer_size = 0

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
        self._writer = None
        self._writer_path = None
        self._writer_size = 0

    def close(self) -> None:
        self._close_writer()

    # ------------------------------------------------------------ replay
    def replay(self, push: Callable[[Sequence[dict]], None]) -> int:
        """Push every replayable entry in write order; delete segments as they empty.

        ``push`` raises when the destination is unreachable; replay then stops
        and resumes from the same record next time. Returns entries pushed.
        """
        self._close_writer()  # new entries go to a fresh segment behind the ones replayed
        pushed = 0
        for name in self._segments():
            path = self._claim(name)
            if path is None:
                continue
            pushed += self._replay_segment(path, push)
        self._pending = self._has_replayable()
        return pushed

    def _claim(self, name: str) -> str | None:
        owner = _owner(name)
        if owner is None:
            return None
        path = os.path.join(self.directory, name)
        if owner == self.pid:
            return path
        if _pid_alive(owner):
            return None
        created, _, rest = name[:-4].split("-", 2)
        claimed = os.path.join(self.directory, f"{created}-{self.pid}-{rest}.{owner}.seg")
        try:
            os.rename(path, claimed)
        except OSError:  # another survivor claimed it first
            return None
        return claimed

    def _replay_segment(self, path: str, push: Callable[[Sequence[dict]], None]) -> int:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return 0
        offset = self._offsets.get(path, 0)
        pushed = 0
        chunk: list[dict] = []
        chunk_end = offset
        while True:
            record, next_offset = self._read_record(data, chunk_end)
            if record is None:
                break
            if record is not False:
                chunk.append(record)
            chunk_end = next_offset
            if len(chunk) >= REPLAY_CHUNK:
                push(chunk)
                pushed += len(chunk)
                chunk = []
                self._offsets[path] = offset = chunk_end
        if chunk:
            push(chunk)
            pushed += len(chunk)
        self._offsets.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.bytes = max(0, self.bytes - len(data))
        return pushed

    def _read_record(self, data: bytes, offset: int) -> tuple[Any, int]:
        """(record, next offset); (None, _) at the end or at a torn tail; (False, next) for a corrupt record."""
        if offset + _HEADER.size > len(data):
            if offset < len(data):
                self.records_corrupt += 1
            return None, offset
        (length,) = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if end > len(data):
            self.records_corrupt += 1
            return None, offset
        try:
            record = msgpack.unpackb(data[start:end], raw=False, strict_map_key=False)
        except Exception:
            self.records_corrupt += 1
            return False, end
        if not isinstance(record, dict):
            self.records_corrupt += 1
            return False, end
        return record, end
