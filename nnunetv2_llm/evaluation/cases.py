"""What compare scores: pairs of a reference and a prediction per case, gathered per variant and case set."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..nnunet.results import TrainedResults
from ..nnunet.splits import validation_keys

IN_DOMAIN = "in-domain"
# Fold ``all`` trains on every case, and nnU-Net validates it on those same cases: its scores are in-sample (fit,
# not generalisation), so that set is never called in-domain or cross-validation.
IN_SAMPLE = "in-sample"
VALIDATION_SETS = (IN_DOMAIN, IN_SAMPLE)  # the report's validation set is one of these


def validation_set_name(folds: list) -> str:
    """The name of the report's validation set (nnU-Net's own validation predictions) for these folds."""
    return IN_SAMPLE if "all" in [str(f) for f in folds] else IN_DOMAIN


class CompareError(UserError, ValueError):
    """Results cannot be compared as asked; the message names the variant, fold, case or file and the fix."""


@dataclass(frozen=True)
class Case:
    name: str
    reference: Path
    prediction: Path
    fold: object


def validation_cases(variant: TrainedResults, folds: list, gt: Path) -> dict[str, Case]:
    """The out-of-fold validation predictions of the requested folds (fold ``all``: its in-sample predictions of its
    own training cases), against nnU-Net's ground truth ``gt`` (``nnUNet_preprocessed/<dataset>/gt_segmentations``).
    Each fold must have finished training and validation: every case of its split is there
    (:meth:`TrainedResults.require_done`)."""
    if "all" in [str(f) for f in folds] and len(folds) > 1:
        raise CompareError(f"-f {' '.join(map(str, folds))}: fold all trained on every case, so its validation "
                           f"scores training cases (in-sample) and repeats the cases of the other folds; compare "
                           f"folds 0-4 (out-of-fold, cross-validation) or fold all alone (in-sample, best with "
                           f"--held-out/--external sets it never saw).")
    ending = variant.dataset_json["file_ending"]
    cases = {}
    for fold in folds:
        variant.require_done(fold)
        for name in validation_keys(variant.dataset, fold):
            prediction = variant.fold_folder(fold) / "validation" / f"{name}{ending}"
            reference = gt / f"{name}{ending}"
            if not reference.is_file():
                raise CompareError(f"{variant.label}: no ground truth {reference} for validation case {name}; run "
                                   f"nnUNetv2_plan_and_preprocess -d {variant.dataset} again to restore "
                                   f"gt_segmentations.")
            if name in cases:
                raise CompareError(f"{variant.label}: case {name} is validated in folds {cases[name].fold} and "
                                   f"{fold}; pass folds of one cross-validation split.")
            cases[name] = Case(name, reference, prediction, fold)
    return cases


def check_same_cases(sets: dict[str, dict[str, Case]], where: str) -> list[str]:
    """Every variant scored the same cases (paired tests need pairs); returns them sorted."""
    labels = list(sets)
    first = set(sets[labels[0]])
    for label in labels[1:]:
        other = set(sets[label])
        if other != first:
            only_first, only_other = sorted(first - other), sorted(other - first)
            raise CompareError(
                f"{where}: {labels[0]} and {label} scored different cases (only in {labels[0]}: "
                f"{', '.join(only_first[:10]) or 'none'}; only in {label}: {', '.join(only_other[:10]) or 'none'}). "
                f"Compare variants trained on the same dataset and split, with the same folds (-f).")
    return sorted(first)
