"""What each decoder layer of the chosen model attends to and how it rotates q/k: full or sliding-window attention,
its attention type (``layer_types``), its RoPE base and head width; the description ``plan`` and ``info`` print of a
spec's layers, and the refusal of a token grid beyond a sliding window (the block passes no window mask).
"""
from __future__ import annotations

from transformers import PretrainedConfig

from .decoder_layers import hf_config
from .init_modes import INIT_MODES
from .spec import LLMSpec


def head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def sliding_window(config: PretrainedConfig, layer: int) -> int | None:
    """The attention window of decoder layer ``layer`` (None: it attends to every earlier token): Mistral's
    ``sliding_window``, or Qwen2's and others' for the layers ``layer_types`` marks as sliding."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if window is None or (types is not None and types[layer] != "sliding_attention"):
        return None
    return int(window)


def window_refusal(spec: LLMSpec, tokens: int, stage_tokens: dict[int, int] | None = None) -> str | None:
    """Why the block's layer(s) cannot take ``tokens`` tokens, with what would fit, or None when they can. The block
    passes no window mask, so a sliding-window layer must see the whole grid; the token count is known from the plans
    (``plan`` and ``sweep plan`` refuse it there), else the first forward pass refuses it. ``stage_tokens`` (encoder
    stage -> tokens of its grid) names the stages that fit."""
    if spec.config is None or not INIT_MODES[spec.init].layer:
        return None
    config = hf_config(spec.config)
    windows = [w for i in range(spec.layer, spec.layer + spec.depth) if (w := sliding_window(config, i))]
    if not windows or tokens <= min(windows):
        return None
    window = min(windows)
    full = [str(i) for i in range(config.num_hidden_layers) if sliding_window(config, i) is None]
    fits = [f"a full-attention layer of that model (--layer {','.join(full)})"] if full else []
    stages = [f"{stage} ({n} tokens)" for stage, n in (stage_tokens or {}).items() if n <= window]
    if stages:
        fits.append(f"an encoder stage whose grid fits (--stage {' or '.join(stages)})")
    fits.append(f"a patch of at most {window} tokens at that stage")
    return (f"{tokens} tokens exceed the {window}-token sliding window of {spec.layers_named} of {spec.source!r}, "
            f"which the block does not apply (it passes no window mask); use {', or '.join(fits)}.")


def attention_type_of_layer(config: PretrainedConfig, layer: int) -> str | None:
    """The attention type of decoder layer ``layer`` as the config's ``layer_types`` names it (``sliding_attention`` or
    ``full_attention``: Gemma 2/3, Qwen2, ...), or None for a family whose layers are all alike."""
    types = getattr(config, "layer_types", None)
    return types[layer] if types else None


def rope_theta(config: PretrainedConfig, layer: int = 0) -> float:
    """The RoPE base of layer ``layer``: Gemma 3 keeps one per attention type (``rope_parameters`` keyed by it)."""
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(attention_type_of_layer(config, layer), params)
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def describe_block_layers(spec: LLMSpec) -> str:
    """Which kind of layer each layer of the block is (what ``info`` and ``plan`` print): its attention, full or within
    a sliding window (Gemma 2/3's local layers, Mistral), and the RoPE base of that kind; once if they are all alike."""
    config = hf_config(spec.config)
    kinds = {}
    for i in range(spec.layer, spec.layer + spec.depth):
        window = sliding_window(config, i)
        attention = f"sliding-window attention ({window} tokens)" if window else "full attention"
        kinds[i] = f"{attention}, RoPE base {rope_theta(config, i):g}"
    if len(set(kinds.values())) == 1:
        return next(iter(kinds.values()))
    return "; ".join(f"layer {i}: {k}" for i, k in kinds.items())


def describe(spec: LLMSpec) -> str:
    """The spec's summary and which kind of layer(s) it chose (what ``plan`` and ``info`` print)."""
    return spec.summary() if spec.init == "identity" else f"{spec.summary()}; {describe_block_layers(spec)}"
