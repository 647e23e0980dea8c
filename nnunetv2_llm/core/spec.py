"""What LLM layer goes into the bottleneck, and how it is wired: a plain, JSON-serialisable spec, its validation and
its error.

The spec lives in nnU-Net plans (``configurations[c]['llm']``, :mod:`.plans_entry`), so the network structure can be
rebuilt at inference from ``plans.json`` alone, with no download. How its options are declared is
:mod:`.spec_options`; every way to get a spec (from a model, flags, plans, a checkpoint) is :mod:`.resolve`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from .errors import UserError
from .spec_options import Option, field_kinds, option

POSITIONS = ("reference", "rope", "axial", "none")
ATTENTION = ("causal", "bidirectional")
# pretrained: the LLM's tensors; random: the '+Transformer' baseline, every tensor re-drawn (norm gains at 1);
# random-reference: the authors' '+Transformer' (linears re-drawn, RMSNorm gains kept pretrained);
# identity: the control with the layer replaced by identity (only the two projections remain).
INIT = ("pretrained", "random", "random-reference", "identity")
DTYPES = ("float32", "bfloat16")
# LoRA's defaults: the attention projections, rank 8 (when asked for), alpha 16 (scaling alpha / rank = 2).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_RANK, LORA_ALPHA = 8, 16.0

class LLMSpecError(UserError, ValueError):
    """A spec value is invalid; the message names the value, the accepted range and the fix."""


def check_layers(layers: list[int], n_layers: int | None, source: str, fix: str = "") -> None:
    """Every index must name one of the model's ``n_layers`` decoder layers (unknown count: no check)."""
    outside = [i for i in layers if n_layers is not None and not 0 <= i < n_layers]
    if outside:
        raise LLMSpecError(
            f"{'layers' if len(outside) > 1 else 'layer'} {', '.join(map(str, outside))} out of range for {source}: "
            f"it has {n_layers} decoder layers, valid indices are 0..{n_layers - 1} (0-based; the paper's 'k-th' "
            f"layer is index k-1).{fix}")


def check_model_config(config: dict, source: str) -> None:
    """The config fields that shape a decoder layer must describe a buildable one (e.g. after a hand edit)."""
    def field_value(name):
        value = config.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise LLMSpecError(f"config {name}={value!r} of {source} must be a positive integer; restore the "
                               f"model's own config.json values.")
        return value
    if not isinstance(config.get("model_type"), str):
        raise LLMSpecError(f"config of {source} has no model_type string; store the model's own config.json.")
    hidden, heads, kv_heads = field_value("hidden_size"), field_value("num_attention_heads"), \
        field_value("num_key_value_heads")
    for name in ("intermediate_size", "num_hidden_layers", "head_dim"):
        field_value(name)
    if hidden and heads and config.get("head_dim") is None and hidden % heads:
        raise LLMSpecError(f"config hidden_size={hidden} of {source} is not a multiple of num_attention_heads={heads}, "
                           f"so no attention head size fits; restore the model's own config.json values.")
    if heads and kv_heads and heads % kv_heads:
        raise LLMSpecError(f"config num_attention_heads={heads} of {source} is not a multiple of "
                           f"num_key_value_heads={kv_heads}; restore the model's own config.json values.")


def _lora_tag(spec: "LLMSpec") -> str:
    targets = "" if tuple(spec.lora_targets) == LORA_TARGETS else \
        "t" + hashlib.sha256(",".join(spec.lora_targets).encode()).hexdigest()[:4]
    alpha = "" if spec.lora_alpha == LORA_ALPHA else f"a{spec.lora_alpha:g}"
    dropout = "" if not spec.lora_dropout else f"p{spec.lora_dropout:g}"
    return f"lora{spec.lora_rank}{alpha}{dropout}{targets}"


def _at_least(name: str, minimum: int, what: str):
    return lambda value: None if value >= minimum else f"{name}={value}: {what}"


