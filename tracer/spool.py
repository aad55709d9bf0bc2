"""A bounded on-disk spool of encoded stream entries, kept while Redis is unreachable.

Entries are appended as checksummed msgpack records to segment files named
``<created_ns>-<pid>-<seq>.seg`` so that several processes can share one
directory and sorting names gives the order of writing. A process replays its
own segments and those left behind by processes that are no longer alive
(claimed by an atomic rename, so two survivors never replay the same file).
A segment is deleted once every record in it has been pushed.

Segment format: the 8-byte magic ``CTSPOOL2`` then records, each a 10-byte
header (marker ``0xC5A1``, payload length, CRC-32 of length and payload; big
endian) and the msgpack payload. A write the disk refuses or cuts short is
truncated back to the last whole record and its entry counted as dropped with
the reason, so later records stay readable. On replay a record that fails its
checksum is skipped and counted, and reading resumes at the next marker whose
record checks out. Segments without the magic were written by an older
Contrail (records framed by a bare 4-byte length); they are replayed by the
old reader, so a spool that survives an upgrade is not lost.

The size bound holds for the directory, not per process: appends take an
exclusive ``flock`` on the directory and add up every segment there first.
When the spool is full, the *newest* entry is dropped and counted: what is
already on disk keeps its order and nothing replayed is ever rewritten.
Segments are created 0600 in a 0700 directory (``tracer.private_files``).
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import msgpack

from .private_files import FILE_MODE, make_private_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the bound is then per process
    fcntl = None

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
MAGIC = b"CTSPOOL2"
MARKER = b"\xc5\xa1"
_RECORD = struct.Struct(">2sII")  # marker, payload length, crc32(length + payload)
_LENGTH = struct.Struct(">I")
_LEGACY_HEADER = _LENGTH  # segments without MAGIC: a bare length before each record
REPLAY_CHUNK = 32  # entries pushed per round trip while replaying


def frame_record(payload: bytes) -> bytes:
    """One record as written to a segment: header and payload."""
    length = _LENGTH.pack(len(payload))
    return _RECORD.pack(MARKER, len(payload), zlib.crc32(payload, zlib.crc32(length))) + payload


def _record_at(data: bytes, offset: int) -> bytes | None:
    """The payload of the record at ``offset`` if its header and checksum check out."""
    end_of_header = offset + _RECORD.size
    if end_of_header > len(data):
        return None
    marker, length, crc = _RECORD.unpack_from(data, offset)
    if marker != MARKER or end_of_header + length > len(data):
        return None
    payload = data[end_of_header:end_of_header + length]
    if zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length))) != crc:
        return None
    return payload


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
        self._reset_counters()
        self.records_corrupt = 0
        self._reset_process_state()
        self.bytes = self._scan_bytes()
        self._pending = self._has_replayable()

    # ------------------------------------------------------------ process state
    def _reset_counters(self) -> None:
        self.entries_spooled = self.spans_spooled = 0
        self.entries_dropped_full = self.spans_dropped_full = 0  # over max_bytes
        self.entries_dropped_error = self.spans_dropped_error = 0  # the disk refused or cut the write short
        self.last_error: str | None = None

    @property
    def entries_dropped(self) -> int:
        return self.entries_dropped_full + self.entries_dropped_error

    @property
    def spans_dropped(self) -> int:
        return self.spans_dropped_full + self.spans_dropped_error

    def _reset_process_state(self) -> None:
        self.pid = os.getpid()
        self._seq = 0
        self._fd: int | None = None
        self._writer_size = 0
        self._lock_fd: int | None = None
        self._offsets: dict[str, int] = {}

    def after_fork(self) -> None:
        """In a forked child: forget the parent's open segment; the parent replays its own files."""
        inherited = (self._fd, self._lock_fd)
        self._reset_process_state()
        for fd in inherited:  # the child's copies; closing them leaves the parent's file and lock alone
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._reset_counters()
        self._pending = False

    def _segments(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        except OSError:  # absent or unusable: appends then fail and are counted with the reason
            return []

    def _scan_bytes(self) -> int:
        """Bytes in every segment of the directory, whichever process wrote it."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".seg"):
                        try:
                            total += entry.stat().st_size
                        except OSError:  # replayed and deleted meanwhile
                            pass
        except OSError:  # absent or unusable, as in _segments
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
        """Write one encoded entry; False (and counted, with the reason) if the spool is full or the disk refuses."""
        try:
            frame = frame_record(msgpack.packb(dict(fields), use_bin_type=True))
            make_private_dir(self.directory)
            with self._directory_locked():
                self.bytes = self._scan_bytes()
                new_segment = self._fd is None or self._writer_size >= self.segment_bytes
                if self.bytes + len(frame) + (len(MAGIC) if new_segment else 0) > self.max_bytes:
                    self.entries_dropped_full += 1
                    self.spans_dropped_full += spans
                    return False
                if new_segment:
                    self._open_segment()
                self._write_frame(frame)
        except OSError as exc:
            if self.last_error is None:
                logger.warning("contrail: cannot write spool in %s (counted as dropped): %s", self.directory, exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.entries_dropped_error += 1
            self.spans_dropped_error += spans
            return False
        self.bytes += len(frame)
        self.entries_spooled += 1
        self.spans_spooled += spans
        self._pending = True
        return True

    def _directory_locked(self) -> "_FileLock":
        if self._lock_fd is None and fcntl is not None:
            self._lock_fd = os.open(self.directory, os.O_RDONLY)  # the directory itself: no lock file to leave behind
        return _FileLock(self._lock_fd)

    def _write_frame(self, frame: bytes) -> None:
        """Write all of ``frame`` or nothing: a refused or short write is cut back to the last whole record."""
        good = self._writer_size
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                if written <= 0:
                    raise OSError("short write: the disk took no more bytes")
                view = view[written:]
        except OSError as exc:
            self._truncate_to(good)
            if view.nbytes < len(frame):
                raise OSError(f"short write ({len(frame) - view.nbytes} of {len(frame)} bytes): {exc}") from exc
            raise
        self._writer_size += len(frame)

    def _truncate_to(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError:  # the torn record stays; replay skips it by its checksum. Write elsewhere from now on.
            self._close_writer()

    def _open_segment(self) -> None:
        self._close_writer()
        self._seq += 1
        name = f"{time.time_ns():020d}-{self.pid}-{self._seq:06d}.seg"
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            if os.write(fd, MAGIC) != len(MAGIC):
                raise OSError("short write of the segment header")
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd = fd
        self._writer_size = len(MAGIC)

    def _close_writer(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._writer_size = 0

    def close(self) -> None:
        self._close_writer()
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    # ------------------------------------------------------------ replay
    def replay(self, push: Callable[[Sequence[dict]], None]) -> int:
        """Push every replayable entry in write order; delete segments as they empty.

        ``push`` raises when the destination is unreachable; replay then stops
        and resumes from the same record next time. Returns entries pushed.
        """
        self._close_writer()  # new entries go to a fresh segment behind the ones replayed
        pushed = 0
        try:
            for name in self._segments():
                path = self._claim(name)
                if path is None:
                    continue
                pushed += self._replay_segment(path, push)
        finally:
            self.bytes = self._scan_bytes()
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
        records = self._records if data.startswith(MAGIC) else self._legacy_records
        pushed = 0
        chunk: list[dict] = []
        for record, next_offset in records(data, self._offsets.get(path, 0)):
            chunk.append(record)
            if len(chunk) >= REPLAY_CHUNK:
                push(chunk)
                pushed += len(chunk)
                chunk = []
                self._offsets[path] = next_offset
        if chunk:
            push(chunk)
            pushed += len(chunk)
        self._offsets.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return pushed

    def _decoded(self, payload: bytes) -> dict | None:
        try:
            record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:
            record = None
        if not isinstance(record, dict):
            self.records_corrupt += 1
            return None
        return record

    def _records(self, data: bytes, offset: int) -> Iterator[tuple[dict, int]]:
        """(record, offset after it) from ``offset``; a damaged stretch is counted once and skipped."""
        offset = max(offset, len(MAGIC))
        while offset < len(data):
            payload = _record_at(data, offset)
            if payload is None:
                self.records_corrupt += 1
                offset = self._next_record(data, offset + 1)
                continue
            offset += _RECORD.size + len(payload)
            record = self._decoded(payload)
            if record is not None:
                yield record, offset

    @staticmethod
    def _next_record(data: bytes, start: int) -> int:
        """The offset of the next record whose checksum holds, or the end of ``data``."""
        while True:
            found = data.find(MARKER, start)
            if found < 0:
                return len(data)
            if _record_at(data, found) is not None:
                return found
            start = found + 1

    def _legacy_records(self, data: bytes, offset: int) -> Iterator[tuple[dict, int]]:
        """Records of a segment written before checksums: a bare length, so a damaged record ends the file."""
        while offset + _LEGACY_HEADER.size <= len(data):
            (length,) = _LEGACY_HEADER.unpack_from(data, offset)
            start, end = offset + _LEGACY_HEADER.size, offset + _LEGACY_HEADER.size + length
            if end > len(data):
                break
            offset = end
            record = self._decoded(data[start:end])
            if record is not None:
                yield record, offset
        if offset < len(data):  # a torn tail
            self.records_corrupt += 1


class _FileLock:
    """``with`` an exclusive flock on an open descriptor (nothing when flock is unavailable)."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def __enter__(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
