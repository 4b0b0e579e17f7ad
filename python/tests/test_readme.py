"""The Python examples of the READMEs, run exactly as written: a reader pastes them as is."""

from __future__ import annotations

import contextlib
import io
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
from readme_blocks import block_containing  # noqa: E402


@pytest.mark.parametrize("readme", ["README.md", "python/README.md"])
def test_readme_example_runs(readme: str) -> None:
    code = block_containing("python", "bridged", readme)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, readme, "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    # What the comments of the example promise.
    assert "bridged True" in lines
    events = [line.split()[0] for line in lines if line.startswith(("call.", "queue."))]
    assert "queue.created" in events and "call.enqueued" in events and "call.hangup" in events


def test_capacity_planning_example_runs() -> None:
    code = block_containing("python", "waitline.simulate", "python/README.md")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "python/README.md", "exec"), {"__name__": "readme"})
    # Erlang C at this load: 11 agents answer 75.0% within 20 s, 12 agents 86.7%.
    assert out.getvalue().strip() == "12 agents answer 80% within 20 s"
