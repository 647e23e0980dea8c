"""What every reader returns: one layer's tensors or the final norm, their sha256, and the key rules they share."""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

import torch

from ..errors import UserError

MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit


class LLMWeightsError(UserError, RuntimeError):
    """The layer's weights cannot be found or do not fit; the message names the source and the fix."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and raw bytes, independent of the file format holding them."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class LayerWeights:
    """The tensors of one decoder layer, keyed relative to the layer (``self_attn.q_proj.weight``)."""

    tensors: dict[str, torch.Tensor]
    config: dict
    source: str
    layer: int
    revision: str | None = None
    files: list[str] = field(default_factory=list)

    @functools.cached_property
    def sha256(self) -> str:
        """Computed once per load (a LLaMA-3.2-1B layer is 243 MB)."""
        return tensors_sha256(self.tensors)


@dataclass
class FinalNorm:
    """The model's final norm gain (what ``final_norm`` applies after the layers)."""

    weight: torch.Tensor
    files: list[str] = field(default_factory=list)

    @functools.cached_property
    def sha256(self) -> str:
        return tensors_sha256({"weight": self.weight})


def no_such_layer(where: str, layer: int, present, fix: str = "") -> LLMWeightsError:
    """The error for a file that holds no tensors of ``layer``; ``present``: the layer indices it does hold."""
    present = sorted(present)
    have = f"layers {present[0]}..{present[-1]}" if present else "no decoder layers"
    return LLMWeightsError(f"{where} holds no tensors of decoder layer {layer} ({have}). Pick a layer in that "
                           f"range{fix}.")


def layer_prefix(keys, layer: int, where: str) -> str:
    """The key prefix of decoder layer ``layer`` in a checkpoint (``model.layers.N.``)."""
    pattern = re.compile(rf"^(.*?)layers\.{layer}\.")
    prefixes = {m.group(0) for k in keys if (m := pattern.match(k))}
    if not prefixes:
        present = {int(m.group(1)) for k in keys if (m := re.search(r"layers\.(\d+)\.", k))}
        raise no_such_layer(where, layer, present, ", or re-download the checkpoint if it is partial")
    return min(prefixes, key=len)


def final_norm_key(keys, layer: int, where: str) -> str:
    """The model's final norm next to its decoder layers: ``model.layers.N.`` -> ``model.norm.weight``."""
    prefix = layer_prefix(keys, layer, where)
    key = prefix[: prefix.rindex("layers.")] + "norm.weight"
    if key not in keys:
        raise LLMWeightsError(f"{where} holds no final norm {key!r} next to its decoder layers; it is a partial "
                              f"checkpoint, or its final norm is named otherwise. Drop final_norm, or pass the "
                              f"model's full checkpoint.")
    return key


# A *choice* picks, from a checkpoint's keys, what to read and the prefix to strip: a layer's tensors or the norm.
def layer_keys(layer: int, where: str):
    def choose(keys):
        prefix = layer_prefix(keys, layer, where)
        return [k for k in keys if k.startswith(prefix)], prefix
    return choose


def norm_keys(layer: int, where: str):
    def choose(keys):
        key = final_norm_key(keys, layer, where)
        return [key], key[: -len("weight")]
    return choose
