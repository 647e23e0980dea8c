"""The procedure-level statistics of compare: simulated studies with known case, fold and run variance (the 95%
interval covers the true difference of procedures), and the Nadeau-Bengio statistic against a hand computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nnunetv2_llm.evaluation.procedure import RunDifferences, nadeau_bengio, procedure_comparison
from nnunetv2_llm.evaluation.statistics import bootstrap_ci

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
    return RunDifferences(by_fold, n_test=cases_per_fold, n_train=n - cases_per_fold)


def test_procedure_interval_covers_the_true_difference_and_the_case_interval_does_not():
    """A few hundred simulated studies (fixed seed): the procedure-level 95% interval covers the true difference of
    procedures in >= 90% of them; the case-level interval (today's, replicate 1's cases) is printed beside it."""
    rng = np.random.default_rng(31)
    studies = 300
    covered = {"procedure": 0, "case": 0, "procedure, one run per fold": 0}
    widths = {k: [] for k in covered}
    for i in range(studies):
        diffs = simulated_study(rng)
        proc = procedure_comparison(diffs, components=False)
        covered["procedure"] += proc.ci_low <= TRUE_DIFFERENCE <= proc.ci_high
        widths["procedure"].append(proc.ci_high - proc.ci_low)
        first = RunDifferences([d[:1] for d in diffs.by_fold], diffs.n_test, diffs.n_train)
        nb = procedure_comparison(first, components=False)
        covered["procedure, one run per fold"] += nb.ci_low <= TRUE_DIFFERENCE <= nb.ci_high
        widths["procedure, one run per fold"].append(nb.ci_high - nb.ci_low)
        low, high = bootstrap_ci(np.concatenate([d[0] for d in diffs.by_fold]), seed=i, resamples=500)
        covered["case"] += low <= TRUE_DIFFERENCE <= high
        widths["case"].append(high - low)
    coverage = {k: v / studies for k, v in covered.items()}
    for k, v in coverage.items():
        print(f"coverage of the true procedure difference by the {k} level's 95% interval: {v:.1%} "
              f"(mean width {np.mean(widths[k]):.3f})")
    assert coverage["procedure"] >= 0.90
    assert coverage["procedure, one run per fold"] >= 0.90
    assert coverage["case"] < coverage["procedure"]  # the case-level interval ignores training noise


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
    diffs = RunDifferences([np.array([[m - 0.01, m + 0.01]]) for m in fold_means], n_test=2, n_train=8)
    proc = procedure_comparison(diffs)
    assert proc.runs == 5 and proc.replicates == 1 and proc.variance_components is None
    assert (proc.mean_difference, proc.ci_low, proc.ci_high, proc.p) == pytest.approx(
        nadeau_bengio(np.array(fold_means), 2, 8)[:4])
    assert "training noise is not measured" in proc.note and "replicates: 3" in proc.note
    single = procedure_comparison(RunDifferences([np.array([[0.01, 0.03]])], n_test=2, n_train=8))
    assert math.isnan(single.ci_low) and "training noise is not measured" in single.note


def test_variance_components_recover_the_simulated_run_variance():
    """Many folds and replicates: MixedLM's run component is near the simulated 2 x (run_sd^2 + noise_sd^2 / n)."""
    rng = np.random.default_rng(7)
    diffs = simulated_study(rng, folds=40, replicates=4, cases_per_fold=10, fold_sd=0.0)
    vc = procedure_comparison(diffs).variance_components
    expected_run = 2 * (0.03 ** 2 + 0.02 ** 2 / 10)
    assert vc["run"] == pytest.approx(expected_run, rel=0.35)
    assert vc["case"] == pytest.approx(2 * (0.03 ** 2 + 0.02 ** 2), rel=0.35)
