"""The variants: named wirings of a model's layer (the paper's rows, its controls, other wirings), one JSON file each.

The files live in the repository's ``plans/`` folder (installed as ``nnunetv2_llm.variant_files``) and are the one
source of truth: ``nnunetv2-llm plan --variant NAME`` reads them, and the built-in trainers are derived from the
ones that name a ``trainer`` suffix (``nnUNetTrainer`` + model + suffix: ``nnUNetTrainerLLaMATrainable``).
A file holds spec options (``trainable``, ``init``, ...) and optionally ``layer`` (an index, a range, ``last``
or ``all``; default: the model's paper layer) and ``llm`` (a default model, for files of your own).
"""
from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError, did_you_mean
from . import spec
from .spec_options import field_kinds

DESCRIPTIVE_KEYS = ("description", "reproduces", "trainer", "llm", "layer")


def variant_keys() -> tuple[str, ...]:
    """What a variant file may hold: its descriptive keys and every spec option."""
    return (*DESCRIPTIVE_KEYS, *spec.option_names())


def key_kinds(key: str) -> tuple:
    """The JSON types of a variant file's key: a spec option's own (not null), ``layer`` an index or a text."""
    if key == "layer":
        return (int, str)
    if key in spec.option_names():
        return tuple(k for k in field_kinds(spec.option_field(key)) if k is not type(None))
    return (str,)


class VariantError(UserError, ValueError):
    """A variant name or file that cannot be used; the message names it and the accepted values."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str = ""
    reproduces: str = ""
    trainer: str | None = None  # suffix of the built-in trainers; None: no built-in trainer
    llm: str | None = None
    layer: int | str | None = None
    options: dict = field(default_factory=dict)


def variants_folder() -> Path:
    return Path(str(importlib.resources.files("nnunetv2_llm.variant_files")))


def variant_names() -> list[str]:
    return sorted(p.stem for p in variants_folder().glob("*.json"))


def load_variant(name_or_path: str) -> Variant:
    """A shipped variant by name, or a JSON file of your own with the same keys."""
    path = Path(name_or_path)
    if not path.is_file():
        path = variants_folder() / f"{name_or_path}.json"
    if not path.is_file():
        raise VariantError(f"--variant {name_or_path!r} is neither a file nor a known variant; the variants are "
                           f"{', '.join(variant_names())}.{did_you_mean(name_or_path, variant_names())}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VariantError(f"variant file {path} is not valid JSON ({e}); fix the file.") from None
    if not isinstance(data, dict):
        raise VariantError(f"variant file {path} must hold a JSON object with keys from {', '.join(variant_keys())}.")
    keys = variant_keys()
    unknown = sorted(set(data) - set(keys))
    if unknown:
        hint = "" if "hidden_size" not in unknown else (" (hidden_size went with the model-specific presets of "
                                                         "0.2: the model now comes from --llm or the 'llm' key)")
        raise VariantError(f"variant file {path} has unknown keys {unknown}{hint}; accepted keys are "
                           f"{', '.join(keys)}.")
    for key, value in data.items():
        kinds = key_kinds(key)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise VariantError(f"variant file {path}: {key}={value!r} must be of type "
                               f"{' or '.join(k.__name__ for k in kinds)}; fix the file.")
    return Variant(name=path.stem, description=data.get("description", ""), reproduces=data.get("reproduces", ""),
                   trainer=data.get("trainer"), llm=data.get("llm"), layer=data.get("layer"),
                   options={k: data[k] for k in spec.option_names() if k in data})
