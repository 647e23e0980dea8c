"""The procedure level over repeated partitions: P different k-fold partitions of one dataset, every fold trained R
times. Which statistic was measured, not assumed (benchmarks/calibration.py, docs/compare-and-statistics.md,
"Calibration: measured coverage"): the mean over partitions of each partition's mean fold difference, with the
Nadeau-Bengio variance averaged over the partitions and k - 1 degrees of freedom. Its interval is never narrower than
one partition's on average, so it covered at least as often as the one-partition test in every simulated setting,
while the corrected repeated k-fold test of Bouckaert & Frank (2004; variance 1/(Pk) + n_test/n_train over the P*k
folds, Pk - 1 df) shrinks with P although the partitions share their cases, and covered less than one partition
wherever folds were correlated.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from nnunetv2_llm.evaluation.procedure import ProcedureComparison, FoldDifferences, procedure_comparison, t_interval

NOT_INCLUDED = ("the interval does not include what all partitions share: their one dataset (a strong dependence "
                "of the result on the training cases is not measurable within one dataset, Bengio & Grandvalet 2004; "
                "measured coverage: docs/compare-and-statistics.md, Calibration)")


@dataclass
class PartitionStatistics:
    """One partition's mean fold difference, its Nadeau-Bengio variance and the folds with a value."""

    mean: float
    variance: float
    folds: int


def partition_statistics(diffs: FoldDifferences) -> PartitionStatistics:
    """One partition's fold means (each the mean of the fold's replicate runs), with variance
    (1/k + n_test/n_train) s^2; no variance below 2 folds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fold whose cases are all NaN stays NaN
        fold_means = np.nanmean(diffs.run_means(), axis=1)
    fold_means = fold_means[~np.isnan(fold_means)]
    k = len(fold_means)
    if k < 2:
        return PartitionStatistics(float(fold_means.mean()) if k else math.nan, math.nan, k)
    variance = (1 / k + diffs.n_test / diffs.n_train) * float(fold_means.var(ddof=1))
    return PartitionStatistics(float(fold_means.mean()), variance, k)


def partitions_comparison(partitions: list[FoldDifferences], components: bool = True) -> ProcedureComparison:
    """The procedure-level interval and test over P partitions (one FoldDifferences each, k folds x R replicates).
    One partition is compare's usual procedure level (``components``: its variance components; over several
    partitions none are estimated); every interval over folds notes what it does not include."""
    if not partitions:
        raise ValueError("partitions_comparison needs at least one partition (P >= 1), got none")
    if len(partitions) == 1:
        one = procedure_comparison(partitions[0], components=components)
        if len(partitions[0].by_fold) < 2 or math.isnan(one.ci_low):
            return one
        return replace(one, note="; ".join(filter(None, [one.note, NOT_INCLUDED])))
    stats = [partition_statistics(d) for d in partitions]
    folds = min(s.folds for s in stats)
    replicates = partitions[0].replicates
    p_count = len(partitions)
    runs = sum(len(d.by_fold) for d in partitions) * replicates
    mean = float(np.mean([s.mean for s in stats]))
    method = (f"mean over {p_count} partitions of {folds} folds x {replicates} replicate runs; variance: the "
              f"Nadeau-Bengio variance (1/k + n_test/n_train) s^2 of each partition's fold means, averaged over the "
              f"partitions; t with {folds - 1} df")
    if folds < 2:
        return ProcedureComparison(method=method, runs=runs, folds=folds, replicates=replicates,
                                   mean_difference=mean, ci_low=math.nan, ci_high=math.nan, p=math.nan,
                                   note="no interval: a partition has fewer than 2 folds with a value (the "
                                        "fold-to-fold spread is what the interval is made of)")
    variance = float(np.mean([s.variance for s in stats]))
    low, high, p = t_interval(mean, variance, folds - 1)
    return ProcedureComparison(method=method, runs=runs, folds=folds, replicates=replicates, mean_difference=mean,
                               ci_low=low, ci_high=high, p=p, degrees_of_freedom=folds - 1, note=NOT_INCLUDED)
