"""The procedure level of a report from each training run's scores on the validation set: per variant and metric
the interval of its mean, per compared variant and metric its test against the reference, over the partitions,
folds and replicates (:mod:`.partitions`, :mod:`.procedure`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import METRICS
from .partitions import partitions_comparison
from .procedure import FoldDifferences, ProcedureComparison, TrainingDesign
from .scoring import CaseScores
from .statistics import with_perfect_partners
from .summary import ProcedureMean, SetSummary


def split_sizes(splits: list[dict] | None, folds: list) -> tuple[float, float]:
    """Mean validation and training cases of the folds (Nadeau-Bengio's n_test and n_train), from the splits file."""
    chosen = [splits[int(f)] for f in folds if splits and str(f) != "all" and int(f) < len(splits)]
    if not chosen:
        return math.nan, math.nan
    return (sum(len(s["val"]) for s in chosen) / len(chosen), sum(len(s["train"]) for s in chosen) / len(chosen))


@dataclass
class TrainingRunScores:
    """Each training run's scores on the validation set, for the procedure level: per (partition, replicate) each
    variant's scores, the folds of each partition (fold indices of the splits file) and the splits file that gives
    their cases."""

    scores: dict[tuple[int, int], dict[str, CaseScores]]
    partitions: dict[int, list]
    splits: list[dict] | None

    @property
    def replicates(self) -> int:
        return max(r for _, r in self.scores)

    def fold_cases(self, fold) -> list[str]:
        """The cases fold ``fold`` validated on, as nnU-Net orders them."""
        return sorted(self.splits[int(fold)]["val"])

    def fold_of(self, partition: int) -> dict:
        """Case -> its fold in ``partition`` (fold all: every scored case)."""
        if [str(f) for f in self.partitions[partition]] == ["all"]:
            return {c: "all" for c in next(iter(self.scores[partition, 1].values())).cases}
        return {c: f for f in self.partitions[partition] for c in self.fold_cases(f)}


@dataclass
class ProcedureLevel:
    """What the training runs give a report: their design (report.json ``training_runs``) and, unless in-sample,
    per variant and metric the procedure-level interval of its mean and per compared variant and metric its
    :class:`ProcedureComparison` with the reference."""

    design: TrainingDesign
    means: dict[str, dict[str, ProcedureMean]] = field(default_factory=dict)
    comparisons: dict[str, dict[str, ProcedureComparison]] = field(default_factory=dict)

    def fill_in(self, entry: SetSummary) -> None:
        """Put the intervals and tests into the validation set's summary ``entry`` (its ``procedure`` fields)."""
        for v, by_metric in self.means.items():
            for metric, mean in by_metric.items():
                entry.variants[v].metrics[metric].procedure = mean
        for v, by_metric in self.comparisons.items():
            for metric, comparison in by_metric.items():
                entry.comparisons[v][metric].procedure = comparison


def procedure_level(labels: list[str], reference: str, runs: TrainingRunScores, in_sample: bool,
                    left_out: list[str]) -> ProcedureLevel:
    """The procedure level of the validation set: per comparison and metric its :class:`ProcedureComparison`
    over the partitions (:func:`.partitions.partitions_comparison`; one partition: compare's Nadeau-Bengio level),
    per variant and metric the procedure-level interval of its mean, and the design of the training runs.
    In-sample scores (fold all) get no procedure level."""
    first = next(iter(runs.partitions))
    level = ProcedureLevel(TrainingDesign.of(len(runs.partitions[first]), runs.replicates, in_sample, left_out,
                                             len(runs.partitions)))
    if in_sample:
        return level
    sizes = {p: split_sizes(runs.splits, folds) for p, folds in runs.partitions.items()}

    def by_fold(label: str, metric: str, p: int) -> list:  # per fold of partition p: replicates x cases
        return [np.array([runs.scores[p, r][label].case_means(runs.fold_cases(f), metric)
                          for r in range(1, runs.replicates + 1)]) for f in runs.partitions[p]]

    def paired(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:  # the case level's pairing rule
        a, b, _ = with_perfect_partners(a, b, metric)
        return a - b

    for metric in METRICS:
        by_variant = {v: {p: by_fold(v, metric, p) for p in runs.partitions} for v in labels}
        for v in labels:
            mean = partitions_comparison([FoldDifferences(by_variant[v][p], *sizes[p]) for p in runs.partitions],
                                         components=False)
            level.means.setdefault(v, {})[metric] = ProcedureMean(mean.mean_difference, mean.ci_low, mean.ci_high,
                                                                  mean.runs)
            if v != reference:
                level.comparisons.setdefault(v, {})[metric] = partitions_comparison([FoldDifferences(
                    [paired(a, b, metric) for a, b in zip(by_variant[v][p], by_variant[reference][p])], *sizes[p])
                    for p in runs.partitions])
    return level
