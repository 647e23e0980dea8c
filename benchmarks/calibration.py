"""Calibration of compare's procedure level, simulated where it can fail: every fold's result depends on its training
cases (the folds of one partition share (k-2)/(k-1) of them), so fold results are correlated as in a real
cross-validation, and no estimator of that variance from one dataset is unbiased (Bengio & Grandvalet 2004).

The generative model (logit-scale Dice, one study = one dataset of n cases): case i scored by a model of procedure j
trained on training set T in run r has Dice sigmoid(base_j + case_i + interaction_ij + tau_j(T) + run_jr + noise),
where tau_j(T) = training_sd * sum over T of z_jl / sqrt(|T|) is the training-set effect (each case carries one z per
procedure), run_jr one effect per training run and noise one per run and case. The true procedure difference is
E[Dice_A] - E[Dice_B] over everything (cases, training sets, runs), by Gauss-Hermite quadrature. Each study draws
P partitions into k folds, R replicate runs of each fold. The statistics are vectorised over studies; compare's own
(procedure_comparison for one partition, partitions.partitions_comparison for P) are checked to give the same
intervals on the first studies of every cell, beside the candidates the choice was made from.

    python benchmarks/calibration.py                   # the grid, 1000 studies a cell (about 10 s on one core)
    python benchmarks/calibration.py --studies 200     # quicker, wider Monte Carlo error

Writes benchmarks/results/calibration.json (seeded: settings, coverage, type I error and their Monte Carlo SE, the
fold correlation each setting produces) and prints the table docs/compare-and-statistics.md shows.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "calibration.json"
CASES = 40
LEVEL = 0.95
BASE_DICE = 0.8
TRUE_LOGIT_SHIFT = 0.25  # procedure A's advantage on the logit scale (about +0.03 Dice)
TRAINING_SD = {"none": 0.0, "moderate": 0.05, "strong": 0.25}
RUN_SD = {"small": 0.03, "large": 0.2}
CASE_SD, INTERACTION_SD, NOISE_SD = 0.5, 0.2, 0.1


@dataclass(frozen=True)
class Setting:
    """One cell of the grid."""

    training: str  # the training-set effect: none, moderate, strong
    run_noise: str  # small, large
    folds: int
    replicates: int
    partitions: int
    cases: int = CASES

    def label(self) -> str:
        return (f"training-set effect {self.training}, run noise {self.run_noise}, k = {self.folds}, "
                f"R = {self.replicates}, P = {self.partitions}")


@dataclass
class Studies:
    """Simulated studies: per-case differences A - B (studies x partitions x replicates x cases), each case's fold in
    each partition (studies x partitions x cases) and the true procedure difference."""

    differences: np.ndarray
    fold_of: np.ndarray
    folds: int
    true_difference: float

    def fold_means(self) -> np.ndarray:
        """studies x partitions x folds: each fold's mean difference over its cases and replicate runs."""
        one_hot = self.fold_of[..., None] == np.arange(self.folds)  # S x P x n x k
        sums = np.einsum("sprn,spnk->sprk", self.differences, one_hot)
        return (sums / one_hot.sum(axis=2)[:, :, None, :]).mean(axis=2)

    def split_sizes(self) -> tuple[float, float]:
        """(n_test, n_train): the mean validation and training sizes of a partition's folds."""
        n = self.fold_of.shape[-1]
        return n / self.folds, n - n / self.folds

    def run_differences(self, study: int) -> list:
        """One study as compare sees it: one FoldDifferences per partition."""
        from nnunetv2_llm.evaluation.procedure import FoldDifferences
        n_test, n_train = self.split_sizes()
        return [FoldDifferences([self.differences[study, p][:, self.fold_of[study, p] == f] for f in range(self.folds)],
                               n_test, n_train) for p in range(self.fold_of.shape[1])]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def expected_dice(logit_mean: float, logit_sd: float) -> float:
    """E[sigmoid(X)], X ~ N(logit_mean, logit_sd^2), by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(weights * _sigmoid(logit_mean + logit_sd * nodes)) / math.sqrt(2 * math.pi))


def simulate(setting: Setting, studies: int, rng: np.random.Generator, shift: float = TRUE_LOGIT_SHIFT) -> Studies:
    """``studies`` datasets of ``setting.cases`` cases, each cross-validated P times (k folds) R times over."""
    s, p, k, r, n = studies, setting.partitions, setting.folds, setting.replicates, setting.cases
    tau_sd, run_sd = TRAINING_SD[setting.training], RUN_SD[setting.run_noise]
    base = np.array([math.log(BASE_DICE / (1 - BASE_DICE)) + shift, math.log(BASE_DICE / (1 - BASE_DICE))])
    case = rng.normal(0, CASE_SD, (s, 1, 1, n, 1))
    interaction = rng.normal(0, INTERACTION_SD, (s, 1, 1, n, 2))
    z = rng.normal(0, 1, (s, n, 2))
    fold_of = (np.argsort(rng.random((s, p, n)), axis=-1).argsort(axis=-1) * k) // n  # balanced random partitions
    one_hot = fold_of[..., None] == np.arange(k)  # S x P x n x k
    held_out = np.einsum("snj,spnk->spkj", z, one_hot)
    n_train = n - one_hot.sum(axis=2)[..., None]
    tau = tau_sd * (z.sum(axis=1)[:, None, None, :] - held_out) / np.sqrt(n_train)  # S x P x k x 2
    run = rng.normal(0, run_sd, (s, p, k, r, 2))
    # each case is scored by the models of its own fold: S x P x n x 2 and S x P x R x n x 2
    tau_case = np.take_along_axis(tau, fold_of[..., None], axis=2)
    run_case = np.take_along_axis(run.transpose(0, 1, 3, 2, 4), fold_of[:, :, None, :, None], axis=3)
    noise = rng.normal(0, NOISE_SD, (s, p, r, n, 2))
    logit = base + case + interaction + tau_case[:, :, None] + run_case + noise
    dice = _sigmoid(logit)
    total_sd = math.sqrt(CASE_SD ** 2 + INTERACTION_SD ** 2 + tau_sd ** 2 + run_sd ** 2 + NOISE_SD ** 2)
    true = expected_dice(base[0], total_sd) - expected_dice(base[1], total_sd)
    return Studies(dice[..., 0] - dice[..., 1], fold_of, k, true)


def _t_coverage(mean, variance, df, true):
    """Whether each study's 95% t interval covers ``true``, and whether its two-sided test rejects 0 at 5%."""
    from scipy.stats import t
    se = np.sqrt(variance)
    half = t.ppf(0.5 + LEVEL / 2, df) * se
    return np.abs(mean - true) <= half, np.abs(mean) > half


