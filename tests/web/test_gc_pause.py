"""Pausing cyclic GC around a big answer restores the collector exactly as it was found."""

from __future__ import annotations

import gc
import threading

from web.gc_pause import paused_gc


def test_nested_and_concurrent_sections_resume_collection_once_at_the_end():
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other_request():
        with paused_gc():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_request)
    with paused_gc():
        thread.start()
        inside.wait(10)
        with paused_gc():
            assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's section is still running
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
