"""The procedure level over repeated partitions (evaluation/partitions.py): against a hand computation, one partition
as compare's usual test, and its calibration in benchmarks/calibration.py's model, where the corrected repeated
k-fold test of Bouckaert & Frank is too narrow."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t

from calibration_model import calibration
from nnunetv2_llm.evaluation.partitions import NOT_INCLUDED, partitions_comparison
from nnunetv2_llm.evaluation.procedure import FoldDifferences, procedure_comparison

NAN = math.nan
# two partitions of 6 cases into 3 folds, 2 replicate runs each (rows), 2 validation cases per fold (columns)
PARTITION_1 = [[[.01, .03], [.02, .04]], [[.00, .02], [.01, NAN]], [[.05, .03], [.04, .02]]]
PARTITION_2 = [[[.02, .02], [.03, .01]], [[.03, .05], [.04, .04]], [[.00, .02], [.01, .01]]]


def _diffs(partition) -> FoldDifferences:
    return FoldDifferences([np.array(f) for f in partition], n_test=2, n_train=4)


def test_two_partitions_against_a_hand_computation():
    """Fold means (runs' means over cases, NaN left out, then over runs): .025 .01 .035 and .02 .04 .01; each
    partition's Nadeau-Bengio variance (1/3 + 2/4) s^2, averaged; t with k - 1 = 2 df."""
    mean_1, mean_2 = (.025 + .01 + .035) / 3, (.02 + .04 + .01) / 3
    s2_1 = ((.025 - mean_1) ** 2 + (.01 - mean_1) ** 2 + (.035 - mean_1) ** 2) / 2
    s2_2 = ((.02 - mean_2) ** 2 + (.04 - mean_2) ** 2 + (.01 - mean_2) ** 2) / 2
    assert (s2_1, s2_2) == pytest.approx((1.583333e-4, 2.333333e-4), rel=1e-6)
    variance = ((1 / 3 + 2 / 4) * s2_1 + (1 / 3 + 2 / 4) * s2_2) / 2
    mean = (mean_1 + mean_2) / 2
    half = t.ppf(0.975, 2) * math.sqrt(variance)
    got = partitions_comparison([_diffs(PARTITION_1), _diffs(PARTITION_2)])
    assert got.mean_difference == pytest.approx(0.07 / 3, abs=1e-15)
    assert (got.ci_low, got.ci_high) == pytest.approx((mean - half, mean + half), abs=1e-12)
    assert got.p == pytest.approx(2 * t.sf(mean / math.sqrt(variance), 2), abs=1e-12)
    assert got.p == pytest.approx(0.2094, abs=1e-4)  # t = 0.02333 / sqrt(1.632e-4) = 1.827 on 2 df
    assert got.degrees_of_freedom == 2 and got.runs == 12 and (got.folds, got.replicates) == (3, 2)
    assert "2 partitions" in got.method and got.note == NOT_INCLUDED
    one = procedure_comparison(_diffs(PARTITION_1))
    assert got.ci_high - got.ci_low > one.ci_high - one.ci_low  # averaged with the wider partition, not shrunk by P


def test_one_partition_is_compares_procedure_level_with_what_it_does_not_include():
    one = partitions_comparison([_diffs(PARTITION_1)], components=False)
    usual = procedure_comparison(_diffs(PARTITION_1), components=False)
    assert (one.mean_difference, one.ci_low, one.ci_high, one.p) == (usual.mean_difference, usual.ci_low,
                                                                     usual.ci_high, usual.p)
    assert one.note.endswith(NOT_INCLUDED) and "Bengio & Grandvalet" in one.note


def test_a_partition_without_two_folds_gives_no_interval_and_none_is_refused():
    lonely = FoldDifferences([np.array([[.01, .02]]), np.array([[NAN, NAN]])], n_test=2, n_train=2)
    got = partitions_comparison([_diffs(PARTITION_1), lonely])
    assert math.isnan(got.ci_low) and math.isnan(got.p) and "fewer than 2 folds" in got.note
    with pytest.raises(ValueError, match=r"at least one partition \(P >= 1\)"):
        partitions_comparison([])


def test_repeated_partitions_cover_at_least_nominally_where_one_partition_is_calibrated():
    """Where compare's one-partition test is calibrated (moderate training-set effect, fold correlation about
    n_test/n): over 2 and 3 partitions the interval covers at least 95% - 2 Monte Carlo SE, never less than one
    partition of the same studies, and its test rejects a true 0 at most 5% + 2 SE; Bouckaert-Frank over the P*k
    folds of the same studies covers less (its variance shrinks with P although the partitions share their
    dataset)."""
    studies = 1000
    rng = np.random.default_rng(2037)
    setting = calibration.Setting("moderate", "small", folds=5, replicates=2, partitions=3)
    ahead, null = calibration.simulate(setting, studies, rng), calibration.simulate(setting, studies, rng, shift=0.0)
    se_coverage, se_type_i = math.sqrt(.95 * .05 / studies), math.sqrt(.05 * .95 / studies)
    firsts = [procedure_comparison(ahead.run_differences(i)[0], components=False) for i in range(studies)]
    one = np.mean([g.ci_low <= ahead.true_difference <= g.ci_high for g in firsts])
    for p in (2, 3):
        got = [partitions_comparison(ahead.run_differences(i)[:p]) for i in range(studies)]
        coverage = np.mean([g.ci_low <= ahead.true_difference <= g.ci_high for g in got])
        type_i = np.mean([partitions_comparison(null.run_differences(i)[:p]).p < 0.05 for i in range(studies)])
        print(f"P = {p}: coverage {coverage:.3f}, type I {type_i:.3f}; one partition covers {one:.3f}")
        assert coverage >= 0.95 - 2 * se_coverage and coverage >= one - 2 * se_coverage
        assert type_i <= 0.05 + 2 * se_type_i
    n_test, n_train = ahead.split_sizes()
    mean, variance, df = calibration.bouckaert_frank(ahead.fold_means(), n_test, n_train)
    bouckaert_frank = np.mean(np.abs(mean - ahead.true_difference) <= t.ppf(0.975, df) * np.sqrt(variance))
    print(f"Bouckaert-Frank over 3 x 5 folds: coverage {bouckaert_frank:.3f}")
    assert bouckaert_frank < 0.95 - 2 * se_coverage
