"""``nnunetv2-llm trainers``: every trainer class this package adds to nnU-Net's lookup, and what it trains."""
from __future__ import annotations


def cmd_trainers(args) -> int:
    from ..nnunet.trainer_catalogue import trainer_table
    rows = trainer_table()
    if args.base_only:
        rows = [r for r in rows if r.length is None]
    if args.grep:
        rows = [r for r in rows if args.grep.lower() in r.name.lower()]
    width = max((len(r.name) for r in rows), default=10)
    print(f"{'trainer':<{width}}  {'model':<29}  {'variant':<13}  length")
    for r in rows:
        length = "nnU-Net's 1000 epochs x 250 iterations" if r.length is None else r.length.lstrip("_")
        print(f"{r.name:<{width}}  {r.model or ('from the plans (-p)' if 'LLM' in r.base else 'plain nnU-Net'):<29}  "
              f"{r.variant or '-':<13}  {length}")
    print(f"\n{len(rows)} trainer(s). Use any of them with nnUNetv2_train DATASET CONFIG FOLD -tr NAME (and "
          f"nnUNet_extTrainer set, see `nnunetv2-llm doctor`); the variants are explained by `nnunetv2-llm plan "
          f"--help` and the files in plans/.")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "trainers", help="list every trainer this package adds (built-in model x variant x length)",
        description="Every trainer class nnU-Net finds through nnUNet_extTrainer: nnUNetTrainerLLM (the LLM spec "
                    "from -p plans), one built-in trainer per model and variant (nnUNetTrainerLLaMATrainable: the "
                    "LLaMA model, the 'trainable' variant), each in nnU-Net's length variants (_5epochs, ...) and "
                    "short runs (_2epochs_5its, ...), and plain nnU-Net at the short runs.")
    p.add_argument("--base-only", action="store_true", help="only the trainers at nnU-Net's full length")
    p.add_argument("--grep", metavar="TEXT", help="only names containing TEXT (case-insensitive)")
    p.set_defaults(func=cmd_trainers)
