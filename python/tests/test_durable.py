"""An engine on a data directory: what it was told survives the engine, and a second engine
cannot open the same directory."""

from __future__ import annotations

import gc
import pathlib

import pytest

import waitline


def reopen(path: pathlib.Path) -> waitline.Engine:
    """Opens `path` again, once the caller dropped the engine and every call of it (they keep
    the directory's lock)."""
    gc.collect()
    return waitline.Engine(data_dir=path, manual_clock=True)


def test_calls_and_queues_survive_the_engine(tmp_path: pathlib.Path) -> None:
    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True)
    assert engine.durable
    caller = engine.dial(to="+15550001", from_="+15550002", connection_id="app")
    agent = engine.dial(to="+15550003", from_="+15550004", connection_id="app")
    waiting = engine.dial(to="+15550005", from_="+15550006", connection_id="app")
    caller.enqueue("support")
    waiting.enqueue("support", priority=3)
    agent.bridge(queue="support")  # takes the head: the priority 3 caller
    engine.flush()
    ids = (caller.call_control_id, agent.call_control_id, waiting.call_control_id, caller.call_leg_id)
    del engine, caller, agent, waiting

    engine = reopen(tmp_path)
    again = engine.call(ids[0])
    assert (again.state, again.queue, again.call_leg_id) == ("queued", "support", ids[3])
    assert engine.call(ids[1]).bridged_with == ids[2]
    assert [m.call_control_id for m in engine.queue_calls("support")] == [ids[0]]
    # Engine-made ids keep working after the restart, and so do new commands.
    engine.call(ids[0]).leave_queue()
    assert engine.call(ids[0]).state == "active"


def test_a_command_id_is_remembered_across_a_restart(tmp_path: pathlib.Path) -> None:
    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True)
    call = engine.dial(to="1", from_="2")
    call.enqueue("support", command_id="retry-me")
    engine.flush()
    call_id = call.call_control_id
    del engine, call
    engine = reopen(tmp_path)
    call = engine.call(call_id)
    call.enqueue("support", command_id="retry-me")  # the same command again: no second effect
    assert engine.queue("support").current_size == 1


def test_one_engine_per_data_directory(tmp_path: pathlib.Path) -> None:
    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True)
    with pytest.raises(waitline.StoreError, match="in use by another waitline process"):
        waitline.Engine(data_dir=tmp_path, manual_clock=True)
    assert not isinstance(waitline.StoreError("x"), waitline.WaitlineError)
    del engine


def test_fsync_policies_and_no_data_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="'always' or 'periodic'"):
        waitline.Engine(data_dir=tmp_path, fsync="sometimes")
    engine = waitline.Engine(data_dir=str(tmp_path / "periodic"), fsync="periodic", manual_clock=True)
    engine.dial(to="1", from_="2")
    engine.flush()
    memory = waitline.Engine(manual_clock=True)
    assert not memory.durable
    memory.flush()  # nothing to wait for
