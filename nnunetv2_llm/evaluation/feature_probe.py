"""Catching the features the analysis measures: forward hooks on the LLM block's input and output (or a plain
net's encoder bottleneck) during one forward pass of a patch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Features:
    before: np.ndarray  # C x *grid
    after: np.ndarray | None  # C x *grid, None for a plain net

    @property
    def decoder_input(self) -> np.ndarray:
        return self.before if self.after is None else self.after


class FeatureProbe:
    """Forward hooks catching the LLM block's input and output (or a plain net's encoder bottleneck)."""

    def __init__(self, network):
        self.network = network
        self.has_llm = hasattr(network, "llm")
        self.caught: dict = {}

    def _hook_llm(self, module, inputs, output):
        self.caught["before"], self.caught["after"] = inputs[0], output

    def _hook_encoder(self, module, inputs, output):
        self.caught["before"] = output[-1]

    def __call__(self, image: np.ndarray, device) -> Features:
        import torch
        self.caught = {}
        target, hook = (self.network.llm, self._hook_llm) if self.has_llm else (self.network.encoder,
                                                                                 self._hook_encoder)
        handle = target.register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.network(torch.from_numpy(image)[None].to(device))
        finally:
            handle.remove()
        to_np = lambda t: t[0].detach().float().cpu().numpy()  # noqa: E731
        after = self.caught.get("after")
        return Features(to_np(self.caught["before"]), None if after is None else to_np(after))
