"""Command-line options shared by several commands: the LLM spec flags, and argparse types for layers and ranges."""
from __future__ import annotations

import argparse

from ..core.models import MODELS
from ..nnunet.results import DEFAULT_PLANS  # noqa: F401 (the commands' -p default, from its one home)
from ..core.spec import ATTENTION, DTYPES, INIT, LORA_ALPHA, LORA_RANK, LORA_TARGETS, POSITIONS, SPEC_OPTIONS, \
    LLMSpecError


DEVICES = ("auto", "cpu", "cuda")  # auto: a CUDA GPU when torch sees one, else the CPU


def layers_type(text: str) -> str:
    """``14``, ``0-15``, ``0,3,7-9``, ``last`` or ``all``: checked for form here, against the model when planned."""
    from ..core.spec import parse_layers
    if str(text).strip() in ("last", "all"):
        return str(text).strip()
    try:
        parse_layers(text)
    except LLMSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def targets_type(text: str) -> list[str]:
    """``q_proj,v_proj``: the linears of the decoder layer LoRA adapts."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--lora-targets {text!r}: name linears of the decoder layer, e.g. "
                                         f"{','.join(LORA_TARGETS)}.")
    return names


def spec_options(args) -> dict:
    """The spec options set by flags (see :func:`add_spec_arguments`); flags not given are left out."""
    return {k: getattr(args, k) for k in SPEC_OPTIONS if getattr(args, k, None) is not None}


def add_spec_arguments(p: argparse.ArgumentParser, llm_default: str | None, layer_type=int,
                       layer_help: str = "0-based decoder layer index (default: the named model's paper layer)",
                       wiring: bool = True) -> None:
    """``--llm``, ``--layer``, ``--revision`` and (``wiring``) the flags of how the block uses the layer."""
    default = f" (default {llm_default})" if llm_default else ""
    p.add_argument("--llm", default=llm_default, metavar="MODEL|SOURCE",
                   help=f"a named model ({', '.join(sorted(MODELS))}), a hub id (org/name), a checkpoint folder, "
                        f"a .gguf file or a file from `nnunetv2-llm extract`{default}")
    p.add_argument("--layer", type=layer_type, help=layer_help)
    p.add_argument("--revision", help="hub revision (branch, tag or commit; default main)")
    p.add_argument("--depth", type=int, help="consecutive decoder layers from --layer on in one block (default 1)")
    p.add_argument("--final-norm", action=argparse.BooleanOptionalAction,
                   help="the model's own final RMSNorm after the layer(s), pretrained and frozen with them, as "
                        "MedVisionLlama applies it (default off)")
    if not wiring:
        return
    g = p.add_argument_group("wiring of the block (default: the authors' code, or the variant's)")
    g.add_argument("--positions", choices=POSITIONS,
                   help="how q/k are rotated: reference (the authors' fixed 1-rad-per-token rotation), rope (the "
                        "model's own RoPE over the raster index), axial (N-D RoPE over the grid), none")
    g.add_argument("--attention", choices=ATTENTION,
                   help="causal over the raster order (the authors', what SDPA does without a mask) or bidirectional")
    g.add_argument("--init", choices=INIT,
                   help="pretrained (the LLM's tensors); random ('+Transformer': every tensor re-drawn); "
                        "random-reference (the authors' '+Transformer': norm gains kept pretrained); identity "
                        "(control: the layer replaced by identity, only the projections remain)")
    g.add_argument("--trainable", action=argparse.BooleanOptionalAction,
                   help="fine-tune the LLM layer (paper '(T)'); --no-trainable keeps it frozen (default)")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction,
                   help="add the block's input to its output (--no-residual: the authors' plain block, default)")
    g.add_argument("--dtype", choices=DTYPES,
                   help="dtype the layer is stored and run in (bfloat16 halves its share of the checkpoint; "
                        "default float32)")
    g.add_argument("--stage", type=int, help="encoder stage the block acts on (default -1, the bottleneck)")
    a = p.add_argument_group("adaptations (what peers use after a frozen layer shows no gain)")
    a.add_argument("--lora-rank", type=int, metavar="R",
                   help=f"LoRA adapters of rank R (peft) inside the frozen layer; only they and the two projections "
                        f"train, the layer's tensors stay bit-identical (0: none, the default; e.g. {LORA_RANK})")
    a.add_argument("--lora-alpha", type=float, metavar="A",
                   help=f"LoRA's alpha: its update is scaled by A / R (default {LORA_ALPHA:g})")
    a.add_argument("--lora-targets", type=targets_type, metavar="NAMES",
                   help=f"comma-separated linears of the layer that get adapters (default {','.join(LORA_TARGETS)}, "
                        f"the attention projections; e.g. add gate_proj,up_proj,down_proj for the MLP)")
    a.add_argument("--lora-dropout", type=float, metavar="P", help="dropout on LoRA's input while training (default 0)")
    a.add_argument("--gate", action=argparse.BooleanOptionalAction,
                   help="output = input + g * block(input) with a learnt scalar g starting at 0: the net starts "
                        "exactly as the plain U-Net and adds only what training finds useful (default off)")
