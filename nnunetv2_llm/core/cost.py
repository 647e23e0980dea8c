"""What a network costs: trainable and frozen parameters, and FLOPs counted by torch for one patch.

The paper's "Param(M)" is the trainable count; its GFLOPs are one forward pass of one patch. ``info``, ``compare``
and the benchmarks count with these functions, so their numbers agree.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

FLOPS_NOTE = ("GFLOPs = FLOPs counted by torch.utils.flop_counter.FlopCounterMode / 1e9 for one forward pass of "
              "one patch at batch size 1 (2 FLOPs per multiply-accumulate, so GMACs = GFLOPs / 2; attention "
              "runs on the math SDPA backend so the counter sees it).")


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameters of a module (the paper's "Param(M)" counts the trainable ones)."""
    counts = {"trainable": 0, "frozen": 0}
    for p in module.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


@dataclass
class NetCost:
    trainable: int
    frozen: int
    flops: int
    tokens: int | None = None
    token_grid: tuple[int, ...] | None = None
    hidden_size: int | None = None

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict:
        return {**asdict(self), "gflops": self.gflops, "gmacs": self.gflops / 2}


def measure(net: nn.Module, in_channels: int, patch_size: tuple[int, ...]) -> NetCost:
    """Parameter counts and counted FLOPs of one forward pass; a fake input tensor, so no real compute."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .network import LLMUNet
    counts = parameter_counts(net)
    with FakeTensorMode(allow_non_fake_inputs=True):
        patch = torch.zeros(1, in_channels, *patch_size)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            net(patch)
    cost = NetCost(counts["trainable"], counts["frozen"], int(counter.get_total_flops()))
    if isinstance(net, LLMUNet):
        cost.token_grid = net.token_grid(patch_size)
        cost.tokens = math.prod(cost.token_grid)
        cost.hidden_size = net.llm.config.hidden_size
    return cost
