"""The LLM block: bottleneck feature map -> tokens -> Linear(C->H) -> one LLM decoder layer -> Linear(H->C).

Works for 2D and 3D maps and any token count. Position and attention options are documented in
docs/models-and-variants.md; the defaults reproduce the authors' reference code.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from .spec import LLMSpec, LLMSpecError
from .spec_differences import refuse_spec_mismatch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EXTRA_STATE = "_extra_state"  # torch's state-dict key suffix of a module's extra state
_SPEC_RECORD = "nnunetv2_llm_spec"
_VERSION_RECORD = "nnunetv2_llm_version"


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


def build_final_norm(config: PretrainedConfig) -> nn.Module:
    """The model's own final norm (the one before its LM head), at its constructor values (gain 1)."""
    norm_cls = type(_base_model_on_meta(config).norm)
    return norm_cls(config.hidden_size, eps=config.rms_norm_eps)


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


class LLMBlock(nn.Module):
    """Linear(C->H) -> one (or ``depth``) pretrained LLM decoder layer(s) [-> the model's final norm] -> Linear(H->C)
    over the flattened feature map [, added as ``input + g * block(input)`` with a gate ``g`` learnt from 0].

    A frozen layer keeps ``requires_grad=False``, stays in eval mode and runs outside autocast in its
    own dtype (fp32 or bf16), so nnU-Net's fp16 autocast cannot overflow it; LoRA adapters on it train.
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
        indices = range(spec.layer, spec.layer + spec.depth)
        self.init_mode = INIT_MODES[spec.init]
        if not self.init_mode.layer:
            self.layer = IdentityLayer()
        else:
            # Zeros until the pretrained tensors (load_pretrained) or a checkpoint's state dict arrive.
            layers = [zeroed_decoder_layer(self.config, i, _DTYPES[spec.dtype]) for i in indices]
            self.layer = layers[0] if spec.depth == 1 else nn.ModuleList(layers)
        self.norm = build_final_norm(self.config).to(_DTYPES[spec.dtype]) if spec.final_norm else None
        self.proj_out = nn.Linear(hidden, channels)
        self.gate = nn.Parameter(torch.zeros(())) if spec.gate else None
        self.rotary = build_rotary(self.config) if spec.positions == "rope" else None
        # The block passes no mask, so a sliding window would be ignored: token grids beyond it are refused.
        windows = [w for i in indices if (w := sliding_window(self.config, i))] if self.init_mode.layer else []
        self.window = min(windows) if windows else None
        if self.init_mode.redraw_at_build:
            self.reset_layer_parameters()
        self.layer.requires_grad_(spec.trainable)
        if self.norm is not None:
            self.norm.requires_grad_(spec.trainable)
        if spec.lora_rank:
            for layer in self.decoder_layers:
                add_lora(layer, spec)

    @property
    def decoder_layers(self) -> list[nn.Module]:
        """The decoder layer(s) in the order they run (none for the identity control)."""
        if isinstance(self.layer, IdentityLayer):
            return []
        return list(self.layer) if isinstance(self.layer, nn.ModuleList) else [self.layer]

    @property
    def frozen(self) -> bool:
        return not self.spec.trainable

    def reset_layer_parameters(self, keep_norms: bool = False) -> None:
        """'+Transformer' init: Xavier-uniform linears, zero biases; norms at their constructor values, or kept
        as they are (``keep_norms``: the authors' baseline, run after the pretrained tensors are loaded)."""
        for index, layer in zip(range(self.spec.layer, self.spec.layer + self.spec.depth), self.decoder_layers):
            fresh = build_decoder_layer(self.config, index)
            for m in fresh.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            linears = {f"{name}.{p}" for name, m in fresh.named_modules() if isinstance(m, nn.Linear)
                       for p in ("weight", "bias") if getattr(m, p, None) is not None}
            own = base_tensors(layer)
            with torch.no_grad():
                for k, v in fresh.state_dict().items():
                    if not keep_norms or k in linears:
                        own[k].copy_(v)
        if self.norm is not None and not keep_norms:
            with torch.no_grad():
                self.norm.load_state_dict(build_final_norm(self.config).state_dict())

    def load_pretrained(self, tensors: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
                        final_norm: torch.Tensor | None = None) -> None:
        """Copy the layers' checkpoint tensors in (one dict per layer; a single dict for one layer), and the final
        norm's gain, naming any missing, extra or misshapen tensor."""
        per_layer = [tensors] if isinstance(tensors, dict) else list(tensors)
        if len(per_layer) != len(self.decoder_layers):
            raise ValueError(f"{len(per_layer)} layer(s) of tensors for a block of {len(self.decoder_layers)}.")
        for index, (layer, given) in enumerate(zip(self.decoder_layers, per_layer), start=self.spec.layer):
            # Older exports saved the rotary buffer; it is recomputed from the config, never a weight.
            given = {k: v for k, v in given.items() if not k.endswith("rotary_emb.inv_freq")}
            own = base_tensors(layer)
            missing = sorted(set(own) - set(given))
            extra = sorted(set(given) - set(own))
            bad = [f"{k}: checkpoint {tuple(given[k].shape)} vs config {tuple(own[k].shape)}"
                   for k in sorted(set(own) & set(given)) if given[k].shape != own[k].shape]
            if missing or extra or bad:
                raise ValueError(
                    f"the weights of layer {index} of {self.spec.source!r} do not fit the structure its config "
                    f"describes (missing {missing}, unexpected {extra}, shape mismatches {bad}). The config and the "
                    f"weights come from different models: store the checkpoint's own config.json.")
            with torch.no_grad():
                for k, v in own.items():
                    v.copy_(given[k])  # converts the dtype in place, no temporary
        if self.norm is not None:
            if final_norm is None:
                raise ValueError(f"the block applies the final norm of {self.spec.source!r}, but no final norm "
                                 f"weight was given.")
            with torch.no_grad():
                self.norm.weight.copy_(final_norm)
        if self.init_mode.redraw_linears_after_load:
            self.reset_layer_parameters(keep_norms=True)

    def pretrained_tensors(self) -> list[dict[str, torch.Tensor]]:
        """The layers' own tensors as they are now (LoRA's adapters left out), one dict per layer."""
        return [{k: v.detach() for k, v in base_tensors(layer).items()} for layer in self.decoder_layers]

    def get_extra_state(self) -> dict:
        """The spec the block was built (and trained) with travels in every state dict and checkpoint, with the
        version of this package that wrote it."""
        from .. import __version__
        return {_SPEC_RECORD: self.spec.to_dict(), _VERSION_RECORD: __version__}

    @staticmethod
    def recorded_spec(state: dict) -> LLMSpec:
        """The spec in a block's extra state (the value of ``llm._extra_state`` in a checkpoint)."""
        return LLMSpec.from_dict(state[_SPEC_RECORD])

    def set_extra_state(self, state: dict) -> None:
        """Refuse weights trained with a different computation than the spec this block was built from."""
        trained = self.recorded_spec(state)
        refuse_spec_mismatch(
            self.spec, trained,
            "these weights were trained with a different LLM block than the plans describe ({differences}). The "
            "results folder's plans.json was edited or replaced after training, or folds of different plans are "
            "mixed: restore plans.json (the checkpoint's init_args hold the plans it trained with), or predict each "
            "fold with its own plans.")
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
        """A frozen layer (and its final norm) stays in eval mode; LoRA's dropout follows ``mode``."""
        super().train(mode)
        if self.frozen:
            self.layer.eval()
            for name, module in self.layer.named_modules():
                if name.endswith("lora_dropout"):
                    module.train(mode)
        return self

    def position_embeddings(self, spatial, hidden, position_ids, layer: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cos, sin) pair decoder layer ``layer`` (default: the first) rotates q/k with, for raster positions
        ``position_ids``, as :data:`POSITION_MODES` computes it for ``spec.positions``."""
        layer = self.spec.layer if layer is None else layer
        return POSITION_MODES[self.spec.positions](self, spatial, hidden, position_ids, layer)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``y = proj_out(layers(proj_in(tokens)))``, added to the input as the spec says (:meth:`around`), outside
        autocast and in the layer's own dtype."""
        batch, channels, *spatial = features.shape
        self._refuse_beyond_window(math.prod(spatial))
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.float()
            tokens = x.flatten(2).transpose(1, 2)
            hidden = self.proj_in(tokens.to(self.proj_in.weight.dtype)).to(_DTYPES[self.spec.dtype])
            hidden = self.run_layers(hidden, spatial)
            y = self.proj_out(hidden.to(self.proj_out.weight.dtype)).transpose(1, 2).reshape(batch, channels, *spatial)
            y = self.around(x, y)
        return saturate(y, features.dtype)

    def run_layers(self, hidden: torch.Tensor, spatial) -> torch.Tensor:
        """The decoder layer(s) in order, each rotating q/k as its kind does (layers of one kind share their
        rotation), then the model's final norm when the spec asks for it."""
        tokens = hidden.shape[1]
        position_ids = torch.arange(tokens, device=hidden.device)[None]
        causal = self.spec.attention == "causal"
        mask = causal_mask(self.config, tokens, hidden) if causal else None
        rotations = {}
        for index, layer in enumerate(self.decoder_layers or [self.layer], start=self.spec.layer):
            kind = layer_type(self.config, index)
            if kind not in rotations:
                rotations[kind] = self.position_embeddings(spatial, hidden, position_ids, index)
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotations[kind],
                           is_causal=causal)
        return hidden if self.norm is None else self.norm(hidden)

    def around(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` and the layers' ``y``: ``y`` (the authors' block), ``x + y``
        (``residual``) or ``x + g * y`` (``gate``, g learnt from 0)."""
        if self.gate is not None:
            return x + self.gate * y
        return x + y if self.spec.residual else y

    def _refuse_beyond_window(self, tokens: int) -> None:
        """The block passes no window mask: a sliding-window layer must see the whole grid."""
        if self.window is not None and tokens > self.window:
            raise LLMSpecError(window_refusal(self.spec, tokens))


def saturate(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``y`` in ``dtype``; under nnU-Net's fp16 autocast the decoder gets fp16: saturate instead of overflowing."""
    if dtype in (torch.float16, torch.bfloat16):
        limit = torch.finfo(dtype).max
        y = y.clamp(-limit, limit)
    return y.to(dtype)


# ---------------------------------------------------------------- how q/k are rotated: one function per mode

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
    kind = layer_type(block.config, layer)
    if kind in getattr(block.rotary, "layer_types", ()):
        return block.rotary(hidden, position_ids, kind)
    return block.rotary(hidden, position_ids)


def _axial_rope(block, spatial, hidden, position_ids, layer):
    """N-D RoPE over the grid, with the RoPE base of the layer's kind."""
    cos, sin = axial_rotation(tuple(spatial), head_dim(block.config), rope_theta(block.config, layer))
    return cos.to(hidden.device, hidden.dtype), sin.to(hidden.device, hidden.dtype)


POSITION_MODES = {"reference": _reference_rotation, "none": _no_rotation, "rope": _model_rope, "axial": _axial_rope}
