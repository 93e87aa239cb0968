# SPDX-License-Identifier: GPL-2.0-or-later
"""
benchmarks/RESULTS.md is written by several benchmarks: the dump benchmark
owns the file's head (up to the first section another one owns), and each
of the others one ``## `` section, replaced when it runs again.
"""

from pathlib import Path
from typing import List

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: The sections other benchmarks write, in the order they appear.
OWN_SECTIONS = ("## Start-up", "## Live dumps", "## The guest's kernel in place", "## --paging")


def _split(text: str) -> List[str]:
    """The file's parts: before the first ``## `` heading, then each section."""
    parts: List[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") or not parts:
            parts.append("")
        parts[-1] += line
    return parts


def write_section(heading: str, body: str) -> None:
    """Replace (or add, at the end) the section *heading* of RESULTS.md."""
    parts = _split(RESULTS.read_text()) if RESULTS.exists() else [""]
    section = f"{heading}\n\n{body.strip()}\n\n"
    parts = [p if p.endswith("\n\n") or not p else p.rstrip("\n") + "\n\n" for p in parts]
    for i, part in enumerate(parts):
        if part.startswith(heading + "\n"):
            parts[i] = section
            break
    else:
        parts.append(section)
    RESULTS.write_text("".join(parts))


def write_head(text: str) -> None:
    """Replace all but the other benchmarks' sections with *text*."""
    kept = []
    if RESULTS.exists():
        kept = [p for p in _split(RESULTS.read_text()) if p.startswith(OWN_SECTIONS)]
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "".join(kept))
