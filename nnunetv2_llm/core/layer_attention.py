"""What each decoder layer of the chosen model attends to and how it rotates q/k: full or sliding-window attention,
the kind of layer (``layer_types``), its RoPE base and head width; the description ``plan`` and ``info`` print of a
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


def layer_type(config: PretrainedConfig, layer: int) -> str | None:
    """The kind of decoder layer ``layer`` is (``sliding_attention``/``full_attention`` in ``layer_types``: Gemma 2/3,
    Qwen2, ...), or None for a family whose layers are all alike."""
    types = getattr(config, "layer_types", None)
    return types[layer] if types else None


def rope_theta(config: PretrainedConfig, layer: int = 0) -> float:
    """The RoPE base of layer ``layer``: Gemma 3 keeps one per kind of layer (``rope_parameters[layer_type]``)."""
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(layer_type(config, layer), params)
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def layer_kind(config: PretrainedConfig, layer: int) -> str:
    """Which kind of layer ``layer`` is (what ``info`` and ``plan`` print): its attention, full or within a sliding
    window (Gemma 2/3's local layers, Mistral), and the RoPE base of that kind."""
    window = sliding_window(config, layer)
    attention = f"sliding-window attention ({window} tokens)" if window else "full attention"
    return f"{attention}, RoPE base {rope_theta(config, layer):g}"


def layer_kinds(spec: LLMSpec) -> str:
    """:func:`layer_kind` of each layer of the block, once if they are all alike."""
    config = hf_config(spec.config)
    kinds = {i: layer_kind(config, i) for i in range(spec.layer, spec.layer + spec.depth)}
    if len(set(kinds.values())) == 1:
        return next(iter(kinds.values()))
    return "; ".join(f"layer {i}: {k}" for i, k in kinds.items())


def describe(spec: LLMSpec) -> str:
    """The spec's summary and which kind of layer(s) it chose (what ``plan`` and ``info`` print)."""
    return spec.summary() if spec.init == "identity" else f"{spec.summary()}; {layer_kinds(spec)}"
