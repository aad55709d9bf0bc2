"""Sampling profiles of code, attached to spans: ``tracing.profile`` and the slow-span mode.

``with tracing.profile("name"):`` (or ``@tracing.profile``) registers the running thread with one
sampler thread per process. Every ``profile_interval`` that thread reads the stacks of the registered
threads with :func:`sys._current_frames` (public API) and counts each stack, folded root first and
cut at the frame that entered the profile, so the profile shows the profiled code and what it called.
The application thread pays only for registering and, at the end, for handing the counts to the
export thread; nothing at all while no profile runs (no thread, no hook).

With ``profile_slow_threshold`` set, :class:`SlowSpanProfiler` (a span processor) notes each span's
thread and start, and the same sampler looks, at the low rate ``profile_slow_interval``, at threads
whose innermost open span has run longer than the threshold: a sample goes to the innermost span older
than the threshold. Spans of asyncio tasks share their thread: a sample of one thread goes to the
span started last on it, which for interleaved tasks is approximate.

Profiles are bounded (:mod:`tracer.profile_codec`): at most ``MAX_STACKS`` distinct stacks of at most
``MAX_DEPTH`` frames; samples whose stack did not fit are counted as ``dropped``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

from .profile_codec import MAX_PROFILE_CHARS, MAX_STACK_CHARS, MAX_STACKS

logger = logging.getLogger(__name__)

MAX_DEPTH = 64  # frames kept of one stack: the 40 nearest the root, a marker, the 23 nearest the leaf
_ROOT_FRAMES, _LEAF_FRAMES = 40, 23
MAX_WALK = 2048  # frames looked at per sample before the walk gives up finding the profile's anchor
OUTSIDE = "[outside the profiled code]"  # a sample taken while the profiled frame was not on the thread's stack
_labels: dict[Any, str] = {}


def frame_label(code: Any) -> str:
    """``qualified.name (dir/file.py:first_line)`` of a code object, cached per code object."""
    label = _labels.get(code)
    if label is None:
        filename = code.co_filename
        short = "/".join(filename.replace("\\", "/").rsplit("/", 2)[-2:])
        name = getattr(code, "co_qualname", code.co_name)
        label = f"{name} ({short}:{code.co_firstlineno})".replace(";", ":")
        if len(_labels) < 100_000:
            _labels[code] = label
    return label


def fold(frame: Any, anchors: Any, skip_anchor: bool = False) -> str:
    """The stack of ``frame`` root first, ``;``-joined, from the first frame found in ``anchors`` (a frame, or
    a set of frame ids) down to the leaf; :data:`OUTSIDE` when no anchor is on the stack."""
    labels = []
    single = not isinstance(anchors, (set, frozenset))
    walked = 0
    while frame is not None and walked < MAX_WALK:
        if (frame is anchors) if single else (id(frame) in anchors):
            if not skip_anchor:
                labels.append(frame_label(frame.f_code))
            break
        labels.append(frame_label(frame.f_code))
        frame = frame.f_back
        walked += 1
    else:
        return OUTSIDE
    labels.reverse()
    if len(labels) > MAX_DEPTH:
        cut = len(labels) - _ROOT_FRAMES - _LEAF_FRAMES
        labels = labels[:_ROOT_FRAMES] + [f"[{cut} frames]"] + labels[-_LEAF_FRAMES:]
    return ";".join(labels) or OUTSIDE


def _discard(by_thread: dict[int, list], thread_id: int, item: Any) -> None:
    """Take ``item`` out of its thread's list, and the list out of ``by_thread`` once it is empty."""
    items = by_thread.get(thread_id)
    if items is None:
        return
    try:
        items.remove(item)
    except ValueError:
        pass
    if not items:
        del by_thread[thread_id]


class Capture:
    """The stack counts of one profile in progress; added to only by the sampler thread."""

    __slots__ = ("trace_id", "span_id", "operation", "name", "mode", "anchors", "skip_anchor", "start_ns",
                 "interval", "stacks", "samples", "dropped", "span", "thread_id", "kept", "last")

    def __init__(self, trace_id: str, span_id: str, operation: str | None, name: str, mode: str, anchors: Any,
                 interval: float, skip_anchor: bool = False, span: Any = None, thread_id: int | None = None) -> None:
        self.trace_id, self.span_id, self.operation, self.name, self.mode = trace_id, span_id, operation, name, mode
        self.anchors, self.skip_anchor, self.interval, self.span = anchors, skip_anchor, interval, span
        self.start_ns = time.time_ns()
        self.stacks: dict[str, int] = {}
        self.samples = 0
        self.dropped = 0
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.last = time.monotonic()  # of the previous sample
        self.kept: Any = None  # frames whose ids are anchors, kept alive so that no other frame takes their id

    def add(self, frame: Any, now: float) -> None:
        """Count the stack of ``frame`` for the intervals passed since this profile's previous sample (or its
        start), so code that holds the interpreter lock, which delays the sampler, is not undercounted."""
        weight = max(1, round((now - self.last) / self.interval))
        self.last = now
        self.samples += weight
        stack = fold(frame, self.anchors, self.skip_anchor)
        stacks = self.stacks
        if stack in stacks:
            stacks[stack] += weight
        elif len(stacks) < MAX_STACKS and len(stack) <= MAX_STACK_CHARS:
            stacks[stack] = weight
        else:
            self.dropped += weight

    def row(self, end_ns: int) -> list[Any]:
        """The codec row (without its resource index, which the exporter sets); the most frequent stacks first,
        as many as fit :data:`MAX_PROFILE_CHARS`."""
        kept, chars, dropped = [], 0, self.dropped
        for stack, count in sorted(self.stacks.items(), key=lambda item: -item[1]):
            chars += len(stack)
            if chars > MAX_PROFILE_CHARS:
                dropped += count
                continue
            kept.append([stack, count])
        return [self.trace_id, self.span_id, self.operation, self.name, self.mode, 0, self.start_ns,
                max(end_ns, self.start_ns), int(self.interval * 1e9), self.samples, kept, dropped]


