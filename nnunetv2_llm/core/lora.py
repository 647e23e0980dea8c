"""LoRA on the frozen decoder layer(s): which linears it can target and how large its rank may be (refused before
anything is written), peft's adapters put in place, and the layer's own tensors told apart from the adapters'.
"""
from __future__ import annotations

import torch
from torch import nn

from .decoder_layers import build_decoder_layer, hf_config
from .spec import LLMSpec, LLMSpecError


def linear_names(layer: nn.Module) -> list[str]:
    """The names LoRA can target in a decoder layer: the last part of each linear's name (``q_proj``, ...)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, nn.Linear)})


def check_lora_targets(spec: LLMSpec, layer: nn.Module | None = None) -> None:
    """LoRA's targets must be linears of the decoder layer, and its rank at most the smallest dimension of a
    targeted linear (a larger rank only adds parameters: an update of an out x in matrix has rank <= min(out, in)).
    When no layer is given, one is built on the meta device: no memory, so planning can refuse before anything is
    written."""
    if layer is None:
        with torch.device("meta"):
            layer = build_decoder_layer(hf_config(spec.config), spec.layer)
    unknown = sorted(set(spec.lora_targets) - set(linear_names(layer)))
    if unknown:
        from .families import family_of
        family = family_of(spec.config.get("model_type", ""))
        attention = sorted({name.rsplit(".", 1)[-1] for name, m in layer.named_modules()
                            if isinstance(m, nn.Linear) and ".self_attn." in f".{name}"})
        named = f"{family.name}'s" if family else "its"
        raise LLMSpecError(f"lora_targets {unknown} are not linears of layer {spec.layer} of {spec.source!r}; its "
                           f"linears are {', '.join(linear_names(layer))}. Pass --lora-targets from those ({named} "
                           f"attention: --lora-targets {','.join(attention)}).")
    linears = [(name.rsplit(".", 1)[-1], m) for name, m in layer.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in spec.lora_targets]
    name, narrowest = min(linears, key=lambda nm: min(nm[1].in_features, nm[1].out_features))
    bound = min(narrowest.in_features, narrowest.out_features)
    if spec.lora_rank > bound:
        raise LLMSpecError(f"lora_rank={spec.lora_rank} exceeds {bound}, the smallest dimension of the targeted "
                           f"{name} ({narrowest.in_features} -> {narrowest.out_features}) of layer {spec.layer} of "
                           f"{spec.source!r}: a larger rank adds parameters, not expressiveness. Pass --lora-rank "
                           f"{bound} or less (e.g. 8), or drop {name} from --lora-targets.")


def add_lora(layer: nn.Module, spec: LLMSpec) -> None:
    """peft's LoRA adapters on ``spec.lora_targets`` of a (frozen) decoder layer, in place; the adapters are kept in
    float32 (the layer may be bfloat16) and start as a zero update (peft's init: B = 0)."""
    from peft import LoraConfig, inject_adapter_in_model
    check_lora_targets(spec, layer)
    config = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=list(spec.lora_targets), bias="none")
    inject_adapter_in_model(config, layer)
    for name, p in layer.named_parameters():
        if ".lora_" in name:
            p.data = p.data.float()


def base_tensors(layer: nn.Module) -> dict[str, torch.Tensor]:
    """A decoder layer's own tensors under their checkpoint names: LoRA's adapters left out and peft's
    ``.base_layer`` taken out of the wrapped linears' names (what the pretrained file holds and its sha256 covers)."""
    return {name.replace(".base_layer", ""): t for name, t in layer.state_dict(keep_vars=True).items()
            if ".lora_" not in name}
