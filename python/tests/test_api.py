"""Every call of the Python API, on the seed's flow and the rules behind it."""

from __future__ import annotations

import pytest

import waitline
from conftest import call_events


def test_seed_flow(engine: waitline.Engine) -> None:
    caller = engine.dial(to="+15550001", from_="+15550002", connection_id="app", client_state="aGk=")
    agent = engine.dial(to="+15550003", from_="+15550004", connection_id="app")
    assert caller.call_control_id.startswith("v3:") and len(caller.call_control_id) == 43
    assert caller.call_leg_id != caller.call_session_id
    assert (caller.state, caller.is_alive, caller.queue, caller.client_state) == ("active", True, None, "aGk=")
    engine.poll_events()

    caller.enqueue("tier_1_support")
    assert caller.state == "queued" and caller.queue == "tier_1_support"
    q = engine.queue("tier_1_support")
    assert (q.name, q.current_size, q.max_size, q.explicit) == ("tier_1_support", 1, 100, False)
    agent.bridge(call_control_id=None, queue="tier_1_support")
    assert caller.bridged_with == agent.call_control_id and agent.bridged_with == caller.call_control_id
    caller.enqueue("tier_1_support")  # the agent did not ask to be parked: it is hung up
    assert agent.state == "ended"
    caller.leave_queue()
    assert caller.state == "active"
    caller.hangup()
    assert (caller.state, caller.is_alive) == ("ended", False)
    assert call_events(engine) == [
        ("call.enqueued", caller.call_control_id),
        ("call.dequeued", caller.call_control_id),
        ("call.bridged", agent.call_control_id),
        ("call.bridged", caller.call_control_id),
        ("call.hangup", agent.call_control_id),
        ("call.enqueued", caller.call_control_id),
        ("call.dequeued", caller.call_control_id),
        ("call.hangup", caller.call_control_id),
    ]


def test_call_lookup_and_adopted_ids(engine: waitline.Engine) -> None:
    c = engine.dial(to="1", from_="2", call_control_id="sip-leg-7")
    assert engine.call("sip-leg-7") == c and hash(engine.call("sip-leg-7")) == hash(c)
    assert repr(c) == 'Call("sip-leg-7")'
    with pytest.raises(waitline.CallNotFoundError) as err:
        engine.call("nope")
    assert (err.value.code, err.value.title) == ("90015", "Invalid Call Control ID")
    with pytest.raises(waitline.CallExistsError) as exists:
        engine.dial(to="1", from_="2", call_control_id="sip-leg-7")
    assert (exists.value.code, exists.value.title) == ("90015", "Invalid Call Control ID")


def test_bridge_with_a_call_and_park(engine: waitline.Engine) -> None:
    a, b = engine.dial(to="1", from_="2"), engine.dial(to="3", from_="4")
    a.bridge(call_control_id=b.call_control_id, park_after_unbridge="self")
    b.hangup()
    assert a.state == "active", "a asked to be parked"


def test_transfer_returns_the_new_call(engine: waitline.Engine) -> None:
    a = engine.dial(to="+1999", from_="+1000")
    a.enqueue("q")
    b = a.transfer("+1777")
    assert (b.state, b.bridged_with, a.bridged_with) == ("bridged", a.call_control_id, b.call_control_id)
    assert engine.queue("q").total_dequeued["bridged"] == 1


def test_queue_management(engine: waitline.Engine) -> None:
    created = engine.create_queue("support", max_size=300)
    assert (created.max_size, created.explicit) == (300, True)
    assert engine.update_queue("support", max_size=50).max_size == 50
    calls = engine.dial_many(5, to="1", from_="2")
    assert engine.enqueue_many([c.call_control_id for c in calls], "support") == 5
    members = engine.queue_calls("support")
    assert [m.call_control_id for m in members] == [c.call_control_id for c in calls]
    assert [m.queue_position for m in members] == [1, 2, 3, 4, 5]
    m = engine.queue_call("support", calls[3].call_control_id)
    assert (m.queue_position, m.is_alive, m.priority, m.from_, m.to, m.queue_name) == (4, True, 0, "2", "1", "support")
    assert "queue_position=4" in repr(m)
    assert engine.queue_position("support", calls[4].call_control_id) == 5
    updated = engine.update_queue_call("support", calls[4].call_control_id, priority=9, keep_after_hangup=True)
    assert (updated.queue_position, updated.priority, updated.keep_after_hangup) == (1, 9, True)
    engine.remove_queue_call("support", calls[0].call_control_id)
    assert calls[0].state == "active"
    assert [q.name for q in engine.queues()] == ["support"]
    with pytest.raises(waitline.QueueNotEmptyError) as err:
        engine.delete_queue("support")
    assert err.value.code == "90050"
    for c in calls[1:]:
        c.leave_queue()
    engine.delete_queue("support")
    assert engine.queues() == []