class Sampler:
    """One daemon thread that samples the stacks of registered threads; runs only while there is work."""

    def __init__(self, interval: float, slow: "SlowSpanProfiler | None" = None) -> None:
        self.interval = interval
        self.slow = slow
        self.captures: dict[int, list[Capture]] = {}
        self.lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = False  # the thread waits for work: a new profile wakes it
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.samples_taken = 0

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():  # a forked child has no sampler thread
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self.lock, self._wake = threading.Lock(), threading.Event()
                self.captures = {thread: captures for thread, captures in self.captures.items()
                                 if thread == threading.get_ident()}
            self._thread = threading.Thread(target=self._run, name="contrail-profiler", daemon=True)
            self._thread.start()

    def register(self, capture: Capture) -> None:
        self._ensure_thread()
        with self.lock:
            self.captures.setdefault(capture.thread_id, []).append(capture)
        if self._idle:
            self._wake.set()

    def unregister(self, capture: Capture) -> None:
        with self.lock:
            _discard(self.captures, capture.thread_id, capture)

    def wake_for_slow_spans(self) -> None:
        self._ensure_thread()
        if self._idle:
            self._wake.set()

    def _run(self) -> None:
        """Sample every ``interval`` while explicit profiles run, every slow-span interval otherwise; idle (no
        hook, no polling) while neither runs. Woken by new work, the thread still waits a whole interval before
        its first sample: sampling at once would hit every short profiled call that wakes it and count it as
        a whole interval."""
        me = threading.get_ident()
        last_slow = time.monotonic()
        while True:
            slow = self.slow
            if not self.captures and (slow is None or not slow.open):
                self._idle = True
                if not self.captures and (slow is None or not slow.open):  # work that came meanwhile wakes no one
                    self._wake.wait()
                self._wake.clear()
                self._idle = False
                continue
            time.sleep(self.interval if self.captures else slow.interval)
            try:
                frames = sys._current_frames()
                now = time.monotonic()
                with self.lock:
                    for thread_id, captures in self.captures.items():
                        frame = frames.get(thread_id)
                        if frame is not None and thread_id != me:
                            for capture in captures:
                                capture.add(frame, now)
                            self.samples_taken += 1
                if slow is not None and slow.open and now - last_slow >= slow.interval * 0.9:
                    slow.sample(frames, now)
                    last_slow = now
                del frames
            except Exception:  # noqa: BLE001 - the sampler must outlive any one odd stack
                logger.exception("contrail: profile sample failed")


# --------------------------------------------------------------------------- explicit profiles


class ProfileScope:
    """``with tracing.profile("name")`` or ``@tracing.profile``: a sampling profile attached to the current span
    (a span of its own, named after the profile, when there is none)."""

    def __init__(self, manager: Any, name: str | None) -> None:
        self.manager = manager
        self.name = name
        self._local = threading.local()  # the profiles this scope has open, per thread (one scope, many threads)

    def _stack(self) -> list:
        stack = getattr(self._local, "open", None)
        if stack is None:
            stack = self._local.open = []
        return stack

    def __enter__(self) -> Any:
        token = self._start(sys._getframe(1), False)
        self._stack().append(token)
        return token[2]

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._finish(self._stack().pop(), exc)
        return False

    async def __aenter__(self) -> Any:
        token = self._start(sys._getframe(1), False)
        self._stack().append(token)
        return token[2]

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        self._finish(self._stack().pop(), exc)
        return False

    def _start(self, anchor: Any, skip_anchor: bool, name: str | None = None) -> tuple[Any, Any, Any]:
        """Start profiling; the token (capture or None, own span scope or None, span) goes to :meth:`_finish`."""
        name = name or self.name or "profile"
        span = trace.get_current_span()
        own = None
        if not span.is_recording():
            own = self.manager.span(name)
            span = own.__enter__()
        capture = None
        if span.is_recording():  # a trace sampled out is not profiled either: its profile would belong to nothing
            context = span.get_span_context()
            capture = Capture(format(context.trace_id, "032x"), format(context.span_id, "016x"),
                              getattr(span, "name", None), name, "explicit", anchor,
                              self.manager.profiler().interval, skip_anchor, span)
            self.manager.profiler().register(capture)
        return capture, own, span

    def _finish(self, token: tuple[Any, Any, Any], exc: BaseException | None) -> None:
        capture, own, _ = token
        if capture is not None:
            self.manager.profiler().unregister(capture)
            span = capture.span
            if span.is_recording():
                span.set_attribute("contrail.profile", capture.name)
                span.set_attribute("contrail.profile.samples", capture.samples)
            self.manager.profile_exporter().submit(capture.row(time.time_ns()))
        if own is not None:
            own.__exit__(type(exc) if exc is not None else None, exc, None)

    def __call__(self, func: Callable) -> Callable:
        name = self.name or getattr(func, "__qualname__", None) or getattr(func, "__name__", "profile")
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = self._start(sys._getframe(0), True, name)
                error = None
                try:
                    return await func(*args, **kwargs)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._finish(token, error)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = self._start(sys._getframe(0), True, name)
            error = None
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(token, error)

        return wrapper


