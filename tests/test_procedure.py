"""The procedure-level statistics of compare: its calibration where folds share training cases (the generative model of
benchmarks/calibration.py), the Nadeau-Bengio statistic against a hand computation, and the variance components on
simulated studies with known case, fold and run variance."""
from __future__ import annotations

import math

import numpy as np
import pytest

from calibration_model import calibration
from nnunetv2_llm.evaluation.procedure import FoldDifferences, nadeau_bengio, procedure_comparison

TRUE_DIFFERENCE = 0.02


def simulated_study(rng, folds=5, replicates=3, cases_per_fold=8, case_sd=0.08, interaction_sd=0.03,
                    fold_sd=0.02, run_sd=0.03, noise_sd=0.02):
    """Dice of two procedures A (the variant) and B (the reference) on a k-fold cross-validation: a case effect
    both share, a case x procedure interaction, a training-set effect per procedure and fold (shared by its
    replicates), a run effect per training run and noise per run and case. E[A - B] = TRUE_DIFFERENCE."""
    case = rng.normal(0, case_sd, (folds, cases_per_fold))
    by_fold = []
    for f in range(folds):
        per = {}
        for name, shift in (("A", TRUE_DIFFERENCE), ("B", 0.0)):
            interaction = rng.normal(0, interaction_sd, cases_per_fold)
            training_set = rng.normal(0, fold_sd)
            runs = rng.normal(0, run_sd, (replicates, 1))
            noise = rng.normal(0, noise_sd, (replicates, cases_per_fold))
            per[name] = 0.8 + shift + case[f] + interaction + training_set + runs + noise
        by_fold.append(per["A"] - per["B"])
    n = folds * cases_per_fold
    return FoldDifferences(by_fold, n_test=cases_per_fold, n_train=n - cases_per_fold)


def _nominal_band(studies: int, level: float = 0.95) -> tuple[float, float]:
    """Nominal coverage within 2 Monte Carlo standard errors (the SE of a calibrated interval's coverage)."""
    se = math.sqrt(level * (1 - level) / studies)
    return level - 2 * se, level + 2 * se


def _compare_coverage(setting, studies: int, seed: int) -> tuple[float, float, "calibration.Studies"]:
    """(coverage of the true difference, type I error under a true difference of 0) of compare's procedure level
    (procedure_comparison on partition 1) over simulated studies, and the studies."""
    rng = np.random.default_rng(seed)
    ahead, null = calibration.simulate(setting, studies, rng), calibration.simulate(setting, studies, rng, shift=0.0)
    covered = rejected = 0
    for i in range(studies):
        a = procedure_comparison(ahead.run_differences(i)[0], components=False)
        covered += a.ci_low <= ahead.true_difference <= a.ci_high
        rejected += procedure_comparison(null.run_differences(i)[0], components=False).p < 0.05
    return covered / studies, rejected / studies, ahead


CALIBRATED = calibration.Setting("moderate", "small", folds=5, replicates=2, partitions=1)
STUDIES = 2000


@pytest.fixture(scope="module")
def calibrated():
    return _compare_coverage(CALIBRATED, STUDIES, seed=37)


def test_procedure_interval_is_calibrated_where_folds_are_correlated_as_nadeau_bengio_assume(calibrated):
    """Folds that share (k-2)/(k-1) of their training cases, each training set with its own effect per procedure:
    the fold means correlate (about n_test/n, the correlation Nadeau-Bengio's correction assumes; the old model's
    was 0.003), and the 95% interval covers the true procedure difference within 2 Monte Carlo SE of 95%, its test
    rejecting a true 0 within 2 SE of 5%."""
    coverage, type_i, studies = calibrated
    correlation = calibration.fold_correlation(studies.fold_means()[:, 0])
    print(f"fold correlation {correlation:.3f}, coverage {coverage:.3f}, type I {type_i:.3f} ({STUDIES} studies)")
    assert 0.15 <= correlation <= 0.25
    low, high = _nominal_band(STUDIES)
    assert low <= coverage <= high
    se = math.sqrt(0.05 * 0.95 / STUDIES)
    assert abs(type_i - 0.05) <= 2 * se


