"""``nnunetv2-llm analyze``: the paper's Section 4 (activation maps, concentration IoU, effective rank, LSVR)."""
from __future__ import annotations

from pathlib import Path

from ..evaluation.feature_metrics import THRESHOLD
from .options import DEFAULT_PLANS, DEVICES, Repeatable


def cmd_analyze(args) -> int:
    from ..evaluation.analysis import analyse
    from ..nnunet.results import split_trainer_plans
    trainers = [(args.trainer, args.plans)] + [split_trainer_plans(c, args.plans) for c in args.compare or []]
    analyse(args.dataset, args.configuration, trainers, args.fold, Path(args.output) if args.output else None,
            checkpoint=args.checkpoint, device=args.device, threshold=args.threshold)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="paper Sec. 4 on a trained fold: activation maps, concentration IoU, ER and LSVR",
        description="The paper's Section 4 on a trained fold's validation cases: activation maps before and "
                    "after the LLM block, their concentration IoU against the ground truth, and the effective rank "
                    "and LSVR of the decoder input. Definitions are written into analysis.json.")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", "--trainer", required=True, help="trainer of the run to analyse")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS, help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", "--fold", default="0", help="fold (0..4 or all; default 0)")
    p.add_argument("-o", "--output", help="output folder (default: fold_F/analysis of the trained results, "
                                          "or fold_F/analysis_compare with --compare)")
    p.add_argument("--compare", action=Repeatable, metavar="TRAINER[__PLANS]",
                   help="further trained results (trainer and plans) of the same dataset, configuration and fold, e.g. "
                        "nnUNetTrainerSmolLM2Transformer nnUNetTrainer")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="checkpoint file in the fold folder")
    p.add_argument("--device", default="auto", choices=DEVICES, help="default: cuda if available")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"activation threshold for the concentration IoU (default {THRESHOLD}, the paper's)")
    p.set_defaults(func=cmd_analyze)
