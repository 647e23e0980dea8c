"""``nnunetv2-llm export``: a folder that builds into a challenge container which predicts with no network;
``--check`` runs its entry point offline and compares it with ``nnUNetv2_predict``."""
from __future__ import annotations

import argparse

from ..submission.runtime import LAYOUTS
from .options import DEFAULT_PLANS, DEVICES, Repeatable

DESCRIPTION = """\
Write a submission folder from trained folds: model.zip (nnU-Net's own export of the folds), src/ (this package's
code), export.json (what was exported, the installed versions, the sha256 of every file that decides what runs),
predict.py (the entry point: /input -> /output, one label per case), a Dockerfile pinned to the installed versions,
and a README. `--check FOLDER` installs the zip into an empty nnU-Net tree and runs predict.py as the container
would, with no network, no hub cache and the LLM files out of reach, then compares its labels with
nnUNetv2_predict's. A folder whose recorded files changed since export is refused.
"""


def cmd_export(args) -> int:
    from ..submission.build import export_submission
    from ..submission.check import check_submission
    from ..submission.runtime import ExportError
    if args.check:
        check_submission(args.check, args.input, args.device)
        return 0
    missing = [flag for flag, value in (("-d", args.dataset), ("-c", args.configuration), ("-o", args.output))
               if value is None]
    if missing:
        raise ExportError(f"export needs {', '.join(missing)} (or --check FOLDER to check a submission).")
    export_submission(args.dataset, args.configuration, args.trainer, args.plans, args.folds, args.output,
                      layout=args.layout, channel_folders=args.channel_folders, output_subfolder=args.output_subfolder,
                      use_mirroring=not args.disable_tta, tile_step_size=args.step_size, base_image=args.base_image,
                      overwrite=args.overwrite)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a challenge container folder that predicts offline; --check it",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", help="dataset id or name")
    p.add_argument("-c", "--configuration", help="nnU-Net configuration (single-stage: 2d, 3d_fullres, 3d_lowres)")
    p.add_argument("-tr", "--trainer", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS, help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", "--folds", action=Repeatable, default=["0", "1", "2", "3", "4"], help="folds to ensemble")
    p.add_argument("-o", "--output", help="submission folder to write (must not exist)")
    p.add_argument("--layout", default="nnunet", choices=LAYOUTS,
                   help="input layout: nnunet (CASE_0000.ext per channel) or folders (one subfolder per channel)")
    p.add_argument("--channel-folders", action=Repeatable, help="with --layout folders: one subfolder name per channel")
    p.add_argument("--output-subfolder", default="", help="write the labels into /output/THIS (default: /output)")
    p.add_argument("--disable-tta", action="store_true", help="predict without mirroring (as nnUNetv2_predict's)")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window tile step (default 0.5)")
    p.add_argument("--base-image", help="Docker base image (default: the PyTorch CUDA runtime of the installed torch)")
    p.add_argument("--overwrite", action="store_true", help="replace a submission folder written by export")
    p.add_argument("--check", metavar="FOLDER", help="run FOLDER's entry point offline and compare with nnUNetv2_predict")
    p.add_argument("-i", "--input", help="with --check: cases in nnU-Net's naming (default: the dataset's imagesTs)")
    p.add_argument("--device", default="cpu", choices=DEVICES[1:], help="with --check: device (default cpu)")
    p.set_defaults(func=cmd_export)