def test_the_calibration_check_fails_for_an_uncorrected_t_and_a_too_narrow_repeated_test(calibrated):
    """The same studies through a plain t over the fold means (the folds' correlation ignored) fall outside the
    tolerance the test above asserts, so that check can fail."""
    from scipy.stats import t
    _, _, studies = calibrated
    n_test, n_train = studies.split_sizes()
    mean, variance, df = calibration.uncorrected(studies.fold_means()[:, 0], n_test, n_train)
    half = t.ppf(0.975, df) * np.sqrt(variance)
    coverage = float(np.mean(np.abs(mean - studies.true_difference) <= half))
    print(f"uncorrected t: coverage {coverage:.3f}")
    assert coverage < _nominal_band(STUDIES)[0]


def test_no_interval_is_calibrated_under_a_strong_training_set_effect():
    """What the docs say of a strong training-set effect (k = 5, little run noise): the interval covers far less
    than 95% (Bengio & Grandvalet 2004: no unbiased estimator of k-fold CV's variance)."""
    coverage, type_i, _ = _compare_coverage(calibration.Setting("strong", "small", 5, 1, 1), 500, seed=38)
    print(f"strong training-set effect: coverage {coverage:.3f}, type I {type_i:.3f}")
    assert coverage < _nominal_band(500)[0] - 0.1 and type_i > 0.15


def test_nadeau_bengio_against_a_hand_computation():
    d = [0.01, 0.03, -0.02, 0.04, 0.02]
    n_test, n_train = 4, 16
    mean = (0.01 + 0.03 - 0.02 + 0.04 + 0.02) / 5  # 0.016
    s2 = sum((x - mean) ** 2 for x in d) / 4  # sample variance: 0.00053
    se = math.sqrt((1 / 5 + 4 / 16) * s2)  # corrected: (1/k + n_test/n_train) s^2
    t_stat = mean / se
    from scipy.stats import t
    p = 2 * t.sf(t_stat, 4)
    half = t.ppf(0.975, 4) * se
    got_mean, low, high, got_p, df = nadeau_bengio(np.array(d), n_test, n_train)
    assert df == 4
    assert got_mean == pytest.approx(0.016, abs=1e-15)
    assert s2 == pytest.approx(0.00053, abs=1e-15)
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=1e-12)
    assert got_p == pytest.approx(p, abs=1e-12)
    assert got_p == pytest.approx(0.3587, abs=1e-4)  # t = 0.016 / sqrt(0.45 * 0.00053) = 1.036 on 4 df
    assert got_p > 2 * t.sf(mean / math.sqrt(s2 / 5), 4)  # the correction widens: uncorrected p = 0.195


def test_one_run_per_fold_is_nadeau_bengio_and_a_single_run_measures_nothing():
    fold_means = [0.01, 0.03, -0.02, 0.04, 0.02]
    diffs = FoldDifferences([np.array([[m - 0.01, m + 0.01]]) for m in fold_means], n_test=2, n_train=8)
    proc = procedure_comparison(diffs)
    assert proc.runs == 5 and proc.replicates == 1 and proc.variance_components is None
    assert (proc.mean_difference, proc.ci_low, proc.ci_high, proc.p) == pytest.approx(
        nadeau_bengio(np.array(fold_means), 2, 8)[:4])
    assert "training noise is not measured" in proc.note and "replicates: 3" in proc.note
    single = procedure_comparison(FoldDifferences([np.array([[0.01, 0.03]])], n_test=2, n_train=8))
    assert math.isnan(single.ci_low) and "training noise is not measured" in single.note


def test_variance_components_recover_the_simulated_run_variance():
    """Many folds and replicates: MixedLM's run component is near the simulated 2 x (run_sd^2 + noise_sd^2 / n)."""
    rng = np.random.default_rng(7)
    diffs = simulated_study(rng, folds=40, replicates=4, cases_per_fold=10, fold_sd=0.0)
    vc = procedure_comparison(diffs).variance_components
    expected_run = 2 * (0.03 ** 2 + 0.02 ** 2 / 10)
    assert vc["run"] == pytest.approx(expected_run, rel=0.35)
    # issue 37 #7: the case component on the run-mean scale (per-case variance / cases per fold), as fold and run are
    assert vc["case"] == pytest.approx(2 * (0.03 ** 2 + 0.02 ** 2) / 10, rel=0.35)


