"""How the block's decoder layers rotate q/k over the token grid: one function per ``positions`` mode, each giving
the (cos, sin) pair a layer takes, and the N-D (axial) RoPE tables.

The options are documented in docs/models-and-variants.md; the default (``reference``) reproduces the authors' code.
"""
from __future__ import annotations

import functools

import torch

from .layer_attention import attention_type_of_layer, head_dim, rope_theta


@functools.lru_cache(maxsize=32)
def axial_rotation(spatial: tuple[int, ...], dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """N-D RoPE: the head's rotary pairs are split across the spatial axes, each rotated by its coordinate.

    Built once per grid (cached). On a 1-D grid this is the standard RoPE of base ``theta``; the model's RoPE
    scaling (e.g. llama3's) is not applied: it stretches long 1-D contexts, and a bottleneck grid is short."""
    pairs = dim // 2
    sizes = [pairs // len(spatial) + (1 if a < pairs % len(spatial) else 0) for a in range(len(spatial))]
    coords = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in spatial], indexing="ij"),
                         dim=-1).reshape(-1, len(spatial))
    angles = []
    for axis, m in enumerate(sizes):
        inv_freq = 1.0 / theta ** (torch.arange(m, dtype=torch.float32) / max(m, 1))
        angles.append(coords[:, axis:axis + 1] * inv_freq)
    freqs = torch.cat(angles, dim=-1)
    emb = torch.cat((freqs, freqs), dim=-1)[None]
    return emb.cos(), emb.sin()


def _reference_rotation(block, spatial, hidden, position_ids, layer):
    """The authors' fixed 1-rad-per-token rotation; they passed [sin, cos] where HF unpacks (cos, sin): reproduced
    exactly."""
    t = position_ids[0].to(torch.float32)[None, :, None]
    return torch.sin(t).to(hidden.dtype), torch.cos(t).to(hidden.dtype)


def _no_rotation(block, spatial, hidden, position_ids, layer):
    t = position_ids[0].to(torch.float32)[None, :, None]
    return torch.ones_like(t, dtype=hidden.dtype), torch.zeros_like(t, dtype=hidden.dtype)


def _model_rope(block, spatial, hidden, position_ids, layer):
    """The model's own RoPE (with its scaling) over the raster index; Gemma 3's rotary keeps one base per kind."""
    kind = attention_type_of_layer(block.config, layer)
    if kind in getattr(block.rotary, "layer_types", ()):
        return block.rotary(hidden, position_ids, kind)
    return block.rotary(hidden, position_ids)


def _axial_rope(block, spatial, hidden, position_ids, layer):
    """N-D RoPE over the grid, with the RoPE base of the layer's kind."""
    cos, sin = axial_rotation(tuple(spatial), head_dim(block.config), rope_theta(block.config, layer))
    return cos.to(hidden.device, hidden.dtype), sin.to(hidden.device, hidden.dtype)


POSITION_MODES = {"reference": _reference_rotation, "none": _no_rotation, "rope": _model_rope, "axial": _axial_rope}
