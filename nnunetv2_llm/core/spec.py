"""What LLM layer goes into the bottleneck, and how it is wired: a plain, JSON-serialisable spec.

The spec lives in nnU-Net plans (``configurations[c]['llm']``), so the network structure can be
rebuilt at inference from ``plans.json`` alone, with no download.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

# Where the spec lives in nnU-Net plans: configurations[c][PLANS_KEY].
PLANS_KEY = "llm"
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
# The wiring options of a spec, besides its source and layer: what `--positions` etc. set on the command line.
SPEC_OPTIONS = ("positions", "attention", "residual", "init", "trainable", "dtype", "stage", "revision",
                "lora_rank", "lora_alpha", "lora_targets", "lora_dropout", "depth", "gate", "final_norm")


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


def _choice(name: str, value: Any, accepted: tuple) -> None:
    if value not in accepted:
        raise LLMSpecError(f"{name}={value!r} is not accepted; choose one of {', '.join(map(repr, accepted))}.")


_FIELD_TYPES = {"source": (str,), "layer": (int,), "positions": (str,), "attention": (str,), "residual": (bool,),
                "init": (str,), "trainable": (bool,), "dtype": (str,), "stage": (int,), "revision": (str, type(None)),
                "lora_rank": (int,), "lora_alpha": (int, float), "lora_targets": (list,), "lora_dropout": (int, float),
                "depth": (int,), "gate": (bool,), "final_norm": (bool,),
                "sha256": (str, list, type(None)), "config": (dict, type(None))}


@dataclass
class LLMSpec:
    """One decoder layer of an LLM (or ``depth`` consecutive ones from ``layer`` on) and the options of the block
    around it.

    Defaults reproduce the authors' code: one frozen pretrained layer, no outer residual, causal attention over
    raster order and their fixed 1-rad-per-token position rotation. The adaptations peers use are options:
    ``lora_rank`` > 0 puts LoRA adapters (peft) on ``lora_targets`` of the frozen layer(s), ``gate`` adds the block
    as ``input + g * block(input)`` with ``g`` learnt from 0, ``final_norm`` applies the model's own final RMSNorm
    after the layer(s). ``sha256`` pins the tensors: one hash for one layer, else one per layer (and the final
    norm's last).
    """

    source: str
    layer: int
    positions: str = "reference"
    attention: str = "causal"
    residual: bool = False
    init: str = "pretrained"
    trainable: bool = False
    dtype: str = "float32"
    stage: int = -1
    revision: str | None = None
    lora_rank: int = 0
    lora_alpha: float = LORA_ALPHA
    lora_targets: list = field(default_factory=lambda: list(LORA_TARGETS))
    lora_dropout: float = 0.0
    depth: int = 1
    gate: bool = False
    final_norm: bool = False
    sha256: str | list | None = None
    config: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                accepted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                hint = " (JSON true/false, not a string)" if bool in kinds else ""
                raise LLMSpecError(f"{name}={value!r} must be {accepted}{hint}; fix the llm entry.")
        _choice("positions", self.positions, POSITIONS)
        _choice("attention", self.attention, ATTENTION)
        _choice("init", self.init, INIT)
        _choice("dtype", self.dtype, DTYPES)
        self._check_adaptations()
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

    def _check_adaptations(self) -> None:
        """Ranges of the LoRA, depth, gate and final-norm options, and the combinations that mean nothing."""
        def refuse(message):
            raise LLMSpecError(message)
        if self.lora_rank < 0:
            refuse(f"lora_rank={self.lora_rank}: a LoRA rank is >= 0 (0: no LoRA; e.g. --lora-rank {LORA_RANK}).")
        if not self.lora_alpha > 0:
            refuse(f"lora_alpha={self.lora_alpha}: LoRA's alpha is > 0 (its update is scaled by alpha / rank; "
                   f"default {LORA_ALPHA:g}).")
        if not 0 <= self.lora_dropout < 1:
            refuse(f"lora_dropout={self.lora_dropout}: a dropout probability is in [0, 1) (default 0).")
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets) \
                or len(set(self.lora_targets)) != len(self.lora_targets):
            refuse(f"lora_targets={self.lora_targets!r}: name each linear of the decoder layer once, e.g. "
                   f"{','.join(LORA_TARGETS)}.")
        if self.depth < 1:
            refuse(f"depth={self.depth}: the block holds 1 or more consecutive decoder layers (default 1).")
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


# The fields that change what the block computes (trainable only changes how it trains).
COMPUTATION_FIELDS = ("source", "sha256", "layer", "positions", "attention", "residual", "init", "dtype", "stage",
                      "lora_rank", "lora_alpha", "lora_targets", "depth", "gate", "final_norm",
                      "config")


def spec_differences(a: LLMSpec, b: LLMSpec) -> list[tuple[str, Any, Any]]:
    """(field, a's value, b's value) for every computation field that differs; a missing sha256 matches any."""
    out = []
    for name in COMPUTATION_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "sha256" and (x is None or y is None):
            continue
        if x != y:
            out.append((name, x, y))
    return out


def describe_differences(differences, first: str, second: str) -> str:
    def short(value):
        text = repr(value)
        return text if len(text) <= 120 else text[:117] + "..."
    return "; ".join(f"{name}: {first} {short(x)}, {second} {short(y)}" for name, x, y in differences)


def refuse_another_block(expected: LLMSpec, other: LLMSpec, message: str, first: str = "plans",
                         second: str = "trained", error=LLMSpecError) -> None:
    """Raise ``message`` (its ``{differences}`` filled in) when the two specs compute different blocks."""
    differences = spec_differences(expected, other)
    if differences:
        raise error(message.replace("{differences}", describe_differences(differences, first, second)))


def spec_from_entry(entry, where: str) -> LLMSpec:
    """The spec stored in a plans file's ``llm`` entry; a bad entry is an error that says ``where`` it is."""
    if not isinstance(entry, dict):
        raise LLMSpecError(f"the '{PLANS_KEY}' entry of {where} is {entry!r}, not a JSON object; rewrite it with "
                           f"`nnunetv2-llm plan`.")
    try:
        return LLMSpec.from_dict(entry)
    except LLMSpecError as e:
        raise LLMSpecError(f"the '{PLANS_KEY}' entry of {where}: {e}") from None


def parse_block_starts(text, num_layers: int | None, depth: int = 1) -> list[int]:
    """As :func:`parse_layers`, for the first layer of blocks of ``depth`` layers: ``last`` is the last block that
    fits (``num_layers - depth``), ``all`` every start of one."""
    return parse_layers(text, None if num_layers is None else num_layers - depth + 1)


def parse_layers(text, num_layers: int | None = None) -> list[int]:
    """``14``, ``0-15``, ``0,3,7-9``, or (with the model's ``num_layers``) ``last`` and ``all`` -> sorted indices."""
    words = {"last": f"{num_layers - 1}", "all": f"0-{num_layers - 1}"} if num_layers else {}
    layers = set()
    for part in str(text).split(","):
        part = words.get(part.strip(), part)
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            named = " or 'last' / 'all'" if num_layers else ""
            raise LLMSpecError(f"layer {text!r} is not understood; write an index (14), a range (0-15) or a comma "
                               f"list (0,3,7-9){named}.")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise LLMSpecError(f"layer range {part.strip()!r} runs backwards; write {last}-{first}.")
        layers.update(range(first, last + 1))
    return sorted(layers)