def one_partition(fold_means, n_test, n_train):
    """compare's procedure level on one partition (Nadeau-Bengio over the k fold means, k - 1 df), vectorised."""
    k = fold_means.shape[-1]
    return fold_means.mean(-1), (1 / k + n_test / n_train) * fold_means.var(-1, ddof=1), k - 1


def uncorrected(fold_means, n_test, n_train):
    """A plain t over the k fold means (variance s^2 / k): the fold correlation ignored."""
    k = fold_means.shape[-1]
    return fold_means.mean(-1), fold_means.var(-1, ddof=1) / k, k - 1


def averaged(fold_means, n_test, n_train):
    """partitions_comparison, vectorised: the mean over partitions, each partition's Nadeau-Bengio variance
    averaged over them, k - 1 df."""
    mean, variance, df = one_partition(fold_means, n_test, n_train)
    return mean.mean(-1), variance.mean(-1), df


def averaged_pooled_df(fold_means, n_test, n_train):
    """As ``averaged`` with P(k - 1) df, as if the partitions' variances were independent."""
    mean, variance, df = averaged(fold_means, n_test, n_train)
    return mean, variance, fold_means.shape[-2] * df


def bouckaert_frank(fold_means, n_test, n_train):
    """The corrected repeated k-fold test (Bouckaert & Frank 2004): all P*k fold means, variance
    (1/(Pk) + n_test/n_train) s^2, Pk - 1 df."""
    flat = fold_means.reshape(*fold_means.shape[:-2], -1)
    return one_partition(flat, n_test, n_train)


ONE_PARTITION = {"one partition (Nadeau-Bengio)": one_partition, "uncorrected t": uncorrected}
CANDIDATES = {"averaged NB variance, k-1 df (compare)": averaged, "averaged NB variance, P(k-1) df": averaged_pooled_df,
              "Bouckaert-Frank over P*k": bouckaert_frank}
CHOSEN = "averaged NB variance, k-1 df (compare)"


def fold_correlation(fold_means: np.ndarray) -> float:
    """The mean correlation, over studies, of two folds' mean differences in one partition (all pairs of folds)."""
    k = fold_means.shape[-1]
    c = np.corrcoef(fold_means.T)
    return float(c[np.triu_indices(k, 1)].mean())


def _measure(statistic, fold_means, n_test, n_train, true, null_means) -> dict:
    covered, _ = _t_coverage(*statistic(fold_means, n_test, n_train), true)
    mean0, var0, df0 = statistic(null_means, n_test, n_train)
    _, rejected = _t_coverage(mean0, var0, df0, 0.0)
    s = len(fold_means)
    cov, typ = float(covered.mean()), float(rejected.mean())
    return {"coverage": cov, "coverage_mc_se": math.sqrt(cov * (1 - cov) / s),
            "type_i": typ, "type_i_mc_se": math.sqrt(typ * (1 - typ) / s)}


