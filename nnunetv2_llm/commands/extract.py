"""``nnunetv2-llm extract``: one LLM layer and its config in a standalone file, for offline training."""
from __future__ import annotations

import os
import shlex

from ..core.models import DEFAULT_MODEL
from .options import add_spec_arguments, spec_options


def cmd_extract(args) -> int:
    from ..core.resolve import source_spec
    from ..core.weights import check_extract_output, extract_layer, extracted_layers, load_extracted
    out = check_extract_output(args.output, args.overwrite)
    spec = source_spec(args.llm, args.layer, **spec_options(args))
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
    add_spec_arguments(p, llm_default=DEFAULT_MODEL, wiring=False)
    p.add_argument("-o", "--output", required=True, help="output .safetensors file (must not exist)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing layer file written by extract (or a damaged file)")
    p.set_defaults(func=cmd_extract)
