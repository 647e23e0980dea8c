"""A U-Net from nnU-Net's plans with the LLM block applied to one encoder stage's output (default: the bottleneck).

The wrapped net's ``encoder`` and ``decoder`` stay attributes of the wrapper, so state-dict keys,
``decoder.deep_supervision`` and everything nnU-Net reaches through them are unchanged; the block
adds only ``llm.*`` keys.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .block import LLMBlock
from .spec import LLMSpec


def stage_grid(patch_size, strides, stage: int) -> tuple[int, ...]:
    """Spatial size of encoder stage ``stage``'s feature map for an input patch (nnU-Net's per-stage ``strides``)."""
    strides = np.array(strides[: stage + 1]).reshape(stage + 1, -1)
    return tuple(int(s) for s in np.array(patch_size) // np.prod(strides, axis=0))


def stage_out_of_range(stage: int, n_stages: int, where: str) -> str | None:
    """Why ``stage`` names no encoder stage of a net of ``n_stages`` (negative counts from the bottleneck), or None."""
    if -n_stages <= stage < n_stages:
        return None
    return (f"stage={stage} is out of range for {where}: its net has {n_stages} encoder stages, valid values are "
            f"{-n_stages}..{n_stages - 1} (-1 is the bottleneck).")


class LLMUNet(nn.Module):
    """Encoder -> LLM block on ``skips[stage]`` -> decoder, for PlainConvUNet and ResidualEncoderUNet, 2D and 3D."""

    def __init__(self, unet: nn.Module, spec: LLMSpec):
        super().__init__()
        if not (hasattr(unet, "encoder") and hasattr(unet, "decoder")):
            raise TypeError(f"{type(unet).__name__} has no encoder/decoder pair; the LLM block wraps the "
                            f"dynamic_network_architectures U-Nets (PlainConvUNet, ResidualEncoderUNet).")
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        n_stages = len(self.encoder.output_channels)
        refused = stage_out_of_range(spec.stage, n_stages, type(unet).__name__)
        if refused:
            raise ValueError(refused)
        self.stage = spec.stage % n_stages
        self.llm = LLMBlock(self.encoder.output_channels[self.stage], spec)
        self.wrapped_class = type(unet).__name__

    def forward(self, x):
        skips = list(self.encoder(x))
        skips[self.stage] = self.llm(skips[self.stage])
        return self.decoder(skips)

    def token_grid(self, patch_size) -> tuple[int, ...]:
        """Spatial size of the feature map the block sees for an input patch."""
        return stage_grid(patch_size, self.encoder.strides, self.stage)


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module behind DDP and torch.compile wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)
