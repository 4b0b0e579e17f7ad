"""Fails when a tracked file refers to a path outside the repository: a relative path that
climbs out of it (`../` past the root, resolved from the file's folder), a folder kept
beside the repository, or an absolute path of one machine. A clone alone must pass every
test, so nothing may depend on what happens to sit next to it.

Usage: python3 scripts/check_self_contained.py [ROOT]   (default: this repository)"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

# `../` chains followed by a name: resolved against the file's own folder.
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]*)")
# Shapes that name a place beside or outside the repository without a `../` chain.
OUTSIDE = [
    (re.compile(r"""\.\./shared\b|\.parent\s*/\s*["']shared["']|/\s*["']shared["']\s*/"""), "a folder beside the repository"),
    (re.compile(r"""(?:^|[\s"'(=:`])/(?:work|root|home|Users)/[\w.-]"""), "an absolute path of one machine"),
]
SKIP_SUFFIXES = (".lock",)
SKIP_DIRS = ("fuzz/corpus/", "fuzz/regressions/")


def tracked_files(root: pathlib.Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def problems(root: pathlib.Path) -> list[str]:
    root = root.resolve()
    found = []
    for rel in tracked_files(root):
        if rel.endswith(SKIP_SUFFIXES) or rel.startswith(SKIP_DIRS):
            continue
        path = root / rel
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in RELATIVE.finditer(line):
                if not (path.parent / (m.group(1) + m.group(2))).resolve().is_relative_to(root):
                    found.append(f"{rel}:{n}: {m.group(0)!r} leads outside the repository")
            for pattern, what in OUTSIDE:
                if pattern.search(line):
                    found.append(f"{rel}:{n}: names {what}: {line.strip()[:120]}")
    return found


def main() -> int:
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1]
    found = problems(root)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"{len(found)} reference(s) outside the repository", file=sys.stderr)
        return 1
    print("no tracked file refers outside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
