"""``nnunetv2-llm extract``: one LLM layer and its config in a standalone file, for offline training."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..core.models import MODELS
from .options import add_spec_arguments


def _written_by_extract(path: Path) -> bool | None:
    """Whether a safetensors file's header says extract wrote it (True), another writer did (False), or the header
    itself is unreadable (None). Read from the header alone, so a file whose tensors are truncated is recognised."""
    import json
    import struct

    from ..core.weights import EXTRACT_FORMAT
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == EXTRACT_FORMAT


def check_extract_output(output: str, overwrite: bool) -> Path:
    """The file ``extract`` may write: a new .safetensors file, or (with --overwrite) a layer file extract wrote,
    intact or damaged. Anything else is never replaced."""
    from ..core.weights import LLMWeightsError, load_extracted
    out = Path(output).expanduser().resolve()
    if out.is_dir():
        raise LLMWeightsError(f"-o {output} is a folder; name the file to write, e.g. -o {out / 'layer.safetensors'}.")
    if out.suffix != ".safetensors":
        raise LLMWeightsError(f"-o {output}: the layer file must end in .safetensors (that is how --llm recognises "
                              f"it), e.g. -o {out.with_suffix('.safetensors')}.")
    if not out.exists():
        return out
    if not overwrite:
        raise LLMWeightsError(f"-o {output} exists; pass --overwrite to replace it, or choose another name.")
    ours = _written_by_extract(out)
    if not ours:
        what = "its header is unreadable" if ours is None else "another writer's safetensors file (a model's weights?)"
        raise LLMWeightsError(f"-o {output} exists and is not a layer file written by `nnunetv2-llm extract` ({what}); "
                              f"refusing to replace it even with --overwrite. Choose another name, or delete it "
                              f"yourself if it is a damaged layer file.")
    try:
        load_extracted(out)
    except LLMWeightsError:
        print(f"-o {output} is a damaged layer file of `nnunetv2-llm extract` (its tensors do not read back or do "
              f"not match their sha256); --overwrite replaces it.")
    return out


def spec_from_args(args):
    """A spec from ``--llm`` (named model, hub id, folder or file) plus the wiring flags."""
    from ..core.models import model_spec
    from ..core.spec import LLMSpec, LLMSpecError
    from ..core.weights import resolve_spec
    from .options import spec_options
    options = spec_options(args)
    if args.layer is not None:
        options["layer"] = args.layer
    if args.llm in MODELS:
        return model_spec(args.llm, **options)
    if "layer" not in options:
        raise LLMSpecError(f"--llm {args.llm!r} is not a named model, so --layer is required "
                           f"(named models: {', '.join(sorted(MODELS))}).")
    return resolve_spec(LLMSpec(source=args.llm, **options))


def cmd_extract(args) -> int:
    from ..core.weights import extract_layer, extracted_layers, load_extracted
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
