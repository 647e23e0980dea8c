"""Layer indices from text: ``14``, ``0-15``, ``0,3,7-9``, ``last`` and ``all`` (``--layer``, variant files, sweep
grids), for single layers and for the first layers of blocks of several."""
from __future__ import annotations

import re

from .spec import LLMSpecError


def parse_block_starts(text, num_layers: int | None, depth: int = 1) -> list[int]:
    """As :func:`parse_layers`, for the first layer of blocks of ``depth`` layers: ``last`` is the last block that
    fits (``num_layers - depth``), ``all`` every start of one."""
    return parse_layers(text, None if num_layers is None else num_layers - depth + 1)


def parse_layers(text, num_layers: int | None = None) -> list[int]:
    """``14``, ``0-15``, ``0,3,7-9``, or (with the model's ``num_layers``) ``last`` and ``all`` -> sorted indices."""
    words = {"last": f"{num_layers - 1}", "all": f"0-{num_layers - 1}"} if num_layers else {}
    layers = set()
    for part in str(text).split(","):
        part = words.get(part.strip(), part)
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            named = " or 'last' / 'all'" if num_layers else ""
            raise LLMSpecError(f"layer {text!r} is not understood; write an index (14), a range (0-15) or a comma "
                               f"list (0,3,7-9){named}.")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise LLMSpecError(f"layer range {part.strip()!r} runs backwards; write {last}-{first}.")
        layers.update(range(first, last + 1))
    return sorted(layers)

