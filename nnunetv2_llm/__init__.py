"""nnunetv2-llm: a frozen pretrained LLM decoder layer at the bottleneck of nnU-Net's U-Nets (LLM4Seg).

The public names below load on first use, so ``import nnunetv2_llm`` (and ``nnunetv2-llm --help``) stays quick.
"""
from __future__ import annotations

import importlib

__version__ = "0.4.0"

_PUBLIC = {
    "LLMSpec": "core.spec", "LLMSpecError": "core.spec",
    "MODELS": "core.models", "model_spec": "core.resolve",
    "load_variant": "core.variants", "variant_names": "core.variants",
    "LLMWeightsError": "core.weights", "LayerWeights": "core.weights", "extract_layer": "core.weights",
    "load_extracted": "core.weights", "load_layer": "core.weights", "read_config": "core.weights",
    "resolve_spec": "core.weights",
    "LLMBlock": "core.block", "LLMUNet": "core.network",
    "trainers_folder": "nnunet.environment",
}
# The 0.2 names of the named models (kept so scripts written for 0.2 run; see CHANGELOG.md).
_RENAMED = {"PRESETS": ("core.models", "MODELS"), "preset_spec": ("core.resolve", "model_spec")}
__all__ = sorted([*_PUBLIC, *_RENAMED])


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    if name in _RENAMED:
        module, new = _RENAMED[name]
        return getattr(importlib.import_module(f".{module}", __name__), new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
