"""``nnunetv2-llm compare``: paired statistics, surface metrics and held-out / zero-shot sets of trained variants."""
from __future__ import annotations

import argparse
import os

from ..evaluation.metrics import DEFAULT_TOLERANCE_MM
from ..evaluation.summary import DEFAULT_PRIMARY
from .options import DEFAULT_PLANS, DEVICES, Repeatable

DESCRIPTION = """\
Is the difference between trained nnU-Net variants real? Any trained results count (stock trainers, ours,
other plugins'), scored the same way:

  in-domain   the out-of-fold validation predictions nnU-Net wrote (fold_X/validation), pooled over the
              folds you name, against nnUNet_preprocessed/<dataset>/gt_segmentations
  in-sample   with -f all: fold all trained on every case and nnU-Net validated it on those same cases, so
              its set is named in-sample (fit, not cross-validation); score fold all on --held-out sets
  held-out    --held-out NAME=FOLDER: labelled cases of the training distribution the models never saw
  zero-shot   --external NAME=FOLDER: labelled cases of a shifted distribution (another scanner, site, ...)

The other sets are predicted by each variant with the stock nnUNetv2_predict (ensemble of the named folds),
once, and cached in the report folder. Per case and label: Dice and IoU (nnU-Net's code and label rule),
HD95 and NSD in mm (MONAI). Writes report.md, report.json, cases.csv and figures to -o.

Two questions, two levels of numbers, each labelled in the report:

  This training procedure against that one (report.json: "procedure"; the headline when it exists)
      Would training this variant again, on new cases like these, beat training the reference again? Unit:
      the training run (folds x replicates). With k >= 2 folds: the Nadeau-Bengio corrected resampled t-test
      over the folds' mean differences (each fold the mean of its replicate runs), 95% CI and p; one fold
      with replicates: t over the runs with Welch-Satterthwaite df; with replicates, variance components
      (fold, run, case, each a variance of a run's mean) from a mixed model. Replicate 1 is $nnUNet_results,
      replicate r >= 2 is $nnUNet_results/replicates/<r> (a sweep grid's `replicates: 3`, or
      nnUNet_results="$nnUNet_results/replicates/2" nnUNetv2_train ... by hand); every replicate that every
      variant has is used unless --replicates says how many (the rest is named in the report). One run and
      one fold: training noise is not measured, and the report says so; fold all (in-sample): no
      procedure-level claim.
  These models on these cases (the per-set tables)
      Are these trained models (replicate 1) different on these cases? Unit: the case; training noise is not
      in these intervals. Paired difference with a bootstrap 95% CI of the mean and the sign-flip
      permutation test of the same mean (Wilcoxon as an extra column), rank-biserial r, wins/ties/losses;
      ranks with bootstrap stability; parameters and GFLOPs.

One primary endpoint (--primary, default Dice): each variant against the reference on the validation set,
at the procedure level where the runs allow it, Holm over the variants; only it carries stars. Every other p is
secondary (Holm over the report's other case-level tests, no stars). No interval and no p where the data
cannot support one (one case, zero variance, a fold without values), with the reason.

Repeated partitions (a sweep's `partitions: P`): folds 5, 6, ... of splits_final.json are partitions 2, 3, ...
(fold f of partition p is fold 5(p-1)+f); -f 0 1 ... 9 compares 2 partitions, the same folds of each. The
procedure level averages the partitions (each partition's Nadeau-Bengio variance, averaged; k - 1 df; what it
leaves out is in the report); the case level reads the first partition's out-of-fold predictions (nnU-Net's own
cross-validation), so each case counts once.

Re-analysis without predictions: --cases cases.csv --splits splits_final.json -o DIR recomputes every
statistic, report and figure from a cases.csv (compare's columns, any subset of the metrics, fold numbers as
in the splits file), with --reference, --primary, --seed, --bootstrap; parameters and GFLOPs need the
networks and are left out.

A second run into the same -o waits for the first, then reuses its predictions and scores.
"""