# --------------------------------------------------------------------------- continuous (slow spans)

class _OpenSpan:
    __slots__ = ("context", "name", "start_ns", "thread_id", "frame", "capture")

    def __init__(self, context: Any, name: str, start_ns: int, thread_id: int, frame: Any) -> None:
        self.context, self.name, self.start_ns, self.thread_id, self.frame = context, name, start_ns, thread_id, frame
        self.capture: Capture | None = None


class SlowSpanProfiler(SpanProcessor):
    """Samples, at a low rate, the stacks of spans open longer than ``threshold`` seconds; exports them at end.

    ``on_start`` only notes the span, its thread and the frame that called it. A sample's stack is cut at
    the deepest frame of that frame's chain still on the stack (the frames of OpenTelemetry and Contrail
    that started the span have returned by then), so a span started in a hook that has returned (a Celery signal) still shows the code
    that ran under it. The chain's frame ids are gathered by the sampler thread, at the span's first
    sample; the kept frame keeps the chain alive so no id is reused meanwhile.
    """

    def __init__(self, threshold: float, interval: float, sampler_of: Callable[[], Sampler],
                 exporter_of: Callable[[], Any]) -> None:
        self.threshold_ns = int(threshold * 1e9)
        self.interval = interval
        self._sampler_of = sampler_of
        self._exporter_of = exporter_of
        self._after_fork()
        if hasattr(os, "register_at_fork"):  # a weak reference: the hook must not keep the processor alive
            after_fork = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (after_fork() or (lambda: None))())

    def _after_fork(self) -> None:
        """A forked child starts with no open spans: the parent's are the parent's to end (and a lock the parent
        held at the fork would never be released here)."""
        self.lock = threading.Lock()
        self.by_thread: dict[int, list[_OpenSpan]] = {}
        self.by_span: dict[int, _OpenSpan] = {}
        self.open = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        context = span.get_span_context()
        if not context.trace_flags.sampled:
            return
        thread_id = threading.get_ident()
        entry = _OpenSpan(context, span.name, span.start_time or time.time_ns(), thread_id, sys._getframe(1))
        with self.lock:
            self.by_thread.setdefault(thread_id, []).append(entry)
            self.by_span[context.span_id] = entry
            self.open += 1
            first = self.open == 1
        if first:
            self._sampler_of().wake_for_slow_spans()

    def on_end(self, span: Any) -> None:
        with self.lock:
            entry = self.by_span.pop(span.get_span_context().span_id, None)
            if entry is None:
                return
            self.open -= 1
            _discard(self.by_thread, entry.thread_id, entry)
        entry.frame = None
        capture = entry.capture
        if capture is not None and capture.samples:
            capture.kept = None  # the start frames may go
            capture.start_ns = entry.start_ns
            self._exporter_of().submit(capture.row(span.end_time or time.time_ns()))

    def _capture(self, entry: _OpenSpan, now: float) -> Capture:
        anchors, frame, depth = set(), entry.frame, 0
        while frame is not None and depth < MAX_WALK:
            anchors.add(id(frame))
            frame = frame.f_back
            depth += 1
        context = entry.context
        capture = Capture(format(context.trace_id, "032x"), format(context.span_id, "016x"), entry.name, entry.name,
                          "slow", frozenset(anchors), self.interval, thread_id=entry.thread_id)
        capture.kept = entry.frame
        capture.last = now - self.interval  # the first look past the threshold counts once
        entry.capture = capture
        return capture

    def sample(self, frames: dict[int, Any], now: float) -> None:
        """One look at every thread with an open span (the sampler thread, every ``interval``)."""
        cutoff = time.time_ns() - self.threshold_ns
        with self.lock:
            for thread_id, spans in self.by_thread.items():
                frame = frames.get(thread_id)
                if frame is None:
                    continue
                for entry in reversed(spans):
                    if entry.start_ns <= cutoff:
                        (entry.capture or self._capture(entry, now)).add(frame, now)
                        break

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


