"""``nnunetv2-llm extract``: one LLM layer and its config in a standalone file, for offline training."""
from __future__ import annotations

import os
import shlex

from ..core.models import MODELS
from .options import add_spec_arguments


def spec_from_args(args):
    """A spec from ``--llm`` (named model, hub id, folder or file) plus the wiring flags."""
    from ..core.models import model_spec
    from ..core.spec import LLMSpec, LLMSpecError
    from ..core.weights import resolve_spec, source_kind
    from .options import spec_options
    options = spec_options(args)
    if args.layer is not None:
        options["layer"] = args.layer
    if args.llm in MODELS:
        return model_spec(args.llm, **options)
    source_kind(args.llm)  # a mistyped model name is named (with the model it resembles) before --layer
    if "layer" not in options:
        raise LLMSpecError(f"--llm {args.llm!r} is not a named model, so --layer is required "
                           f"(named models: {', '.join(sorted(MODELS))}).")
    return resolve_spec(LLMSpec(source=args.llm, **options))


def cmd_extract(args) -> int:
    from ..core.weights import check_extract_output, extract_layer, extracted_layers, load_extracted
    out = check_extract_output(args.output, args.overwrite)
    spec = spec_from_args(args)
    extract_layer(spec, out)
    weights = [load_extracted(out, layer) for layer in extracted_layers(out)]
    size = os.path.getsize(out) / 2 ** 20
    print(f"wrote {out} ({size:.1f} MiB): {weights[0].source} "
          + ", ".join(f"layer {w.layer} (sha256 {w.sha256})" for w in weights)
          + (" and the final norm" if spec.final_norm else ""))
    print(f"use it offline with: nnunetv2-llm plan -d DATASET --llm {shlex.quote(str(out))}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract", help="write one LLM layer and its config to a standalone .safetensors file (for offline machines)",
        description="Read one decoder layer of an LLM (only its bytes: byte ranges from the hub, one shard of a "
                    "checkpoint, or its tensors of a GGUF file) and write it with the model config, source, layer and "
                    "the sha256 of its tensors into one .safetensors file; `--llm FILE` then trains offline with it. "
                    "The file holds the tensors only: how the block is wired (positions, attention, ...) is chosen "
                    "later by `nnunetv2-llm plan`. With --depth N the file holds layers --layer .. --layer+N-1, with "
                    "--final-norm the model's final norm too.")
    add_spec_arguments(p, llm_default="smollm2-135m", wiring=False)
    p.add_argument("-o", "--output", required=True, help="output .safetensors file (must not exist)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing layer file written by extract (or a damaged file)")
    p.set_defaults(func=cmd_extract)
