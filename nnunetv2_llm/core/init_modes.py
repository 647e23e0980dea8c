"""What each ``init`` value builds: the decoder layer's structure and when its linears are re-drawn, or the
identity control standing in the layer's place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class IdentityLayer(nn.Module):
    """The identity control: stands where the decoder layer would and returns its input unchanged."""

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        return hidden_states


@dataclass(frozen=True)
class InitMode:
    """What an ``init`` value builds: the layer's structure (or identity in its place), and when its linears are
    re-drawn (Xavier-uniform): at build (every tensor) or after the pretrained tensors are loaded (norm gains kept)."""

    layer: bool
    redraw_at_build: bool = False
    redraw_linears_after_load: bool = False


INIT_MODES = {
    "pretrained": InitMode(layer=True),
    "random": InitMode(layer=True, redraw_at_build=True),  # '+Transformer': every tensor re-drawn, norm gains 1
    "random-reference": InitMode(layer=True, redraw_linears_after_load=True),  # the authors' '+Transformer'
    "identity": InitMode(layer=False),  # the control: only the two projections remain
}