# ---------------------------------------------------------------- issue 37: no false certainty at the edges

def test_an_empty_fold_or_zero_variance_gives_no_p_and_says_why():
    """#1: a fold whose cases are all NaN, or identical differences everywhere, gave p = 0 (Holm 0, stars)."""
    rng = np.random.default_rng(0)
    folds = [rng.normal(0.01, 0.02, (3, 8)) for _ in range(5)]
    folds[2][:] = np.nan
    empty = procedure_comparison(FoldDifferences(folds, 8, 32))
    assert math.isnan(empty.p) and math.isnan(empty.ci_low) and "no case with a value" in empty.note
    flat = procedure_comparison(FoldDifferences([np.full((3, 8), .01) for _ in range(5)], 8, 32))
    assert math.isnan(flat.p) and math.isnan(flat.ci_low) and "zero variance" in flat.note
    assert "zero variance" in flat.caveats[0]


def test_one_case_on_one_fold_is_not_significant():
    """#2: one fold, one case, two replicates: t = 21 on 1 df, p = 0.03 (the case variance taken as 0)."""
    one = procedure_comparison(FoldDifferences([np.array([[0.02], [0.021]])], 1, 4))
    assert math.isnan(one.p) and math.isnan(one.ci_low) and "1 case(s)" in one.note


def test_one_fold_uses_welch_satterthwaite_degrees_of_freedom():
    """#10: a well-estimated case variance added to a run variance got R - 1 df."""
    rng = np.random.default_rng(1)
    runs = rng.normal(0, 0.002, (3, 1)) + rng.normal(0.01, 0.05, (1, 40)) + rng.normal(0, 0.01, (3, 40))
    diffs = FoldDifferences([runs], 40, 160)
    result = procedure_comparison(diffs)
    a = np.nanvar(runs.mean(axis=1), ddof=1) / 3
    b = runs.mean(axis=0).var(ddof=1) / 40
    expected = (a + b) ** 2 / (a ** 2 / 2 + b ** 2 / 39)
    assert result.degrees_of_freedom == pytest.approx(expected) and result.degrees_of_freedom > 2
    from scipy.stats import t
    half = t.ppf(0.975, expected) * math.sqrt(a + b)
    assert (result.ci_low, result.ci_high) == pytest.approx((result.mean_difference - half,
                                                              result.mean_difference + half))


def test_unequal_folds_are_named_with_the_case_weighted_difference():
    """#6: folds weigh equally whatever their size (0.009 vs 0.023 with a one-case fold): the rule (the unit is the
    training run) is said, with the case-weighted difference beside it."""
    folds = [np.array([[0.03, 0.02, 0.025, 0.03]]), np.array([[0.02, 0.03, 0.025, 0.02]]), np.array([[-0.04]])]
    result = procedure_comparison(FoldDifferences(folds, 3, 6))
    cases = np.concatenate([f[0] for f in folds])
    assert result.mean_difference == pytest.approx(np.mean([f.mean() for f in folds]))
    assert result.case_weighted_difference == pytest.approx(cases.mean())
    assert "folds weigh equally" in result.note and f"{cases.mean():+.4f}" in result.note


def test_variance_components_are_on_one_scale_with_boundary_fits_flagged_and_no_fold_part_below_three_folds():
    """#7: fold and run are variances of run means, case was a per-case variance; REML's fold component is noise
    with k = 2 and often exactly 0 with k = 5."""
    rng = np.random.default_rng(2)
    two = procedure_comparison(simulated_study(rng, folds=2))
    assert math.isnan(two.variance_components["fold"]) and "no fold variance component with 2 fold(s)" in two.note
    boundary = 0
    for _ in range(12):
        result = procedure_comparison(simulated_study(rng, folds=5, fold_sd=0.0, interaction_sd=0.0))
        vc = result.variance_components
        assert result.fold_component_on_boundary == (vc["fold"] <= 1e-4 * (vc["run"] + vc["case"]))
        boundary += result.fold_component_on_boundary
        if result.fold_component_on_boundary:
            assert "boundary" in result.note
    assert boundary > 0, "with no fold effect some fits sit on the boundary"
