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
