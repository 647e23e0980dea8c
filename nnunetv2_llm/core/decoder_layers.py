"""The model's own parts, built from its config with transformers: the config, a decoder layer, its rotary and its
final norm, found on the meta device so nothing of the model is allocated.

The block takes the model's own classes, so a layer computes what it does inside the model; only decoder LLMs that
keep a ``layers`` list (the Llama/Qwen2/Mistral/Gemma layout) are supported.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig


def hf_config(config: dict) -> PretrainedConfig:
    """A transformers config from a plain dict (as stored in plans), with SDPA attention where the family's model
    supports it, else the eager attention (Gemma 2: SDPA cannot soft-cap the attention logits)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    d = dict(config)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"LLM config has no 'model_type' (keys: {sorted(config)}); store the model's config.json.")
    cfg = AutoConfig.for_model(model_type, **d)
    model_class = MODEL_MAPPING.get(type(cfg), None)
    cfg._attn_implementation = "sdpa" if getattr(model_class, "_supports_sdpa", True) else "eager"
    return cfg


def causal_mask(config: PretrainedConfig, tokens: int, like: torch.Tensor) -> torch.Tensor | None:
    """The additive causal mask the eager attention needs (SDPA is told ``is_causal`` instead: None)."""
    if config._attn_implementation != "eager":
        return None
    blocked = torch.ones(tokens, tokens, dtype=torch.bool, device=like.device).triu(1)
    return torch.zeros(tokens, tokens, dtype=like.dtype, device=like.device).masked_fill(
        blocked, torch.finfo(like.dtype).min)[None, None]


def _base_model_on_meta(config: PretrainedConfig) -> nn.Module:
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    if not hasattr(model, "layers"):
        raise ValueError(f"{type(model).__name__} keeps no `layers` list of decoder layers; only decoder LLMs "
                         f"in the Llama/Qwen2/Mistral/Gemma family layout are supported.")
    return model


def build_decoder_layer(config: PretrainedConfig, layer: int) -> nn.Module:
    """A freshly initialised decoder layer of the model's own class (found without allocating the model)."""
    layer_cls = type(_base_model_on_meta(config).layers[layer])
    return layer_cls(config, layer_idx=layer)


def zeroed_decoder_layer(config: PretrainedConfig, layer: int, dtype: torch.dtype) -> nn.Module:
    """The decoder layer's structure with all-zero tensors, for weights that are copied in next.

    A normally built layer pays for a random init that pretrained weights overwrite at once (0.4 s
    for a LLaMA-3.2-1B layer on 2 CPU cores, 40% of loading it). An all-zero layer passes its input
    through unchanged (every linear is zero, so every sublayer adds zero to the residual stream).
    """
    with torch.device("meta"):
        module = build_decoder_layer(config, layer)
    if any(True for _ in module.buffers()):
        # A buffer computed at construction would be lost on meta: build this layer the ordinary way.
        module = build_decoder_layer(config, layer).to(dtype)
    else:
        module = module.to(dtype).to_empty(device="cpu")
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def build_rotary(config: PretrainedConfig) -> nn.Module:
    return type(_base_model_on_meta(config).rotary_emb)(config)


def build_final_norm(config: PretrainedConfig) -> nn.Module:
    """The model's own final norm (the one before its LM head), at its constructor values (gain 1)."""
    norm_cls = type(_base_model_on_meta(config).norm)
    return norm_cls(config.hidden_size, eps=config.rms_norm_eps)
