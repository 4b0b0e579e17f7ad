"""Every exception class with its Telnyx code, and "a refused command changes nothing"."""

from __future__ import annotations

import pytest

import waitline


def test_hierarchy() -> None:
    classes = [
        waitline.CallNotFoundError, waitline.CallExistsError, waitline.CallEndedError, waitline.QueueFullError, waitline.AlreadyInQueueError,
        waitline.NotInQueueError, waitline.QueueEmptyError, waitline.QueueNotFoundError,
        waitline.QueueCallNotFoundError, waitline.QueueNotEmptyError,
        waitline.QueueExistsError, waitline.LimitReachedError, waitline.InvalidParameterError,
    ]
    assert all(issubclass(c, waitline.WaitlineError) for c in classes)
    assert issubclass(waitline.InvalidParameterError, ValueError)
    # One Telnyx 10005 "Resource not found": catching QueueNotFoundError catches both.
    assert issubclass(waitline.QueueCallNotFoundError, waitline.QueueNotFoundError)
    # An existing call is not an unknown one, though Telnyx gives both 90015.
    assert not issubclass(waitline.CallExistsError, waitline.CallNotFoundError)
    assert set(waitline.errors.__all__) <= set(waitline.__all__)


def code_of(fn) -> tuple[type, str]:
    with pytest.raises(waitline.WaitlineError) as err:
        fn()
    return type(err.value), err.value.code


def test_every_code() -> None:
    e = waitline.Engine(manual_clock=True, max_queues=3, max_live_calls=4)
    a, b, ended = e.dial(to="1", from_="2"), e.dial(to="1", from_="2"), e.dial(to="1", from_="2")
    ended.hangup()
    a.enqueue("one", max_size=1)
    cases = [
        (lambda: e.call("x"), waitline.CallNotFoundError, "90015"),
        (lambda: e.dial(to="1", from_="2", call_control_id=a.call_control_id), waitline.CallExistsError, "90015"),
        (lambda: ended.enqueue("q"), waitline.CallEndedError, "90018"),
        (lambda: b.enqueue("one"), waitline.QueueFullError, "90036"),
        (lambda: a.enqueue("one"), waitline.AlreadyInQueueError, "90038"),
        (lambda: b.leave_queue(), waitline.NotInQueueError, "95002"),
        (lambda: b.bridge(queue="nobody"), waitline.QueueEmptyError, "95001"),
        (lambda: e.queue("nope"), waitline.QueueNotFoundError, "10005"),
        (lambda: e.queue_call("nope", b.call_control_id), waitline.QueueNotFoundError, "10005"),
        (lambda: e.queue_call("one", b.call_control_id), waitline.QueueCallNotFoundError, "10005"),
        (lambda: e.remove_queue_call("one", b.call_control_id), waitline.QueueCallNotFoundError, "10005"),
        (lambda: e.update_queue_call("one", b.call_control_id, priority=1), waitline.QueueCallNotFoundError, "10005"),
        (lambda: e.delete_queue("one"), waitline.QueueNotEmptyError, "90050"),
        (lambda: e.create_queue("one"), waitline.QueueExistsError, "95003"),
        (lambda: b.enqueue("q", max_wait_time_secs=0), waitline.InvalidParameterError, "10033"),
        (lambda: b.enqueue("q", priority=10**40), waitline.InvalidParameterError, "10033"),
        (lambda: b.bridge(), waitline.InvalidParameterError, "10004"),
        (lambda: b.bridge(queue="one", park_after_unbridge="other"), waitline.InvalidParameterError, "10032"),
    ]
    for fn, cls, code in cases:
        assert code_of(fn) == (cls, code)
    raised = {cls for _, cls, _ in cases}
    e.create_queue("two")
    e.create_queue("three")
    assert code_of(lambda: e.create_queue("four")) == (waitline.LimitReachedError, "95004")
    e.dial(to="1", from_="2")
    e.dial(to="1", from_="2")  # 4 live calls: a, b and these two (the ended one does not count)
    assert code_of(lambda: e.dial(to="1", from_="2")) == (waitline.LimitReachedError, "95004")
    # Every class of waitline.errors but the base is raised by some engine error (StoreError,
    # for the data directory, is no engine error: see test_durable.py).
    raised.add(waitline.LimitReachedError)
    every = {getattr(waitline.errors, name) for name in waitline.errors.__all__} - {
        waitline.WaitlineError,
        waitline.StoreError,
    }
    assert raised == every
    with pytest.raises(TypeError):
        b.enqueue("q", priority="high")  # type: ignore[arg-type]


@pytest.mark.parametrize("priority", [-1, 10, 300, -(10**30), 10**30])
def test_a_number_that_fits_no_range_names_its_parameter(priority: int) -> None:
    e = waitline.Engine(manual_clock=True)
    c = e.dial(to="1", from_="2")
    with pytest.raises(waitline.InvalidParameterError) as err:
        c.enqueue("q", priority=priority)
    assert (err.value.code, err.value.parameter) == ("10033", "priority")
    assert "between 0 and 9" in err.value.detail
    assert c.state == "active"


def test_refused_commands_change_nothing() -> None:
    e = waitline.Engine(manual_clock=True)
    a, b = e.dial(to="1", from_="2"), e.dial(to="1", from_="2")
    a.enqueue("full", max_size=1)
    b.enqueue("other")
    before = [(q.name, q.current_size) for q in e.queues()], b.queue
    with pytest.raises(waitline.QueueFullError):
        b.enqueue("full")
    with pytest.raises(waitline.InvalidParameterError):
        b.enqueue("new", max_size=0)
    assert ([(q.name, q.current_size) for q in e.queues()], b.queue) == before


def test_string_arguments_are_checked_before_anything_changes() -> None:
    # The commands read their str arguments from the Python strings themselves: a non-str is
    # a TypeError naming the argument, a string with no UTF-8 form (a lone surrogate) a
    # UnicodeEncodeError, and either leaves the engine as it was.
    e = waitline.Engine(manual_clock=True)
    caller, agent = e.dial(to="1", from_="2"), e.dial(to="3", from_="4")
    caller.enqueue("support", client_state=None, command_id=None)  # None is "not given"
    with pytest.raises(TypeError, match="queue_name"):
        agent.enqueue(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="queue"):
        agent.bridge(queue=b"support")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_state"):
        agent.enqueue("support", client_state=1)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        agent.enqueue("\ud800")
    with pytest.raises(UnicodeEncodeError):
        agent.bridge(queue="support", park_after_unbridge="\ud800")
    with pytest.raises(UnicodeEncodeError):
        agent.leave_queue(command_id="\ud800")
    assert [(q.name, q.current_size) for q in e.queues()] == [("support", 1)]
    assert (agent.state, caller.state) == ("active", "queued")
    # The same strings, well formed, are taken.
    agent.bridge(queue="support", park_after_unbridge="self", client_state="YQ==", command_id="b1")
    assert (agent.bridged_with, caller.bridged_with) == (caller.call_control_id, agent.call_control_id)
    assert agent.client_state == "YQ=="


def test_advance_needs_a_manual_clock() -> None:
    with pytest.raises(RuntimeError):
        waitline.Engine().advance(1)


def test_classes_are_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The native module holds the classes it imported at start: no lookup by name per raise.
    original = waitline.errors.CallNotFoundError
    monkeypatch.setattr(waitline.errors, "CallNotFoundError", KeyError)
    with pytest.raises(original):
        waitline.Engine(manual_clock=True).call("x")