def test_lists_cross_page_boundaries(engine: waitline.Engine) -> None:
    calls = engine.dial_many(600, to="1", from_="2")
    engine.enqueue_many([c.call_control_id for c in calls], "big", max_size=1000)
    assert [m.queue_position for m in engine.queue_calls("big")] == list(range(1, 601))


def test_priority_bands(engine: waitline.Engine) -> None:
    low, high = engine.dial(to="1", from_="2"), engine.dial(to="1", from_="2")
    low.enqueue("q")
    high.enqueue("q", priority=5)
    assert [m.call_control_id for m in engine.queue_calls("q")] == [high.call_control_id, low.call_control_id]


def test_keep_after_hangup_and_dead_head(engine: waitline.Engine) -> None:
    dead, agent = engine.dial(to="+1", from_="+2", client_state="Y2I="), engine.dial(to="3", from_="4")
    dead.enqueue("q", keep_after_hangup=True)
    dead.hangup()
    assert engine.queue_call("q", dead.call_control_id).is_alive is False
    with pytest.raises(waitline.CallEndedError) as err:
        agent.bridge(queue="q")
    assert err.value.code == "90018"
    assert err.value.meta["call"]["call_control_id"] == dead.call_control_id
    assert err.value.meta["call"]["client_state"] == "Y2I="
    assert engine.queue("q").current_size == 0


def test_command_id_is_not_executed_twice(engine: waitline.Engine) -> None:
    c = engine.dial(to="1", from_="2")
    c.enqueue("q", command_id="once")
    c.leave_queue()
    c.enqueue("q", command_id="once")
    assert c.state == "active"
    engine.advance(60)
    c.enqueue("q", command_id="once")
    assert c.state == "queued"


def test_a_dial_repeated_with_its_command_id_answers_the_first_call(engine: waitline.Engine) -> None:
    first = engine.dial(to="1", from_="2", command_id="dial-once")
    first.enqueue("q")
    again = engine.dial(to="1", from_="2", command_id="dial-once")
    assert (again.call_control_id, again.state) == (first.call_control_id, "queued")
    assert engine.dial(to="1", from_="2", command_id="another").call_control_id != first.call_control_id
    engine.advance(60)
    assert engine.dial(to="1", from_="2", command_id="dial-once").call_control_id != first.call_control_id
    with pytest.raises(waitline.InvalidParameterError) as err:
        engine.dial(to="1", from_="2", command_id="")
    assert err.value.parameter == "command_id"


def test_figures(engine: waitline.Engine) -> None:
    agent = engine.dial(to="1", from_="2")
    calls = engine.dial_many(4, to="1", from_="2")
    for c in calls:
        c.enqueue("q")
        engine.advance(10)
    q = engine.queue("q")
    assert (q.average_wait_time_secs, q.longest_wait_time_secs, q.total_enqueued) == (25, 40, 4)
    agent.bridge(queue="q", park_after_unbridge="self")
    engine.advance(30)
    agent.bridge(queue="q", park_after_unbridge="self")
    q = engine.queue("q")
    assert q.estimated_wait_time_secs == 3 * 30
    assert engine.queue_call("q", calls[2].call_control_id).estimated_wait_time_secs == 30
    assert q.total_dequeued == {"bridged": 2, "hangup": 0, "leave": 0, "timeout": 0}
    assert "Queue(" in repr(q)
