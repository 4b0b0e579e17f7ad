"""`Engine.enqueue_many`: the single enqueues it stands for, in order, stopping at the first
refusal (raised as the single enqueue would raise it), the calls before it enqueued."""

from __future__ import annotations

import pytest

import waitline

# More than the core's chunk of calls per lock hold (256), so that batches cross chunks.
MANY = 600


def states(calls: list[waitline.Call]) -> list[tuple[str, str | None]]:
    return [(c.state, c.queue) for c in calls]


def test_returns_the_count_and_keeps_the_order(engine: waitline.Engine) -> None:
    calls = engine.dial_many(MANY, to="1", from_="2")
    ids = [c.call_control_id for c in calls]
    assert engine.enqueue_many(ids, "q", max_size=1000, priority=2) == MANY
    assert [m.call_control_id for m in engine.queue_calls("q")] == ids
    assert {m.priority for m in engine.queue_calls("q")} == {2}
    assert engine.enqueue_many([], "") == 0  # no command at all: nothing is checked
    assert engine.enqueue_many(tuple(ids[:0]), "q") == 0


@pytest.mark.parametrize("at", [0, 1, 255, 256, 257, MANY - 1])
def test_stops_at_the_first_refusal(engine: waitline.Engine, at: int) -> None:
    calls = engine.dial_many(MANY, to="1", from_="2")
    ids = [c.call_control_id for c in calls]
    ids[at] = "v3:nope"
    with pytest.raises(waitline.CallNotFoundError) as err:
        engine.enqueue_many(ids, "q", max_size=1000)
    assert err.value.code == "90015"
    assert states(calls[:at]) == [("queued", "q")] * at
    assert states(calls[at + 1 :]) == [("active", None)] * (MANY - at - 1)


def test_the_refused_call_changes_nothing(engine: waitline.Engine) -> None:
    a, b, c = engine.dial_many(3, to="1", from_="2")
    b.enqueue("other")
    engine.create_queue("q", max_size=1)
    engine.poll_events()
    with pytest.raises(waitline.QueueFullError):
        engine.enqueue_many([a.call_control_id, b.call_control_id, c.call_control_id], "q")
    assert states([a, b, c]) == [("queued", "q"), ("queued", "other"), ("active", None)]
    assert [e.event_type for e in engine.poll_events()] == ["call.enqueued"]
    # The same call twice: the second enqueue is refused as a single one would be.
    with pytest.raises(waitline.AlreadyInQueueError):
        engine.enqueue_many([c.call_control_id, c.call_control_id], "third")
    assert states([c]) == [("queued", "third")]


def test_events_are_those_of_the_single_enqueues() -> None:
    def run(batch: bool) -> list[tuple[str, int | None]]:
        engine = waitline.Engine(manual_clock=True)
        calls = engine.dial_many(5, to="1", from_="2")
        calls[0].enqueue("old")
        engine.poll_events()
        ids = [c.call_control_id for c in calls]
        if batch:
            engine.enqueue_many(ids, "q", max_wait_time_secs=60)
        else:
            for i in ids:
                engine.call(i).enqueue("q", max_wait_time_secs=60)
        engine.advance(60)
        return [(e.event_type, e.payload.get("current_position")) for e in engine.poll_events()]

    assert run(batch=True) == run(batch=False)
    assert run(batch=True)[:3] == [("call.dequeued", None), ("queue.created", None), ("call.enqueued", 1)]


def test_ids_must_all_be_strings_before_anything_is_enqueued(engine: waitline.Engine) -> None:
    calls = engine.dial_many(3, to="1", from_="2")
    with pytest.raises(TypeError):
        engine.enqueue_many([calls[0].call_control_id, 7, calls[2].call_control_id], "q")  # type: ignore[list-item]
    with pytest.raises(TypeError):
        engine.enqueue_many(calls[0].call_control_id, "q")  # a str is not a list of ids
    assert states(calls) == [("active", None)] * 3


def test_an_id_that_is_not_utf8_raises_after_the_ones_before_it(engine: waitline.Engine) -> None:
    calls = engine.dial_many(300, to="1", from_="2")
    ids = [c.call_control_id for c in calls]
    ids[270] = "\ud800"
    with pytest.raises(UnicodeEncodeError):
        engine.enqueue_many(ids, "q", max_size=1000)
    assert states(calls[:270]) == [("queued", "q")] * 270
    assert states(calls[270:]) == [("active", None)] * 30


def test_parameters_are_checked_before_any_call(engine: waitline.Engine) -> None:
    calls = engine.dial_many(2, to="1", from_="2")
    with pytest.raises(waitline.InvalidParameterError) as err:
        engine.enqueue_many([c.call_control_id for c in calls], "q", priority=10)
    assert err.value.parameter == "priority"
    with pytest.raises(waitline.InvalidParameterError) as err:
        engine.enqueue_many([c.call_control_id for c in calls], "")
    assert err.value.parameter == "queue_name"
    assert states(calls) == [("active", None)] * 2


def test_the_batch_runs_with_the_gil_released() -> None:
    # While the core enqueues, another Python thread runs: a thread that only records ticks
    # leaves no gap longer than half the call. Were the GIL held for the whole call, no
    # bytecode of another thread could run between its start and its end: one gap as long as
    # the call. The switch interval is made short so that the GIL changes hands promptly at
    # the call's edges. Up to three tries: on a loaded machine the recording thread may wait
    # for a core.
    import sys
    import threading
    import time

    def longest_gap_share() -> float:
        engine = waitline.Engine(manual_clock=True, events=False)
        ids = [c.call_control_id for c in engine.dial_many(100_000, to="1", from_="2")]
        window: list[float] = []
        ticks: list[float] = []
        started = threading.Event()

        def batch() -> None:
            started.wait()
            window.append(time.perf_counter())
            engine.enqueue_many(ids, "q", max_size=1_000_000)
            window.append(time.perf_counter())

        worker = threading.Thread(target=batch)
        worker.start()
        started.set()
        while worker.is_alive():
            ticks.append(time.perf_counter())
        worker.join()
        assert engine.queue("q").current_size == 100_000
        start, end = window
        inside = [start, *(t for t in ticks if start < t < end), end]
        return max(b - a for a, b in zip(inside, inside[1:])) / (end - start)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        shares = []
        for _ in range(3):
            shares.append(longest_gap_share())
            if shares[-1] < 0.5:
                break
    finally:
        sys.setswitchinterval(interval)
    assert min(shares) < 0.5, f"other threads were held off for most of the batch: {shares}"
