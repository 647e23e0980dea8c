"""How every figure of compare is finished: long variant names wrapped for narrow margins, and the PNG written
whole (a run-unique temporary name, then renamed)."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from ..core.files import atomic_path


def wrap_name(name: str, width: int = 28) -> str:
    """A long trainer or plans name broken after its underscores only (never inside a word or at a hyphen), lines
    of at most ``width`` characters where the parts allow it."""
    lines = [""]
    for part in re.findall(r"[^_]+_*|_+", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def wrapped(names: list[str], width: int = 28) -> list[str]:
    """Long trainer names broken at their underscores, so the left margin stays narrow."""
    return [wrap_name(n, width) for n in names]


def wrap_title(text: str, width: int) -> str:
    """A title in lines of at most ``width`` characters, broken between words, so a narrow figure never cuts it."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False))


def savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
