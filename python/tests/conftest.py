from __future__ import annotations

import pytest

import waitline


@pytest.fixture()
def engine() -> waitline.Engine:
    return waitline.Engine(manual_clock=True)


def call_events(engine: waitline.Engine) -> list[tuple[str, str]]:
    """(event_type, call_control_id) of the call events since the last poll."""
    return [(e.event_type, e.payload["call_control_id"]) for e in engine.poll_events() if e.event_type.startswith("call.")
            and e.event_type not in ("call.initiated", "call.answered")]
