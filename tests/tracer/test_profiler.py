"""tracing.profile and the slow-span mode against the private Redis: what a profile holds, where it goes,
its bounds, and that nothing runs while profiling is off."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from tests.support.servers import free_port
from tests.tracer.tracer_helpers import by_name, stream_entries
from tracer import TracingManager, profiler
from tracer.codec import decode_entry, entry_kind
from tracer.profile_codec import MAX_PROFILE_CHARS, MAX_STACKS, decode_profiles


def spin(seconds: float) -> int:
    total, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        total += sum(range(200))
    return total


def pause() -> None:
    time.sleep(0.05)


def stream_profiles(redis_url):
    out = []
    for _, fields in stream_entries(redis_url):
        if entry_kind(fields) == "profiles":
            decoded = decode_profiles(fields)
            assert decoded.rejected == []
            out.extend(decoded.profiles)
    return out


def stream_spans(redis_url):
    return [span for _, fields in stream_entries(redis_url) if entry_kind(fields) == "spans"
            for span in decode_entry(fields).spans]


def leaf_samples(profile, function):
    return sum(count for stack, count in profile["stacks"] if stack.split(";")[-1].startswith(f"{function} ("))


def ids(span):
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_a_profiled_block_is_attached_to_the_current_span_and_names_its_hot_function(make_manager, redis_url):
    tracing = make_manager(service_name="shop")
    with tracing.span("checkout") as span:
        with tracing.profile("pricing"):
            pause()
            spin(0.3)
    assert tracing.flush(10)
    (profile,) = stream_profiles(redis_url)
    assert (profile["trace_id"], profile["span_id"]) == ids(span)
    assert (profile["name"], profile["mode"], profile["operation"], profile["service"]) == (
        "pricing", "explicit", "checkout", "shop")
    assert profile["samples"] >= 40 and profile["dropped"] == 0  # ~350 ms at 5 ms
    assert leaf_samples(profile, "spin") > profile["samples"] * 0.6
    assert leaf_samples(profile, "pause") >= 3
    # stacks start at the frame that entered the profile: this test function
    assert {stack.split(";")[0].split(" (")[0] for stack, _ in profile["stacks"]} == {
        "test_a_profiled_block_is_attached_to_the_current_span_and_names_its_hot_function"}
    attributes = by_name(stream_spans(redis_url))["checkout"]["attributes"]
    assert attributes["contrail.profile"] == "pricing"
    assert attributes["contrail.profile.samples"] == profile["samples"]
    assert tracing.get_tracer_info()["profiles_exported"] == 1


def test_the_decorator_profiles_functions_and_coroutines_in_a_span_of_their_own_without_a_current_one(
        make_manager, redis_url):
    tracing = make_manager()

    @tracing.profile
    def report():
        spin(0.1)

    @tracing.profile("fetch")
    async def fetch():
        await asyncio.sleep(0.01)
        spin(0.1)

    report()
    asyncio.run(fetch())
    with pytest.raises(ZeroDivisionError):
        tracing.profile(lambda: 1 / 0)()
    assert tracing.flush(10)
    profiles = {p["name"]: p for p in stream_profiles(redis_url)}
    spans = by_name(stream_spans(redis_url))
    assert set(profiles) == {"test_the_decorator_profiles_functions_and_coroutines_in_a_span_of_their_own_without_a_"
                             "current_one.<locals>.report", "fetch",
                             "test_the_decorator_profiles_functions_and_coroutines_in_a_span_of_their_own_without_a_"
                             "current_one.<locals>.<lambda>"}
    for name, profile in profiles.items():
        assert profile["span_id"] == spans[name]["span_id"]
    report_profile = next(p for n, p in profiles.items() if n.endswith("report"))
    assert report_profile["stacks"][0][0].startswith(  # the decorated function is the root, not its wrapper
        "test_the_decorator_profiles_functions_and_coroutines_in_a_span_of_their_own_without_a_current_one"
        ".<locals>.report (")
    assert leaf_samples(profiles["fetch"], "spin") > 0
    lambda_span = next(s for n, s in spans.items() if n.endswith("<lambda>"))
    assert lambda_span["status_code"] == "error"


def test_with_profiling_off_nothing_runs_and_a_disabled_tracer_returns_the_function_itself(make_manager):
    def work():
        return 42

    disabled = TracingManager(enabled=False)
    assert disabled.profile(work) is work and disabled.profile("x")(work) is work
    with disabled.profile("block"):
        pass
    tracing = make_manager()
    assert tracing._slow_spans is None  # the slow-span mode is off by default: no span processor of its own
    with tracing.span("plain"):
        work()
    assert tracing._profile_sampler is None and tracing._profile_exporter is None  # no thread, no spool
    assert "profiles_exported" not in tracing.get_tracer_info()


def test_slow_spans_are_sampled_at_a_low_rate_and_fast_ones_are_not(make_manager, redis_url):
    tracing = make_manager(profile_slow_threshold="100ms", profile_slow_interval="10ms")

    def start_in_a_hook():  # like a Celery signal handler: starts the span and returns before the work runs
        return tracing.start_span("task")

    with tracing.span("fast"):
        spin(0.02)
    with tracing.span("slow") as slow:
        spin(0.4)
    task = start_in_a_hook()
    spin(0.3)
    tracing.finish_span(task)
    assert tracing.flush(10)
    profiles = {p["operation"]: p for p in stream_profiles(redis_url)}
    assert set(profiles) == {"slow", "task"}
    profile = profiles["slow"]
    assert (profile["mode"], profile["span_id"]) == ("slow", ids(slow)[1])
    assert 10 <= profile["samples"] <= 45  # about 30: the 300 ms past the threshold at 10 ms
    # samples are time-weighted: a sampler delayed by a loaded machine until the span's exit weighs that sample
    # by the intervals it missed, so a few may fall outside spin
    assert leaf_samples(profile, "spin") >= 0.8 * profile["samples"]
    task_stacks = [stack for stack, _ in profiles["task"]["stacks"]]
    assert all(stack.startswith("test_slow_spans_are_sampled_at_a_low_rate_and_fast_ones_are_not (")
               for stack in task_stacks), task_stacks
    assert leaf_samples(profiles["task"], "spin") >= 0.8 * profiles["task"]["samples"], task_stacks


def test_deep_stacks_keep_root_and_leaf_and_a_marker(make_manager):
    def recurse(depth):
        return sys._getframe() if depth == 0 else recurse(depth - 1)

    anchor = sys._getframe()
    stack = profiler.fold(recurse(100), anchor).split(";")
    assert len(stack) == profiler.MAX_DEPTH
    assert stack[0].startswith("test_deep_stacks_keep_root_and_leaf_and_a_marker (")
    assert stack[40] == f"[{102 - profiler.MAX_DEPTH + 1} frames]"
    assert all(frame.startswith("test_deep_stacks_keep_root_and_leaf_and_a_marker.<locals>.recurse (")
               for frame in stack[1:40] + stack[41:])
    assert profiler.fold(sys._getframe(), object()) == profiler.OUTSIDE  # the anchor is not on the stack


def test_a_profile_keeps_at_most_max_stacks_and_max_chars_and_counts_the_rest():
    capture = profiler.Capture("ab" * 16, "cd" * 8, "op", "p", "explicit", None, 0.005)
    capture.stacks = {f"f{i}": 1 for i in range(MAX_STACKS)}
    capture.samples, capture.last = MAX_STACKS, time.monotonic()
    capture.add(sys._getframe(), capture.last)  # a new stack: no room
    assert (capture.samples, capture.dropped, len(capture.stacks)) == (MAX_STACKS + 1, 1, MAX_STACKS)

    big = profiler.Capture("ab" * 16, "cd" * 8, "op", "p", "explicit", None, 0.005)
    chunk = MAX_PROFILE_CHARS // 4
    big.stacks = {"a" * chunk: 9, "b" * chunk: 8, "c" * chunk: 7, "d" * chunk: 6, "e" * chunk: 5}
    big.samples = 35
    row = big.row(time.time_ns())
    assert [stack[0] for stack, _ in row[10]] == ["a", "b", "c", "d"] and row[11] == 5  # "e" did not fit


def test_profiles_are_spooled_while_redis_is_down_and_replayed_later(make_manager, redis_url, tmp_path):
    spool = str(tmp_path / "shared-spool")
    down = make_manager(redis_url=f"redis://127.0.0.1:{free_port()}/0", spool_dir=spool, export_timeout=0.5)
    with down.span("offline"):
        with down.profile("offline"):
            spin(0.2)
    assert down.flush(2) is False
    info = down.get_tracer_info()
    assert (info["profiles_spooled"], info["profiles_exported"], info["profiles_dropped"]) == (1, 0, 0)
    down.shutdown(1)

    up = make_manager(spool_dir=spool)
    assert up.profile_exporter().flush()
    (profile,) = stream_profiles(redis_url)
    assert profile["name"] == "offline" and profile["samples"] >= 5


def test_the_sampler_thread_is_one_per_manager_and_sleeps_without_profiles(make_manager):
    tracing = make_manager()
    for _ in range(3):
        with tracing.profile("again"):
            spin(0.02)
    sampler = tracing.profiler()
    assert sampler.captures == {}
    taken = sampler.samples_taken
    time.sleep(0.1)
    assert sampler.samples_taken == taken  # idle: waiting, not sampling
    assert sum(1 for t in threading.enumerate() if t is sampler._thread) == 1


def test_a_trace_sampled_out_is_not_profiled_and_without_the_redis_exporter_profiles_are_counted_dropped(
        make_manager, redis_url, tmp_path):
    sampled_out = make_manager(sample_rate=0.0)
    with sampled_out.span("dropped by sampling"):
        with sampled_out.profile("nothing"):
            spin(0.02)
    assert sampled_out._profile_sampler is None and sampled_out._profile_exporter is None

    console_only = make_manager(exporters="file", export_file=str(tmp_path / "spans.jsonl"))
    with console_only.span("no stream"):
        with console_only.profile("lost"):
            spin(0.02)
    assert console_only.flush(5) is False
    info = console_only.get_tracer_info()
    assert (info["profiles_dropped"], info["profiles_exported"], info["profiles_spooled"]) == (1, 0, 0)
    assert stream_profiles(redis_url) == []


def test_a_forked_child_profiles_on_its_own_and_forgets_the_parents_open_spans(make_manager, redis_url):
    import os

    from tests.tracer.tracer_helpers import in_forked_child

    tracing = make_manager(profile_slow_threshold="50ms", profile_slow_interval="10ms")
    with tracing.profile("parent"):
        spin(0.05)
    with tracing.span("open at the fork"):
        def child():
            assert tracing._slow_spans.open == 0  # the parent's open span is not the child's
            me = threading.get_ident()
            with tracing.span("child work"):
                with tracing.profile("child"):
                    [explicit] = tracing.profiler().captures[me]
                    [slow] = tracing._slow_spans.by_thread[me]
                    # until the child's sampler has taken both profiles' samples: a child starved of CPU by
                    # other processes may get none in a fixed spell of wall time (60 s only bounds a failure)
                    deadline = time.monotonic() + 60
                    while (explicit.samples < 20 or slow.capture is None) and time.monotonic() < deadline:
                        spin(0.01)
        pid = in_forked_child(tracing, child)
    assert tracing.flush(10)
    profiles = stream_profiles(redis_url)
    by_name = {(p["name"], p["mode"]): p for p in profiles}
    assert by_name[("child", "explicit")]["resource"]["process.pid"] == pid
    assert by_name[("child", "explicit")]["samples"] >= 20
    assert by_name[("child work", "slow")]["resource"]["process.pid"] == pid
    assert by_name[("parent", "explicit")]["resource"]["process.pid"] == os.getpid()


def test_one_profiled_function_called_from_two_threads_at_once_keeps_each_calls_profile_apart(
        make_manager, redis_url):
    tracing = make_manager()
    first_in, second_in, first_left = threading.Event(), threading.Event(), threading.Event()

    @tracing.profile("work")
    def work(role):
        if role == "first":  # enters first, leaves first, while the second call is still running
            first_in.set()
            assert second_in.wait(5)
            spin(0.02)
        else:
            assert first_in.wait(5)
            second_in.set()
            assert first_left.wait(5)
            spin(0.15)

    def first():
        work("first")
        first_left.set()

    threads = [threading.Thread(target=first), threading.Thread(target=work, args=("second",))]
    threads[0].start()
    assert first_in.wait(5)  # the second call starts while the first is inside
    threads[1].start()
    for thread in threads:
        thread.join()
    assert tracing.flush(10)
    profiles = sorted(stream_profiles(redis_url), key=lambda p: p["start_ns"])
    spans = {s["span_id"]: s for s in stream_spans(redis_url)}
    assert len(profiles) == 2 and len(spans) == 2 and {p["span_id"] for p in profiles} == set(spans)
    first_call, second_call = profiles
    assert (second_call["end_ns"] - first_call["end_ns"]) / 1e9 >= 0.14  # each call's profile ends with it
    assert leaf_samples(second_call, "spin") > 0
    for profile in profiles:
        assert spans[profile["span_id"]]["end_ns"] >= profile["end_ns"]


def test_short_profiled_calls_inside_a_longer_profile_do_not_inflate_either_count(make_manager, redis_url):
    tracing = make_manager()

    @tracing.profile("tiny")
    def tiny():
        spin(0.0002)

    with tracing.span("loop"):
        with tracing.profile("outer"):
            started = time.perf_counter()
            for _ in range(200):  # each call registers a profile while "outer" is being sampled
                tiny()
                time.sleep(0.002)
            elapsed = time.perf_counter() - started
    assert tracing.flush(10)
    profiles = stream_profiles(redis_url)
    outer = next(p for p in profiles if p["name"] == "outer")
    inner = [p for p in profiles if p["name"] == "tiny"]
    assert len(inner) == 200
    expected = elapsed / 0.005  # samples of 5 ms in the outer profile's time
    assert 0.5 * expected <= outer["samples"] <= 1.5 * expected, (outer["samples"], expected)
    assert sum(p["samples"] for p in inner) <= 0.5 * expected  # the tiny calls are a small part of it
