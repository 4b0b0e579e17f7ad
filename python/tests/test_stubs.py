"""The type stubs match the compiled module."""

from __future__ import annotations

import subprocess
import sys


def test_stubtest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "waitline._native", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_py_typed_is_shipped() -> None:
    import importlib.resources

    assert importlib.resources.files("waitline").joinpath("py.typed").is_file()
