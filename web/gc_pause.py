"""Cyclic garbage collection paused while a big answer is built.

Building one trace answer allocates some 50,000 dicts and lists (10,000 spans,
their attributes, events and links), none of them in a cycle. Each allocation
burst that size sets off full collections that walk every object the process
holds (two of them per 10,000-span answer, about as long as encoding the
answer), to free nothing. The pause is bounded by the answer's size (at most
``TRACE_PAGE_SPANS`` spans); reference counting frees everything as usual and
the collector runs again once the last paused section in the process ends.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_paused = 0  # sections in progress (threads of one worker share the collector)
_resume = False  # whether the collector was enabled when the first section began


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the body with cyclic collection off; nested and concurrent sections resume it once, at the end."""
    global _paused, _resume
    with _lock:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if _paused == 0 and _resume:
                gc.enable()
