"""Pins: a spec's ``sha256`` records the tensors it was planned with; other tensors are refused."""
from __future__ import annotations

from ..spec import LLMSpec
from .dispatch import load_final_norm, load_layers
from .tensors import FinalNorm, LayerWeights, LLMWeightsError


def pinned_hashes(layers: list[LayerWeights], norm: FinalNorm | None = None) -> str | list[str]:
    """What a spec's ``sha256`` records: the layer's hash for one layer, else one per layer and the norm's last."""
    hashes = [w.sha256 for w in layers] + ([norm.sha256] if norm is not None else [])
    return hashes[0] if len(hashes) == 1 else hashes


def check_pin(spec: LLMSpec, layers: LayerWeights | list[LayerWeights], norm: FinalNorm | None = None) -> LLMSpec:
    """A sha256 in the spec pins the tensors: refuse others; returns the spec with the loaded tensors' hashes."""
    loaded = pinned_hashes([layers] if isinstance(layers, LayerWeights) else layers, norm)
    if spec.sha256 is not None and loaded != spec.sha256:
        what = spec.layers_named + (" and the final norm" if norm is not None else "")
        raise LLMWeightsError(
            f"{what} of {spec.source!r} {'hashes' if spec.depth == 1 and norm is None else 'hash'} to {loaded}, but "
            f"the plans pin {spec.sha256}: the weights changed. Restore them, or remove 'sha256' from the plans' llm "
            f"entry to accept the new ones (then write the plans again).")
    return spec.replace(sha256=loaded)


def load_pinned(spec: LLMSpec, hub_fs=None, echo=print) -> tuple[LLMSpec, list[LayerWeights], FinalNorm | None]:
    """The block's layer(s) and (``final_norm``) the model's final norm, checked against the spec's sha256 pin;
    returns the spec pinned to what was loaded."""
    layers = load_layers(spec, hub_fs, echo)
    norm = load_final_norm(spec, hub_fs, echo) if spec.final_norm else None
    return check_pin(spec, layers, norm), layers, norm
