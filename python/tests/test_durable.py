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


def test_a_dial_command_id_is_remembered_across_a_restart(tmp_path: pathlib.Path) -> None:
    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True)
    call_id = engine.dial(to="1", from_="2", command_id="dial-retry").call_control_id
    engine.flush()
    del engine
    engine = reopen(tmp_path)
    assert engine.dial(to="1", from_="2", command_id="dial-retry").call_control_id == call_id


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


def test_snapshots_bound_the_journal_and_restore_the_same_state(tmp_path: pathlib.Path) -> None:
    import sqlite3

    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True, snapshot_every=4)
    calls = [engine.dial(to="1", from_="2") for _ in range(6)]
    for i, call in enumerate(calls):
        call.enqueue("support", priority=i % 3, max_wait_time_secs=600, command_id=f"c{i}")
    # 12 changes: a snapshot is due at least every 4, taken here or by the engine's
    # maintenance thread (every 100 ms) while the calls were made.
    engine.flush()
    before = [(m.call_control_id, m.queue_position, m.priority) for m in engine.queue_calls("support")]
    ids = [c.call_control_id for c in calls]
    del engine, calls, call
    gc.collect()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        (snapshot,) = db.execute("SELECT max(seq) FROM snapshots").fetchone()
        (kept,) = db.execute("SELECT coalesce(sum(last - seq + 1), 0) FROM journal").fetchone()
    assert 12 - 4 < snapshot <= 12, "fewer than snapshot_every changes after the last snapshot"
    assert kept == 12 - snapshot, "the journal the snapshot covers is gone, the rest kept"
    engine = reopen(tmp_path)
    assert [(m.call_control_id, m.queue_position, m.priority) for m in engine.queue_calls("support")] == before
    engine.call(ids[0]).enqueue("support", command_id="c0")  # remembered across the snapshot
    assert engine.queue("support").current_size == 6
    engine.advance(601)  # the deadlines came through the snapshot too
    assert engine.queue("support").current_size == 0


def test_snapshot_every_must_be_a_count(tmp_path: pathlib.Path) -> None:
    with pytest.raises(OverflowError):
        waitline.Engine(data_dir=tmp_path, manual_clock=True, snapshot_every=-1)


def test_an_engine_forked_with_its_data_directory_is_refused_in_the_child(tmp_path: pathlib.Path) -> None:
    """`multiprocessing` forks by default on Linux. The child has none of the engine's
    threads and shares its files: what it changes is never kept (its `flush()` says why),
    nothing it does reaches the parent's directory, and dropping the engine there returns."""
    import os
    import sys
    import time

    engine = waitline.Engine(data_dir=tmp_path, manual_clock=True, fsync="periodic")
    call = engine.dial(to="1", from_="2")
    engine.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        verdict = b"?"
        unraisable: list[BaseException | None] = []  # a panic while the engine is dropped
        sys.unraisablehook = lambda hook: unraisable.append(hook.exc_value)
        try:
            call.enqueue("support")  # applied in the child's memory only
            try:
                engine.flush()
                found = b"flush passed"
            except waitline.StoreError as e:
                found = b"ok" if "forked" in str(e) else str(e).encode()
            del engine, call
            gc.collect()
            verdict = repr(unraisable).encode() if unraisable else found  # once the engine is gone
        finally:
            os.write(write, verdict)
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the child hung")
        time.sleep(0.02)
    assert os.read(read, 200) == b"ok"
    # The parent goes on, and its directory holds its own changes only.
    assert call.state == "active"
    call.enqueue("sales")
    engine.flush()
    call_id = call.call_control_id
    del engine, call
    engine = reopen(tmp_path)
    assert (engine.call(call_id).queue, engine.queue("sales").current_size) == ("sales", 1)
