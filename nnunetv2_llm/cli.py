"""The ``nnunetv2-llm`` command: helpers around the stock nnU-Net CLIs, which stay the way to train and predict."""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from .spec import ATTENTION, DTYPES, INIT, POSITIONS, PRESETS, SPEC_OPTIONS, LLMSpec, LLMSpecError, preset_spec
from .errors import UserError
from .synthetic import TASKS


def spec_options(args) -> dict:
    """The spec options set by flags (see :func:`add_spec_arguments`); flags not given are left out."""
    return {k: getattr(args, k) for k in SPEC_OPTIONS if getattr(args, k, None) is not None}


def spec_from_args(args) -> LLMSpec:
    """A spec from ``--llm`` (preset name, hub id, folder or file) plus option flags."""
    options = spec_options(args)
    if args.layer is not None:
        options["layer"] = args.layer
    if args.llm in PRESETS:
        return preset_spec(args.llm, **options)
    if "layer" not in options:
        raise LLMSpecError(f"--llm {args.llm!r} is not a preset, so --layer is required "
                           f"(presets: {', '.join(sorted(PRESETS))}).")
    from . import resolve_spec
    return resolve_spec(LLMSpec(source=args.llm, **options))


def add_spec_arguments(p: argparse.ArgumentParser, layer_type=int,
                       layer_help: str = "0-based decoder layer index (default: the preset's)") -> None:
    p.add_argument("--llm", default="smollm2-135m",
                   help=f"preset ({', '.join(sorted(PRESETS))}), hub id, checkpoint folder, .gguf or extracted file")
    p.add_argument("--layer", type=layer_type, help=layer_help)
    p.add_argument("--positions", choices=POSITIONS)
    p.add_argument("--attention", choices=ATTENTION)
    p.add_argument("--init", choices=INIT)
    p.add_argument("--trainable", action=argparse.BooleanOptionalAction,
                   help="fine-tune the LLM layer (paper '(T)'); --no-trainable keeps it frozen")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction,
                   help="add the block's input to its output (--no-residual: the reference's plain block)")
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--stage", type=int, help="encoder stage the block acts on (default -1, the bottleneck)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")


def cmd_synth(args) -> int:
    from .synthetic import Shift, SyntheticError, make_dataset
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise SyntheticError("nnUNet_raw is not set; export it or pass --raw FOLDER.")
    shift = Shift(contrast=args.contrast, noise=args.noise, scale=args.intensity_scale)
    folder = make_dataset(raw, args.dataset_id, dim=args.dim, num_train=args.num_train, num_test=args.num_test,
                          size=args.size, seed=args.seed, shift=shift, task=args.task,
                          other_roots=[os.environ[v] for v in ("nnUNet_preprocessed", "nnUNet_results")
                                       if os.environ.get(v)])
    print(folder)
    return 0


def check_extract_output(output: str, overwrite: bool) -> Path:
    """The file ``extract`` may write: a new .safetensors file, or (with --overwrite) an older extracted layer."""
    from .weights import LLMWeightsError, load_extracted
    out = Path(output).expanduser().resolve()
    if out.is_dir():
        raise LLMWeightsError(f"-o {output} is a folder; name the file to write, e.g. -o {out / 'layer.safetensors'}.")
    if out.suffix != ".safetensors":
        raise LLMWeightsError(f"-o {output}: the layer file must end in .safetensors (that is how --llm recognises "
                              f"it), e.g. -o {out.with_suffix('.safetensors')}.")
    if out.exists():
        if not overwrite:
            raise LLMWeightsError(f"-o {output} exists; pass --overwrite to replace it, or choose another name.")
        try:
            load_extracted(out)
        except LLMWeightsError:
            raise LLMWeightsError(f"-o {output} exists and is not a layer file written by `nnunetv2-llm extract`; "
                                  f"refusing to replace it even with --overwrite. Choose another name.") from None
    return out


def cmd_extract(args) -> int:
    from .weights import extract_layer, load_extracted
    out = check_extract_output(args.output, args.overwrite)
    spec = spec_from_args(args)
    extract_layer(spec, out)
    weights = load_extracted(out)
    size = os.path.getsize(out) / 2 ** 20
    print(f"wrote {out} ({size:.1f} MiB): {weights.source} layer {weights.layer}, sha256 {weights.sha256}")
    print(f"use it offline with: --llm {shlex.quote(str(out))} --layer {weights.layer}")
    return 0


def cmd_dice(args) -> int:
    from .evaluate import dice_per_case, format_dice
    scores = dice_per_case(args.gt, args.pred, args.dataset_json)
    print(format_dice(scores))
    return 0


# Modules that add their own subcommands through ``register(subparsers)``.
COMMAND_MODULES = ("planning", "demo", "doctor", "info", "analysis", "compare", "sweep", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a small synthetic dataset in nnU-Net raw format")
    p.add_argument("-d", "--dataset-id", type=int, default=501)
    p.add_argument("--dim", type=int, choices=[2, 3], default=2)
    p.add_argument("--num-train", type=int, default=20)
    p.add_argument("--num-test", type=int, default=4)
    p.add_argument("--size", type=int, help="edge length (default 64 in 2D, 32 in 3D)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", help="nnUNet_raw folder (default: $nnUNet_raw)")
    p.add_argument("--task", default="blobs", choices=list(TASKS),
                   help="blobs: label follows local texture; context: identical objects, class set by a distant cue")
    shift = p.add_argument_group("domain shift", "change the cases' appearance, not their shapes or labels: the "
                                                 "same --seed with a shift is a zero-shot test set")
    shift.add_argument("--contrast", type=float, default=1.0, help="scale deviations from the image mean (default 1)")
    shift.add_argument("--noise", type=float, default=0.0, help="add Gaussian noise of this std (default 0)")
    shift.add_argument("--intensity-scale", type=float, default=1.0, help="multiply intensities (default 1)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("extract", help="write one LLM layer and its config to a standalone .safetensors file")
    add_spec_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output .safetensors file (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing layer file written by extract")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("dice", help="per-case and mean Dice of a prediction folder against ground truth")
    p.add_argument("--gt", required=True, help="folder of ground-truth segmentations")
    p.add_argument("--pred", required=True, help="folder of predicted segmentations")
    p.add_argument("--dataset-json", required=True, help="the dataset's dataset.json")
    p.set_defaults(func=cmd_dice)

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
