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
from .spec import SPEC_OPTIONS

DESCRIPTIVE_KEYS = ("description", "reproduces", "trainer", "llm", "layer")
KEYS = (*DESCRIPTIVE_KEYS, *SPEC_OPTIONS)
_TYPES = {"layer": (int, str), "stage": (int,), "residual": (bool,), "trainable": (bool,), "revision": (str,),
          "lora_rank": (int,), "lora_alpha": (int, float), "lora_targets": (list,), "lora_dropout": (int, float),
          "depth": (int,), "gate": (bool,), "final_norm": (bool,)}


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
        raise VariantError(f"variant file {path} must hold a JSON object with keys from {', '.join(KEYS)}.")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        hint = "" if "hidden_size" not in unknown else (" (hidden_size went with the model-specific presets of "
                                                         "0.2: the model now comes from --llm or the 'llm' key)")
        raise VariantError(f"variant file {path} has unknown keys {unknown}{hint}; accepted keys are "
                           f"{', '.join(KEYS)}.")
    for key, value in data.items():
        kinds = _TYPES.get(key, (str,))
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise VariantError(f"variant file {path}: {key}={value!r} must be of type "
                               f"{' or '.join(k.__name__ for k in kinds)}; fix the file.")
    return Variant(name=path.stem, description=data.get("description", ""), reproduces=data.get("reproduces", ""),
                   trainer=data.get("trainer"), llm=data.get("llm"), layer=data.get("layer"),
                   options={k: data[k] for k in SPEC_OPTIONS if k in data})