def _check_against_compare(studies: Studies, count: int = 10) -> None:
    """The vectorised statistics are compare's own: the first studies through procedure_comparison and
    partitions_comparison give the same intervals."""
    from nnunetv2_llm.evaluation.partitions import partitions_comparison
    from nnunetv2_llm.evaluation.procedure import procedure_comparison
    n_test, n_train = studies.split_sizes()
    fm = studies.fold_means()
    from scipy.stats import t
    for i in range(min(count, len(fm))):
        parts = studies.run_differences(i)
        for p in range(1, len(parts) + 1):
            got = (procedure_comparison(parts[0], components=False) if p == 1
                   else partitions_comparison(parts[:p], components=False))
            mean, variance, df = (one_partition(fm[i, 0], n_test, n_train) if p == 1
                                  else averaged(fm[i, :p], n_test, n_train))
            half = t.ppf(0.5 + LEVEL / 2, df) * math.sqrt(variance)
            assert np.allclose([got.mean_difference, got.ci_low, got.ci_high],
                               [mean, mean - half, mean + half], rtol=1e-9, atol=1e-12), (i, p, got)


def measure(setting: Setting, studies: int, seed: int) -> dict:
    """One cell: coverage of the true procedure difference (A ahead) and type I error (A = B), the fold correlation,
    for the one-partition test and the partition candidates at P = 1 .. setting.partitions (the first P partitions
    of the same studies)."""
    rng = np.random.default_rng(seed)
    ahead, null = simulate(setting, studies, rng), simulate(setting, studies, rng, shift=0.0)
    _check_against_compare(ahead)
    n_test, n_train = ahead.split_sizes()
    fm, fm0 = ahead.fold_means(), null.fold_means()
    true = ahead.true_difference
    out = {"setting": {**setting.__dict__, "seed": seed, "studies": studies}, "true_difference": true,
           "estimate_bias": float(fm[:, 0].mean() - true),
           "fold_correlation": fold_correlation(fm[:, 0]), "by_partitions": {}}
    for name, statistic in ONE_PARTITION.items():
        out[name] = _measure(statistic, fm[:, 0], n_test, n_train, true, fm0[:, 0])
    for p in range(2, setting.partitions + 1):
        out["by_partitions"][str(p)] = {name: _measure(statistic, fm[:, :p], n_test, n_train, true, fm0[:, :p])
                                        for name, statistic in CANDIDATES.items()}
    return out


def grid(partitions: int = 3) -> list[Setting]:
    return [Setting(tr, rn, k, r, partitions) for tr, rn, k, r in
            itertools.product(TRAINING_SD, RUN_SD, (3, 5), (1, 2, 3))]


def _pair(x: dict) -> str:
    return f"{x['coverage']:.3f} / {x['type_i']:.3f}"


def docs_table(results: dict) -> str:
    """The measured table of docs/compare-and-statistics.md: per setting, coverage / type I error of the 95%
    interval for one partition (compare's Nadeau-Bengio test, and an uncorrected t) and for P = 2 and 3 partitions
    (compare's averaged variance, and Bouckaert-Frank)."""
    head = ["training-set effect", "run noise", "k", "R", "fold correlation", "one partition (NB)", "uncorrected t",
            "P = 2 (compare)", "P = 3 (compare)", "P = 3 Bouckaert-Frank"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in results["cells"]:
        s, bp = cell["setting"], cell["by_partitions"]
        rows.append("| " + " | ".join([
            s["training"], s["run_noise"], str(s["folds"]), str(s["replicates"]), f"{cell['fold_correlation']:.2f}",
            _pair(cell["one partition (Nadeau-Bengio)"]), _pair(cell["uncorrected t"]), _pair(bp["2"][CHOSEN]),
            _pair(bp["3"][CHOSEN]), _pair(bp["3"]["Bouckaert-Frank over P*k"])]) + " |")
    worst = max(c["one partition (Nadeau-Bengio)"]["coverage_mc_se"] for c in results["cells"])
    rows += ["", f"Each cell: coverage of the true procedure difference / type I error under a true difference of 0, "
                 f"of the 95% interval; {results['studies']} simulated studies a cell (n = {results['cases']} cases, "
                 f"seed {results['seed']}; Monte Carlo SE at most {worst:.3f} for the one-partition coverage). "
                 f"`benchmarks/results/calibration.json` holds every candidate with its SE."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000, help="simulated studies a cell (default 1000)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the first cell (default 2026)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON (default benchmarks/results/calibration.json)")
    args = parser.parse_args(argv)
    if args.studies < 100:
        parser.error(f"--studies {args.studies}: at least 100 (the Monte Carlo error of fewer says nothing)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common
    cells = [measure(s, args.studies, args.seed + i) for i, s in enumerate(grid())]
    results = {"studies": args.studies, "seed": args.seed, "cases": CASES, "level": LEVEL,
               "model": {"base_dice": BASE_DICE, "true_logit_shift": TRUE_LOGIT_SHIFT, "case_sd": CASE_SD,
                         "interaction_sd": INTERACTION_SD, "noise_sd": NOISE_SD, "training_sd": TRAINING_SD,
                         "run_sd": RUN_SD},
               "command": " ".join(["python benchmarks/calibration.py", *(argv if argv is not None else sys.argv[1:])]),
               "cells": cells}
    print(docs_table(results))
    common.write_json(args.out, results, indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