@dataclass
class LLMSpec:
    """One decoder layer of an LLM (or ``depth`` consecutive ones from ``layer`` on) and the options of the block
    around it: each option is declared once, here.

    Defaults reproduce the authors' code: one frozen pretrained layer, no outer residual, causal attention over
    raster order and their fixed 1-rad-per-token position rotation. The adaptations peers use are options:
    ``lora_rank`` > 0 puts LoRA adapters (peft) on ``lora_targets`` of the frozen layer(s), ``gate`` adds the block
    as ``input + g * block(input)`` with ``g`` learnt from 0, ``final_norm`` applies the model's own final RMSNorm
    after the layer(s). ``sha256`` pins the tensors: one hash for one layer, else one per layer (and the final
    norm's last). The field order is the order of the tags in plans names.
    """

    source: str
    layer: int
    init: str = option(
        "pretrained", affects_inference=True, group="wiring", choices=INIT,
        tag=lambda s: {"random": "rand", "random-reference": "randref", "identity": "identity"}[s.init],
        help="pretrained (the LLM's tensors); random ('+Transformer': every tensor re-drawn); random-reference (the "
             "authors' '+Transformer': norm gains kept pretrained); identity (control: the layer replaced by "
             "identity, only the projections remain)")
    trainable: bool = option(
        False, affects_inference=False, group="wiring", tag=lambda s: "T",
        help="fine-tune the LLM layer (paper '(T)'); --no-trainable keeps it frozen")
    positions: str = option(
        "reference", affects_inference=True, group="wiring", choices=POSITIONS,
        tag=lambda s: "nopos" if s.positions == "none" else s.positions,
        help="how q/k are rotated: reference (the authors' fixed 1-rad-per-token rotation), rope (the model's own "
             "RoPE over the raster index), axial (N-D RoPE over the grid), none")
    attention: str = option(
        "causal", affects_inference=True, group="wiring", choices=ATTENTION, tag=lambda s: "bidir",
        help="causal over the raster order (the authors', what SDPA does without a mask) or bidirectional")
    residual: bool = option(
        False, affects_inference=True, group="wiring", tag=lambda s: "res",
        help="add the block's input to its output (--no-residual: the authors' plain block)")
    dtype: str = option(
        "float32", affects_inference=True, group="wiring", choices=DTYPES, tag=lambda s: "bf16",
        help="dtype the layer is stored and run in (bfloat16 halves its share of the checkpoint)")
    stage: int = option(
        -1, affects_inference=True, group="wiring", tag=lambda s: f"stage{s.stage}",
        help="encoder stage the block acts on (-1: the bottleneck)")
    revision: str | None = option(
        None, affects_inference=False, group="tensors", help="hub revision (branch, tag or commit; None: main)")
    depth: int = option(
        1, affects_inference=True, group="tensors", tag=lambda s: f"d{s.depth}",
        check=_at_least("depth", 1, "the block holds 1 or more consecutive decoder layers (default 1)."),
        help="consecutive decoder layers from --layer on in one block")
    lora_rank: int = option(
        0, affects_inference=True, group="adaptation", metavar="R", tag=_lora_tag,
        check=_at_least("lora_rank", 0, f"a LoRA rank is >= 0 (0: no LoRA; e.g. --lora-rank {LORA_RANK})."),
        help=f"LoRA adapters of rank R (peft) inside the frozen layer; only they and the two projections train, the "
             f"layer's tensors stay bit-identical (0: none; e.g. {LORA_RANK})")
    lora_alpha: float = option(
        LORA_ALPHA, affects_inference=True, group="adaptation", metavar="A",
        check=lambda v: None if v > 0 else f"lora_alpha={v}: LoRA's alpha is > 0 (its update is scaled by alpha / "
                                           f"rank; default {LORA_ALPHA:g}).",
        help="LoRA's alpha: its update is scaled by A / R")
    lora_targets: list = option(
        default_factory=lambda: list(LORA_TARGETS), affects_inference=True, group="adaptation", metavar="NAMES",
        check=lambda v: None if v and all(isinstance(t, str) and t for t in v) and len(set(v)) == len(v) else
        f"lora_targets={v!r}: name each linear of the decoder layer once, e.g. {','.join(LORA_TARGETS)}.",
        help="comma-separated linears of the layer that get adapters (the attention projections by default; e.g. "
             "add gate_proj,up_proj,down_proj for the MLP)")
    lora_dropout: float = option(
        0.0, affects_inference=False, group="adaptation", metavar="P",
        check=lambda v: None if 0 <= v < 1 else f"lora_dropout={v}: a dropout probability is in [0, 1) (default 0).",
        help="dropout on LoRA's input while training")
    gate: bool = option(
        False, affects_inference=True, group="adaptation", tag=lambda s: "gate",
        help="output = input + g * block(input) with a learnt scalar g starting at 0: the net starts exactly as the "
             "plain U-Net and adds only what training finds useful")
    final_norm: bool = option(
        False, affects_inference=True, group="tensors", tag=lambda s: "fnorm",
        help="the model's own final RMSNorm after the layer(s), pretrained and frozen with them, as MedVisionLlama "
             "applies it")
    sha256: str | list | None = None
    config: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, kinds = getattr(self, f.name), field_kinds(f)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                accepted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                hint = " (JSON true/false, not a string)" if bool in kinds else ""
                raise LLMSpecError(f"{f.name}={value!r} must be {accepted}{hint}; fix the llm entry.")
        for name, declared in declared_options(type(self)).items():
            value = getattr(self, name)
            if declared.choices and value not in declared.choices:
                raise LLMSpecError(f"{name}={value!r} is not accepted; choose one of "
                                   f"{', '.join(map(repr, declared.choices))}.")
            refused = declared.check(value) if declared.check else None
            if refused:
                raise LLMSpecError(refused)
        self._check_combinations()
        if self.config is not None:
            check_model_config(self.config, self.source)
            n_layers = self.config.get("num_hidden_layers")
            check_layers([self.layer], n_layers, self.source)
            if n_layers is not None and self.layer + self.depth > n_layers:
                raise LLMSpecError(
                    f"depth={self.depth} from layer {self.layer} runs past the last decoder layer of {self.source} "
                    f"({self.layers_named}, the model has 0..{n_layers - 1}); use "
                    + (f"--layer {n_layers - self.depth} or lower, or --depth {n_layers - self.layer} or less."
                       if self.depth <= n_layers else f"--depth {n_layers - self.layer} or less."))

    def _check_combinations(self) -> None:
        """The combinations of options that mean nothing."""
        def refuse(message):
            raise LLMSpecError(message)
        if self.lora_rank and self.trainable:
            refuse("LoRA adapts a frozen layer, but trainable=True fine-tunes the whole layer: drop --trainable "
                   "(LoRA) or --lora-rank (full fine-tuning).")
        if self.init == "identity":
            asked = [name for name, on in (("--lora-rank", self.lora_rank), ("--gate", self.gate),
                                           ("--final-norm", self.final_norm), ("--depth", self.depth > 1)) if on]
            if asked:
                refuse(f"init='identity' replaces the layer by identity (the control of the projections alone), so "
                       f"{', '.join(asked)} has nothing to act on: drop {' and '.join(asked)}, or choose another "
                       f"--init.")
        if self.gate and self.residual:
            refuse("--gate already adds the block's input (output = input + g * block(input), g learnt from 0): "
                   "drop --residual.")
        if isinstance(self.sha256, list) and (not self.sha256 or not all(isinstance(h, str) for h in self.sha256)):
            refuse(f"sha256={self.sha256!r}: one hash string per layer (and one for the final norm); write the spec "
                   f"with `nnunetv2-llm plan`.")

    def name_tag(self) -> str:
        """Plans-name suffixes for every option that differs from the paper's frozen reference wiring."""
        return "".join(f"-{declared.tag(self)}" for name, declared in declared_options(type(self)).items()
                       if declared.tag is not None and getattr(self, name) != option_default(name, type(self)))

    def options_text(self) -> str:
        """``init=pretrained, trainable=False, ...``: every wiring option, and each other option that is not at its
        default (depth shows in :attr:`layers_named`); the one text of a spec's options in logs, ``info`` and
        ``plan``."""
        declared = declared_options(type(self))
        return ", ".join(f"{name}={_text(getattr(self, name))}" for name, option_ in declared.items()
                         if option_.group == "wiring" or (name != "depth" and getattr(self, name)
                                                          != option_default(name, type(self))))

    def summary(self) -> str:
        """``source layer N (init=..., ...)``."""
        return f"{self.source} {self.layers_named} ({self.options_text()})"

    @property
    def layers_named(self) -> str:
        """``layer 14``, or ``layers 14..15`` for a block of several."""
        return f"layer {self.layer}" if self.depth == 1 else f"layers {self.layer}..{self.layer + self.depth - 1}"

    @property
    def loads_pretrained(self) -> bool:
        """Whether the layer needs the source's tensors (all of them, or the norm gains of 'random-reference')."""
        return self.init in ("pretrained", "random-reference")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LLMSpec":
        fields = dataclasses.fields(cls)
        known = {f.name for f in fields}
        unknown = set(d) - known
        if unknown:
            raise LLMSpecError(f"unknown LLM spec keys {sorted(unknown)}; accepted keys are {sorted(known)}.")
        required = {f.name for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if required - set(d):
            raise LLMSpecError(f"LLM spec {d} lacks the required keys {sorted(required - set(d))}; "
                               f"write the spec with LLMSpec.to_dict().")
        return cls(**d)

    def replace(self, **changes) -> "LLMSpec":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- what is derived from the declarations

def declared_options(spec_class: type | None = None) -> dict[str, Option]:
    """Every user option of :class:`LLMSpec` (or a subclass), in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(spec_class or LLMSpec) if "option" in f.metadata}


def option_names() -> tuple[str, ...]:
    return tuple(declared_options())


def option_field(name: str, spec_class: type | None = None) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(spec_class or LLMSpec) if f.name == name)


def option_default(name: str, spec_class: type | None = None):
    f = option_field(name, spec_class)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def computation_fields() -> tuple[str, ...]:
    """The fields that change what the block computes at inference (trainable, say, only changes how it trains)."""
    declared = declared_options()
    return tuple(f.name for f in dataclasses.fields(LLMSpec)
                 if f.name not in declared or declared[f.name].affects_inference)


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) \
        else str(value)

