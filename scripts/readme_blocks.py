"""The fenced code blocks of a Markdown file, so that tests run the README's examples as
they are written (a reader pastes them as is; the tests prove that works)."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str, path: str = "README.md") -> list[str]:
    """Every block fenced with ```language in the file (relative to the repository root)."""
    text = (ROOT / path).read_text()
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def block_containing(language: str, marker: str, path: str = "README.md") -> str:
    """The one block of that language whose text contains `marker`."""
    found = [b for b in blocks(language, path) if marker in b]
    if len(found) != 1:
        raise LookupError(f"{path}: {len(found)} {language} blocks contain {marker!r}")
    return found[0]
