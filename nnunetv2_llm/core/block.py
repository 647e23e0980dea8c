"""The LLM block: bottleneck feature map -> tokens -> Linear(C->H) -> one LLM decoder layer -> Linear(H->C).

Works for 2D and 3D maps and any token count. Position and attention options are documented in
the README; the defaults reproduce the authors' reference code.
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from .spec import LLMSpec, LLMSpecError, describe_differences, spec_differences

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EXTRA_STATE = "_extra_state"  # torch's state-dict key suffix of a module's extra state
_SPEC_RECORD = "nnunetv2_llm_spec"


def hf_config(config: dict) -> PretrainedConfig:
    """A transformers config from a plain dict (as stored in plans), with SDPA attention."""
    d = dict(config)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"LLM config has no 'model_type' (keys: {sorted(config)}); store the model's config.json.")
    cfg = AutoConfig.for_model(model_type, **d)
    cfg._attn_implementation = "sdpa"
    return cfg


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


def rope_theta(config: PretrainedConfig) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


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


class IdentityLayer(nn.Module):
    """The identity control: stands where the decoder layer would and returns its input unchanged."""

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        return hidden_states


class LLMBlock(nn.Module):
    """Linear(C->H) -> one pretrained LLM decoder layer -> Linear(H->C) over the flattened feature map.

    A frozen layer keeps ``requires_grad=False``, stays in eval mode and runs outside autocast in its
    own dtype (fp32 or bf16), so nnU-Net's fp16 autocast cannot overflow it.
    """

    def __init__(self, channels: int, spec: LLMSpec):
        super().__init__()
        if spec.config is None:
            raise ValueError(f"LLM spec for {spec.source!r} carries no model config; resolve it first "
                             f"(nnunetv2_llm.resolve_spec) so the structure can be built without a download.")
        self.spec = spec
        self.trained_spec: LLMSpec | None = None  # set when a state dict (a checkpoint) is loaded
        self.config = hf_config(spec.config)
        hidden = self.config.hidden_size
        self.proj_in = nn.Linear(channels, hidden)
        if spec.init == "identity":
            self.layer = IdentityLayer()
        else:
            # Zeros until the pretrained tensors (load_pretrained) or a checkpoint's state dict arrive.
            self.layer = zeroed_decoder_layer(self.config, spec.layer, _DTYPES[spec.dtype])
        self.proj_out = nn.Linear(hidden, channels)
        self.rotary = build_rotary(self.config) if spec.positions == "rope" else None
        # The block passes no mask, so a sliding window would be ignored: token grids beyond it are refused.
        self.window = None if spec.init == "identity" else sliding_window(self.config, spec.layer)
        if spec.init == "random":
            self.reset_layer_parameters()
        self.layer.requires_grad_(spec.trainable)

    @property
    def frozen(self) -> bool:
        return not self.spec.trainable

    def reset_layer_parameters(self, keep_norms: bool = False) -> None:
        """'+Transformer' init: Xavier-uniform linears, zero biases; norms at their constructor values, or kept
        as they are (``keep_norms``: the authors' baseline, run after the pretrained tensors are loaded)."""
        fresh = build_decoder_layer(self.config, self.spec.layer)
        for m in fresh.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        state = fresh.state_dict()
        if keep_norms:
            linears = {f"{name}.{p}" for name, m in fresh.named_modules() if isinstance(m, nn.Linear)
                       for p in ("weight", "bias") if getattr(m, p, None) is not None}
            state = {**self.layer.state_dict(), **{k: v for k, v in state.items() if k in linears}}
        self.layer.load_state_dict(state)

    def load_pretrained(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy one layer's checkpoint tensors in, naming any missing, extra or misshapen tensor."""
        # Older exports saved the rotary buffer; it is recomputed from the config, never a weight.
        tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
        own = self.layer.state_dict()
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        bad = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs config {tuple(own[k].shape)}"
               for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
        if missing or extra or bad:
            raise ValueError(
                f"the weights of layer {self.spec.layer} of {self.spec.source!r} do not fit the structure its "
                f"config describes (missing {missing}, unexpected {extra}, shape mismatches {bad}). The config "
                f"and the weights come from different models: store the checkpoint's own config.json.")
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(tensors[k])  # converts the dtype in place, no temporary
        if self.spec.init == "random-reference":
            self.reset_layer_parameters(keep_norms=True)

    def get_extra_state(self) -> dict:
        """The spec the block was built (and trained) with travels in every state dict and checkpoint."""
        return {_SPEC_RECORD: self.spec.to_dict()}

    @staticmethod
    def recorded_spec(state: dict) -> LLMSpec:
        """The spec in a block's extra state (the value of ``llm._extra_state`` in a checkpoint)."""
        return LLMSpec.from_dict(state[_SPEC_RECORD])

    def set_extra_state(self, state: dict) -> None:
        """Refuse weights trained with a different computation than the spec this block was built from."""
        trained = self.recorded_spec(state)
        differences = spec_differences(self.spec, trained)
        if differences:
            raise LLMSpecError(
                f"these weights were trained with a different LLM block than the plans describe ("
                f"{describe_differences(differences, 'plans', 'trained')}). The results folder's plans.json was "
                f"edited or replaced after training, or folds of different plans are mixed: restore plans.json "
                f"(the checkpoint's init_args hold the plans it trained with), or predict each fold with its own "
                f"plans.")
        self.trained_spec = trained

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + EXTRA_STATE
        if key not in state_dict:
            warnings.warn(f"a state dict without {key} (nnunetv2-llm 0.1): it cannot be checked against the plans; "
                          f"train again or accept that the plans describe the block", stacklevel=2)
            state_dict = {**state_dict, key: self.get_extra_state()}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.layer.eval()
        return self

    def position_embeddings(self, spatial, hidden, position_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cos, sin) pair the decoder layer rotates q/k with, for raster positions ``position_ids``."""
        t = position_ids[0].to(torch.float32)[None, :, None]
        if self.spec.positions == "reference":
            # The reference passed [sin, cos] where HF unpacks (cos, sin): reproduce that exactly.
            return torch.sin(t).to(hidden.dtype), torch.cos(t).to(hidden.dtype)
        if self.spec.positions == "none":
            return torch.ones_like(t, dtype=hidden.dtype), torch.zeros_like(t, dtype=hidden.dtype)
        if self.spec.positions == "rope":
            return self.rotary(hidden, position_ids)
        cos, sin = axial_rotation(tuple(spatial), head_dim(self.config), rope_theta(self.config))
        return cos.to(hidden.device, hidden.dtype), sin.to(hidden.device, hidden.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = features.shape
        tokens = math.prod(spatial)
        if self.window is not None and tokens > self.window:
            raise ValueError(f"{tokens} tokens exceed the {self.window}-token sliding window of layer {self.spec.layer} "
                             f"of {self.spec.source!r}, which the block does not apply; use a smaller patch or a "
                             f"later encoder stage (`stage`), or a layer without a window.")
        llm_dtype = _DTYPES[self.spec.dtype]
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.float().flatten(2).transpose(1, 2)
            hidden = self.proj_in(x.to(self.proj_in.weight.dtype)).to(llm_dtype)
            position_ids = torch.arange(tokens, device=features.device)[None]
            cos_sin = self.position_embeddings(spatial, hidden, position_ids)
            out = self.layer(hidden, attention_mask=None, position_ids=position_ids,
                             position_embeddings=cos_sin,
                             is_causal=self.spec.attention == "causal")
            y = self.proj_out(out.to(self.proj_out.weight.dtype))
            y = y.transpose(1, 2).reshape(batch, channels, *spatial)
            if self.spec.residual:
                y = y + features.float()
            if features.dtype in (torch.float16, torch.bfloat16):
                # Under nnU-Net's fp16 autocast the decoder gets fp16: saturate instead of overflowing to inf.
                limit = torch.finfo(features.dtype).max
                y = y.clamp(-limit, limit)
        return y.to(features.dtype)
