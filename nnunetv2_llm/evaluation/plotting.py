"""How every figure of compare is finished: long variant names wrapped for narrow margins, and the PNG written
whole (a run-unique temporary name, then renamed)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from ..core.files import atomic_path


def wrapped(names: list[str], width: int = 28) -> list[str]:
    """Long trainer names broken at their underscores, so the left margin stays narrow."""
    return ["\n".join(textwrap.wrap(n.replace("__", "__ ").replace("_", "_ "), width)).replace("_ ", "_")
            for n in names]


def savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
