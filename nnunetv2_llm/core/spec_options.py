"""How a spec option is declared: an :class:`Option` (a field made with :func:`option`) is a user option of
:class:`~nnunetv2_llm.core.spec.LLMSpec`, and its flag, variant and grid key, range, plans-name tag and whether it
changes the trained block are read from that declaration (``core.spec.declared_options``), never listed elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """Everything the rest of the house derives from one spec option: its command-line flag (``--name-with-dashes``)
    and help, its key in variant files and sweep grids, its range, its tag in plans names, and whether it changes
    what the trained block computes at inference. The type and default are the dataclass field's own."""

    help: str
    group: str  # "tensors" (which tensors are read), "wiring" or "adaptation": where --help lists the flag
    # True: plans and a checkpoint that differ in it hold different blocks, so predicting with the one's plans and the
    # other's weights is refused; False: it only changes how the block trains or where its tensors come from.
    # No default: a new option must decide.
    affects_inference: bool
    choices: tuple = ()
    metavar: str | None = None
    check: Callable[[Any], str | None] | None = None  # the refusal of an out-of-range value, or None
    tag: Callable[[Any], str] | None = None  # of the spec  # suffix in plans names when the value is not the default

    @staticmethod
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")


def option(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **declaration):
    """A spec field that is a user option (see :class:`Option`)."""
    return field(default=default, default_factory=default_factory, metadata={"option": Option(**declaration)})


_KINDS = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "list": (list,), "dict": (dict,),
          "None": (type(None),)}


def field_kinds(f: dataclasses.Field) -> tuple:
    """The JSON types a field accepts, from its annotation (``str | None`` -> str or null; a float takes an int)."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return tuple(k for part in annotation.split("|") for k in _KINDS[part.strip()])
