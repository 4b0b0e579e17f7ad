"""Manual-clock expiry and idle collection, the real clock's own maintenance, events."""

from __future__ import annotations

import threading
import time

import waitline
from conftest import call_events


def test_max_wait_expires_exactly_on_time(engine: waitline.Engine) -> None:
    c = engine.dial(to="1", from_="2")
    c.enqueue("q", max_wait_time_secs=30)
    engine.poll_events()
    engine.advance(29.999)
    assert c.state == "queued"
    assert engine.advance(0.001) == 1
    assert c.state == "active"
    (ev,) = engine.poll_events()
    assert ev.payload["reason"] == "timeout" and ev.payload["wait_time_secs"] == 30


def test_idle_queues_are_collected(engine: waitline.Engine) -> None:
    c = engine.dial(to="1", from_="2")
    c.enqueue("auto")
    c.leave_queue()
    engine.advance(299)
    assert engine.queue("auto").current_size == 0
    engine.advance(1)
    assert [q.name for q in engine.queues()] == []


def test_real_clock_expiry_needs_no_call_from_python() -> None:
    engine = waitline.Engine()
    c = engine.dial(to="1", from_="2")
    c.enqueue("q", max_wait_time_secs=1)
    events = engine.events(timeout=5)
    seen = [next(events) for _ in range(5)]  # initiated, answered, queue.created, enqueued, dequeued
    assert seen[-1].event_type == "call.dequeued" and seen[-1].payload["reason"] == "timeout"
    assert c.state == "active"


def test_event_shape_and_order(engine: waitline.Engine) -> None:
    c = engine.dial(to="+1", from_="+2", client_state="aGk=")
    first = engine.poll_events(max=1)
    assert [e.event_type for e in first] == ["call.initiated"]
    answered = engine.poll_events()[0]
    env = answered.to_dict()
    assert env["data"]["record_type"] == "event" and env["data"]["event_type"] == "call.answered"
    assert env["data"]["payload"] == answered.payload
    assert answered.payload["client_state"] == "aGk=" and answered.payload["call_control_id"] == c.call_control_id
    assert answered.occurred_at.endswith("Z") and len(answered.id) == 36
    assert "call.answered" in repr(answered)
    assert env["meta"] == {"attempt": 1}


def test_absent_values_are_missing_keys_not_none(engine: waitline.Engine) -> None:
    """As in webhooks: a call with no client_state has no client_state key in any payload."""
    engine.poll_events()
    caller, agent = engine.dial(to="+1", from_="+2"), engine.dial(to="+3", from_="+4")
    caller.enqueue("absent")
    agent.bridge(queue="absent")
    agent.hangup()
    events = [e for e in engine.poll_events() if e.event_type.startswith("call.")]
    assert {e.event_type for e in events} == {
        "call.initiated", "call.answered", "call.enqueued", "call.dequeued", "call.bridged", "call.hangup"
    }
    for e in events:
        assert "client_state" not in e.payload, (e.event_type, e.payload)
        assert None not in e.payload.values(), (e.event_type, e.payload)
        assert e.to_dict()["data"]["payload"] == e.payload
    assert caller.client_state is None  # attribute snapshots keep None


def test_events_iterator_ends_after_timeout(engine: waitline.Engine) -> None:
    engine.poll_events()
    start = time.monotonic()
    assert list(engine.events(timeout=0.2)) == []
    assert time.monotonic() - start >= 0.19


def test_many_python_threads() -> None:
    engine = waitline.Engine(manual_clock=True)
    calls = engine.dial_many(400, to="1", from_="2")
    agents = engine.dial_many(4, to="1", from_="2")
    errors: list[BaseException] = []

    def producer(chunk):
        try:
            for c in chunk:
                c.enqueue(f"q{hash(c.call_control_id) % 3}", max_size=1000)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    def consumer(agent):
        try:
            for _ in range(200):
                for q in ("q0", "q1", "q2"):
                    try:
                        agent.bridge(queue=q, park_after_unbridge="self")
                    except waitline.QueueEmptyError:
                        pass
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(calls[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=consumer, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    enq = sum(1 for e in engine.poll_events() if e.event_type == "call.enqueued")
    queued = sum(engine.queue(q).current_size for q in ("q0", "q1", "q2") if q in {x.name for x in engine.queues()})
    bridged = sum(engine.queue(q).total_dequeued["bridged"] for q in ("q0", "q1", "q2"))
    assert enq == 400 and queued + bridged == 400
    assert call_events(engine) == []


def test_an_engine_without_events_keeps_none_and_works_the_same() -> None:
    e = waitline.Engine(manual_clock=True, events=False)
    assert "events=False" in repr(e)
    c = e.dial(to="1", from_="2")
    c.enqueue("q", max_wait_time_secs=5)
    assert e.queue_position("q", c.call_control_id) == 1
    assert e.advance(5) == 1
    assert c.state == "active"
    for read in (e.poll_events, e.events):
        try:
            read()
        except RuntimeError as err:
            assert "events=False" in str(err)
        else:
            raise AssertionError(f"{read.__name__} answered without events")


def test_queue_figures_today_and_the_hour(engine: waitline.Engine) -> None:
    callers = [engine.dial(to="1", from_="2") for _ in range(3)]
    for c in callers:
        c.enqueue("figures")
    agent = engine.dial(to="3", from_="4")
    engine.advance(5)
    agent.bridge(queue="figures", park_after_unbridge="self")  # answered after 5 s: in time
    engine.advance(40)
    callers[1].hangup()  # abandoned after 45 s
    q = engine.queue("figures")
    assert q.service_level_secs == 20
    assert q.bridged_within_service_level == 1
    today = q.today
    assert (today["enqueued"], today["bridged"], today["hangup"]) == (3, 1, 1)
    assert today["service_level"] == 0.5
    assert today["since"].endswith("T00:00:00.000000Z")
    assert sum(q.wait_histogram["counts"]) == 2
    assert q.wait_histogram["sum_micros"] == 50_000_000
    # The hour of lengths peaked at 3 (the 45 s may have crossed into a new minute, which
    # starts at the length carried over).
    assert len(q.length_last_hour) == 60 and max(q.length_last_hour) == 3
    assert q.length_last_hour[-1] >= q.current_size == 1
