"""``nnunetv2-llm dice``: per-case and mean Dice of a prediction folder, with nnU-Net's metric code and label rule."""
from __future__ import annotations


def cmd_dice(args) -> int:
    from ..evaluation.dice import dice_per_case, format_dice
    scores = dice_per_case(args.gt, args.pred, args.dataset_json, require_all=args.require_all,
                           summary_file=args.summary)
    print(format_dice(scores))
    if args.summary:
        print(f"wrote {args.summary}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dice", help="per-case and mean Dice of a prediction folder against ground truth (nnU-Net's metric code)",
        description="Dice per case (mean over the foreground labels, or regions, present in reference or prediction; "
                    "voxels under the dataset's ignore label left out, as nnU-Net evaluates) and the mean over cases. "
                    "References without a prediction are named and not scored (--require-all: refused).")
    p.add_argument("--gt", required=True, help="folder of ground-truth segmentations")
    p.add_argument("--pred", required=True, help="folder of predicted segmentations")
    p.add_argument("--dataset-json", required=True, help="the dataset's dataset.json (labels, file_ending)")
    p.add_argument("--require-all", action="store_true", help="refuse unless every reference has a prediction")
    p.add_argument("-o", "--summary", metavar="FILE.json",
                   help="also write per-case and mean Dice and IoU in nnU-Net's summary.json layout to this file "
                        "(nothing is written otherwise)")
    p.set_defaults(func=cmd_dice)
