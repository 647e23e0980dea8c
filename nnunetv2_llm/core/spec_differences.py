"""Whether two specs compute the same block: the computation fields that differ, their text, and the refusal of a
mismatch (plans against a checkpoint, a built-in trainer against plans, a fold against the folds before it)."""
from __future__ import annotations

from typing import Any

from .spec import LLMSpec, LLMSpecError, computation_fields


def spec_differences(a: LLMSpec, b: LLMSpec) -> list[tuple[str, Any, Any]]:
    """(field, a's value, b's value) for every computation field that differs; a missing sha256 matches any."""
    out = []
    for name in computation_fields():
        x, y = getattr(a, name), getattr(b, name)
        if name == "sha256" and (x is None or y is None):
            continue
        if x != y:
            out.append((name, x, y))
    return out


def describe_differences(differences, first: str, second: str) -> str:
    def short(value):
        text = repr(value)
        return text if len(text) <= 120 else text[:117] + "..."
    return "; ".join(f"{name}: {first} {short(x)}, {second} {short(y)}" for name, x, y in differences)


def refuse_spec_mismatch(expected: LLMSpec, other: LLMSpec, message: str, first: str = "plans",
                         second: str = "trained", error=LLMSpecError) -> None:
    """Raise ``message`` (its ``{differences}`` filled in) when the two specs compute different blocks."""
    differences = spec_differences(expected, other)
    if differences:
        raise error(message.replace("{differences}", describe_differences(differences, first, second)))

