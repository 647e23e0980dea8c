"""Every statistic of a compare report from per-case scores: the case level of each set, the procedure level of
the validation set and Holm's families; compare and the re-analysis of a cases.csv (:mod:`.reanalysis`) both end
here."""
from __future__ import annotations

from .cases import IN_SAMPLE, VALIDATION_SETS
from .run_scores import TrainingRunScores, procedure_level
from .scoring import CaseScores
from .summary import CompareReport, Cost, apply_holm, holm_families, summarize_set

CONVENTIONS = {"both_empty": "NaN for every metric (left out of means); in a pair where the other variant has a "
                             "number it counts as the metric's perfect value (Dice, IoU, NSD 1; HD95 0), NaN in both "
                             "is left out of the pair",
               "one_empty": "Dice = IoU = NSD = 0, HD95 = image diagonal in mm",
               "case_value": "mean over labels of the case, NaN labels left out",
               "ignore_label": "voxels under the reference's ignore label are left out of every metric"}


def report_from_scores(header: dict, labels: list[str], reference: int, scores: dict[str, dict[str, CaseScores]],
                       case_folds: dict, runs: TrainingRunScores, seed: int, resamples: int, primary: str,
                       left_out: list[str], costs: dict[str, Cost], timing: dict[str, float]) -> CompareReport:
    """Every statistic of a report from per-case scores: ``scores`` per set and variant (the validation set: the
    first partition's replicate 1), ``runs`` each training run's scores on the validation set; ``header`` the
    report's descriptive fields."""
    validation = next(s for s in scores if s in VALIDATION_SETS)
    summaries = {s: summarize_set(s, labels, reference, by, sorted(next(iter(by.values())).cases), case_folds[s],
                                  seed, resamples) for s, by in scores.items()}
    level = procedure_level(labels, labels[reference], runs, validation == IN_SAMPLE, left_out)
    level.fill_in(summaries[validation])
    families = holm_families(summaries, validation, primary, level.design.procedure_level)
    apply_holm(summaries, families, validation, primary)
    return CompareReport(**header, reference=labels[reference], seed=seed, bootstrap_resamples=resamples,
                         training_runs=level.design, efficiency=costs, primary=primary,
                         primary_level=families.primary_level, num_comparisons=families.secondary_tests,
                         sets=summaries, conventions=CONVENTIONS, timing=timing)
