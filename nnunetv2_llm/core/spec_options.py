"""How a spec option is declared, and what is derived from the declarations: an :class:`Option` (a field made with
:func:`option`) is a user option of :class:`~nnunetv2_llm.core.spec.LLMSpec`; its flag, variant and grid key, range,
plans-name tag and whether it changes the trained block are read from here, never listed elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .spec import LLMSpec


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
    tag: Callable[["LLMSpec"], str] | None = None  # suffix in plans names when the value is not the default

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


def declared_options(spec_class: type | None = None) -> dict[str, Option]:
    """Every user option of :class:`LLMSpec` (or a subclass), in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(_spec_class(spec_class)) if "option" in f.metadata}


def option_names() -> tuple[str, ...]:
    return tuple(declared_options())


def option_field(name: str, spec_class: type | None = None) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(_spec_class(spec_class)) if f.name == name)


def option_default(name: str, spec_class: type | None = None):
    f = option_field(name, spec_class)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def computation_fields() -> tuple[str, ...]:
    """The fields that change what the block computes at inference (trainable, say, only changes how it trains)."""
    declared = declared_options()
    return tuple(f.name for f in dataclasses.fields(_spec_class(None))
                 if f.name not in declared or declared[f.name].affects_inference)


def _spec_class(spec_class: type | None) -> type:
    """``spec_class``, else :class:`~nnunetv2_llm.core.spec.LLMSpec` (looked up when asked: the spec declares its
    options with this module's :func:`option`)."""
    if spec_class is not None:
        return spec_class
    from . import spec
    return spec.LLMSpec