def cmd_compare(args) -> int:
    from ..evaluation.cases import CompareError
    from ..evaluation.compare import run_compare
    from ..evaluation.compare_request import CompareRequest
    if args.cases or args.splits:
        from ..evaluation.reanalysis import reanalyse_files
        given = [flag for flag, value in (("-d", args.dataset), ("-c", args.configuration), ("-tr", args.trainers),
                                          ("-f", args.folds), ("--held-out", args.held_out),
                                          ("--external", args.external), ("--nsd-tolerance", args.nsd_tolerance),
                                          ("--by-layer", args.by_layer), ("--replicates", args.replicates)) if value]
        if not (args.cases and args.splits) or given:
            raise CompareError("--cases re-analyses a cases.csv with the splits file its folds trained on "
                               "(--cases CSV --splits splits_final.json -o DIR, with --reference, --primary, "
                               "--seed, --bootstrap); "
                               + (f"{', '.join(given)} belong to a compare of trained results, leave them out."
                                  if given else f"add {'--splits' if args.cases else '--cases'}."))
        reanalyse_files(args.cases, args.splits, args.output, args.reference, args.primary, args.seed, args.bootstrap)
        return 0
    missing = [flag for flag, value in (("-d", args.dataset), ("-c", args.configuration), ("-tr", args.trainers))
               if not value]
    if missing:
        raise CompareError(f"compare needs {', '.join(missing)} (the dataset, configuration and variants of trained "
                           f"results), or --cases CSV --splits splits_final.json to re-analyse a cases.csv.")
    run_compare(CompareRequest(
        dataset=args.dataset, configuration=args.configuration, trainers=args.trainers, output=args.output,
        plans=args.plans, reference=args.reference, external=args.external or [],
        held_out=args.held_out or [], nsd_tolerance=args.nsd_tolerance, bootstrap=args.bootstrap, seed=args.seed,
        processes=args.processes, device=args.device, by_layer="strict" if args.by_layer else None,
        replicates=args.replicates, primary=args.primary, **({"folds": args.folds} if args.folds else {})))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="paired statistics, surface metrics, held-out and zero-shot sets of trained nnU-Net variants",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", help="dataset id or name (required unless --cases)")
    p.add_argument("-c", "--configuration", help="nnU-Net configuration, e.g. 2d or 3d_fullres (required unless "
                                                 "--cases)")
    p.add_argument("-tr", "--trainers", action=Repeatable, metavar="TRAINER[__PLANS]|FOLDER",
                   help="the variants: trainer names (any trainer, stock or plugin), TRAINER__PLANS, or results folders")
    p.add_argument("-p", "--plans", action=Repeatable, default=[DEFAULT_PLANS],
                   help="plans identifier for all variants, or one per -tr (default nnUNetPlans)")
    p.add_argument("-f", "--folds", action=Repeatable,
                   help="folds (default 0 1 2 3 4; 'all' alone for the fold trained on every case: its own "
                        "validation is then in-sample; folds 5, 6, ... are partitions 2, 3, ... of the splits file: "
                        "-f 0 1 ... 9 compares 2 partitions, the same folds of each)")
    p.add_argument("--reference", help="the variant the others are compared with (default: the first)")
    p.add_argument("--held-out", action=Repeatable, metavar="NAME=FOLDER",
                   help="held-out sets of the training distribution: an nnU-Net raw dataset or a folder with "
                        "imagesTs/labelsTs (else imagesTr/labelsTr), same labels")
    p.add_argument("--external", action=Repeatable, metavar="NAME=FOLDER",
                   help="zero-shot sets (a shifted distribution), in the same form as --held-out")
    p.add_argument("--nsd-tolerance", action=Repeatable, metavar="MM|LABEL=MM",
                   help=f"NSD tolerance in mm, for all labels or per label (default {DEFAULT_TOLERANCE_MM:g})")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples, 100 or more (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("-np", "--processes", type=int, default=os.cpu_count() or 1,
                   help="processes scoring cases in parallel (default: all cores)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="device of the held-out and zero-shot predictions (default: cuda if available)")
    p.add_argument("--by-layer", action="store_true",
                   help="the LLM variants are plans that differ only in their layer: also write layers.csv and "
                        "layers.png (Dice by layer next to plain nnU-Net, the paper's Fig. 3) and a 'Which layer?' "
                        "summary; a single plain variant becomes the reference")
    p.add_argument("--replicates", type=int, metavar="N",
                   help="training replicates per fold for the procedure level: replicate 1 in $nnUNet_results, "
                        "r >= 2 in $nnUNet_results/replicates/<r> (default: as many as every variant has)")
    p.add_argument("--primary", default=DEFAULT_PRIMARY, metavar="METRIC",
                   help=f"the metric of the primary endpoint, the one test with stars: each variant against the "
                        f"reference on the validation set, at the procedure level where the runs allow it, Holm over "
                        f"the variants; Dice, IoU, NSD or HD95 (default {DEFAULT_PRIMARY}). Every other p is secondary")
    p.add_argument("--cases", metavar="CSV",
                   help="re-analyse a cases.csv (compare's columns, any subset of the metrics) instead of trained "
                        "results: every statistic, report and figure, e.g. for another --reference or --primary; "
                        "needs --splits; parameters and GFLOPs are left out (they need the networks)")
    p.add_argument("--splits", metavar="JSON",
                   help="with --cases: the splits_final.json the folds trained on (fold numbers as in it)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.set_defaults(func=cmd_compare)
