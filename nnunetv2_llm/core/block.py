"""The LLM block: bottleneck feature map -> tokens -> Linear(C->H) -> one LLM decoder layer -> Linear(H->C).

Works for 2D and 3D maps and any token count. Position and attention options are documented in
docs/models-and-variants.md; the defaults reproduce the authors' reference code. The model's own parts come from
decoder_layers, q/k's rotation from positions, the adapters from lora and the init modes from init_modes.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .decoder_layers import (build_decoder_layer, build_final_norm, build_rotary, causal_mask, hf_config,
                             zeroed_decoder_layer)
from .init_modes import INIT_MODES, IdentityLayer
from .layer_attention import attention_type_of_layer, sliding_window, window_refusal
from .lora import add_lora, base_tensors
from .positions import POSITION_MODES
from .spec import LLMSpec, LLMSpecError
from .spec_differences import refuse_spec_mismatch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EXTRA_STATE = "_extra_state"  # torch's state-dict key suffix of a module's extra state
_SPEC_RECORD = "nnunetv2_llm_spec"
_VERSION_RECORD = "nnunetv2_llm_version"


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
        """``y = proj_out(layers(proj_in(tokens)))``, combined with the input as the spec says
        (:meth:`combine_with_input`), outside autocast and in the layer's own dtype."""
        batch, channels, *spatial = features.shape
        self._refuse_beyond_window(math.prod(spatial))
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.float()
            tokens = x.flatten(2).transpose(1, 2)
            hidden = self.proj_in(tokens.to(self.proj_in.weight.dtype)).to(_DTYPES[self.spec.dtype])
            hidden = self.run_layers(hidden, spatial)
            y = self.proj_out(hidden.to(self.proj_out.weight.dtype)).transpose(1, 2).reshape(batch, channels, *spatial)
            y = self.combine_with_input(x, y)
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
            kind = attention_type_of_layer(self.config, index)
            if kind not in rotations:
                rotations[kind] = self.position_embeddings(spatial, hidden, position_ids, index)
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotations[kind],
                           is_causal=causal)
        return hidden if self.norm is None else self.norm(hidden)

    def combine_with_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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
