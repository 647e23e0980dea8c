"""The second question compare answers: is this training *procedure* better than that one? The unit is the
training run, not the case.

Each fold of a cross-validation is one training run per variant; a grid's ``replicates`` (or replicates trained by
hand into ``$nnUNet_results/replicates/<r>``) trains each fold again. Per fold f and replicate r the run-level
difference is the mean paired difference (variant - reference, same replicate number) over the fold's validation
cases. Then:

* k >= 2 folds: the corrected resampled t-test of Nadeau and Bengio (2003) over the k fold means (each the mean of
  its R replicate runs): variance (1/k + n_test/n_train) * s^2, t with k - 1 degrees of freedom (scipy). The
  correction accounts for the folds' overlapping training sets; averaging replicates takes the run-to-run noise
  into the fold means, so the interval covers a new training of the procedure on a new sample of cases.
* one fold (or 'all') and R >= 2 replicates: t with R - 1 degrees of freedom over the replicate runs, the variance of
  the mean over runs plus the case-sampling variance of the mean over cases.
* one fold and one run: no interval: training noise is not measured.

With R >= 2 the variance components of the run-level difference (between folds, between replicate runs of one fold)
come from a mixed model (statsmodels MixedLM, REML), and the case component is the spread of the per-case
difference within one run. Distributions come from scipy and statsmodels; nothing here implements one.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

LEVEL = 0.95
HOW_TO_MEASURE = ("train each fold 3 times: `replicates: 3` in a `nnunetv2-llm sweep` grid, or by hand with "
                  "nnUNet_results=\"$nnUNet_results/replicates/2\" (and /3) before the same nnUNetv2_train command")


@dataclass
class ProcedureComparison:
    """This training procedure against the reference's, on one metric (report.json: ``procedure``)."""

    method: str
    runs: int  # training runs per variant: folds x replicates
    folds: int
    replicates: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p: float
    variance_components: dict[str, float] | None = None
    p_holm: float = math.nan
    degrees_of_freedom: int | None = None
    note: str = ""

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainingRuns:
    """What a report's runs allow (report.json: ``training_runs``): folds, replicates and whether training noise
    was measured, with the sentence the report prints."""

    folds: int
    replicates: int
    runs_per_variant: int
    training_noise_measured: bool
    procedure_level: bool
    note: str
    layout: str = "replicate 1: $nnUNet_results; replicate r >= 2: $nnUNet_results/replicates/<r>"

    @classmethod
    def of(cls, folds: int, replicates: int) -> "TrainingRuns":
        if replicates > 1:
            note = (f"{replicates} training runs of each fold: the procedure level includes training noise (run to "
                    f"run) as well as case sampling")
        elif folds > 1:
            note = ("training noise is not measured apart from the folds' differences (one training run per fold; "
                    "the procedure level is the Nadeau-Bengio test over folds); to measure it, " + HOW_TO_MEASURE)
        else:
            note = ("training noise is not measured (a single training run per variant): every interval covers case "
                    "sampling only; to measure it, " + HOW_TO_MEASURE)
        return cls(folds, replicates, folds * replicates, replicates > 1, folds > 1 or replicates > 1, note)

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class RunDifferences:
    """Per fold, a replicates x cases array of paired differences (variant - reference); NaN cases left out of
    means. ``n_test``/``n_train``: the mean validation and training split sizes of the folds."""

    by_fold: list[np.ndarray]
    n_test: float
    n_train: float

    @property
    def replicates(self) -> int:
        return int(self.by_fold[0].shape[0])

    def run_means(self) -> np.ndarray:
        """folds x replicates: the mean difference of each pair of training runs."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a run whose cases are all NaN stays NaN
            return np.array([np.nanmean(d, axis=1) for d in self.by_fold])


def t_interval(mean: float, variance: float, df: int, level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, two-sided p against 0) of a t statistic with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t
    if not variance > 0:
        return mean, mean, (1.0 if mean == 0 else 0.0)
    se = math.sqrt(variance)
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return mean - half, mean + half, float(2 * t.sf(abs(mean) / se, df))


def nadeau_bengio(fold_means: np.ndarray, n_test: float, n_train: float) -> tuple[float, float, float, float, int]:
    """Corrected resampled t-test over k fold values: (mean, low, high, two-sided p, df = k - 1)."""
    d = np.asarray(fold_means, dtype=float)
    k = len(d)
    mean = float(d.mean())
    variance = (1 / k + n_test / n_train) * float(d.var(ddof=1))
    low, high, p = t_interval(mean, variance, k - 1)
    return mean, low, high, p, k - 1


def variance_components(diffs: RunDifferences) -> dict[str, float] | None:
    """Between folds and between replicate runs (statsmodels MixedLM on the run-level differences, REML; one fold:
    the runs' sample variance), and the case component (the per-case difference's variance within a run)."""
    if diffs.replicates < 2:
        return None
    runs = diffs.run_means()
    within = [np.nanvar(d[r], ddof=1) for d in diffs.by_fold for r in range(d.shape[0])
              if np.sum(~np.isnan(d[r])) > 1]
    case = float(np.mean(within)) if within else math.nan
    if len(diffs.by_fold) == 1:
        return {"fold": math.nan, "run": float(np.nanvar(runs[0], ddof=1)), "case": case}
    import statsmodels.api as sm
    y = runs.ravel()
    groups = np.repeat(np.arange(runs.shape[0]), runs.shape[1])
    keep = ~np.isnan(y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boundary fits (a zero fold component) warn; the estimate stands
            fit = sm.MixedLM(y[keep], np.ones((keep.sum(), 1)), groups[keep]).fit(reml=True)
        fold, run = float(np.asarray(fit.cov_re)[0, 0]), float(fit.scale)
    except (ValueError, np.linalg.LinAlgError):
        fold, run = math.nan, math.nan
    return {"fold": fold, "run": run, "case": case}


def procedure_comparison(diffs: RunDifferences, components: bool = True) -> ProcedureComparison:
    """The procedure-level interval and test for one variant against the reference on one metric."""
    k, r = len(diffs.by_fold), diffs.replicates
    runs = diffs.run_means()
    vc = variance_components(diffs) if components else None
    if k >= 2:
        fold_means = np.nanmean(runs, axis=1)
        mean, low, high, p, df = nadeau_bengio(fold_means, diffs.n_test, diffs.n_train)
        method = (f"Nadeau-Bengio corrected resampled t-test over {k} folds (variance x (1/k + n_test/n_train) = "
                  f"1/{k} + {diffs.n_test:g}/{diffs.n_train:g}), t with {df} df"
                  + (f"; each fold the mean of its {r} replicate runs; variance components from a mixed model "
                     f"(statsmodels MixedLM, REML)" if r > 1 else "; one run per fold"))
        note = "" if r > 1 else ("training noise is not measured apart from the folds' differences (one run per "
                                 "fold); " + HOW_TO_MEASURE)
        return ProcedureComparison(method, k * r, k, r, mean, low, high, p, vc, degrees_of_freedom=df, note=note)
    if r >= 2:
        d = diffs.by_fold[0]
        case_means = np.nanmean(d, axis=0)
        case_means = case_means[~np.isnan(case_means)]
        mean = float(np.nanmean(runs[0]))
        variance = float(np.nanvar(runs[0], ddof=1)) / r + (float(case_means.var(ddof=1)) / len(case_means)
                                                            if len(case_means) > 1 else 0.0)
        low, high, p = t_interval(mean, variance, r - 1)
        method = (f"t over {r} replicate runs of one fold (variance of their mean plus the case-sampling variance), "
                  f"t with {r - 1} df; variance components: run from the replicates, case within a run")
        return ProcedureComparison(method, r, 1, r, mean, low, high, p, vc, degrees_of_freedom=r - 1)
    return ProcedureComparison("not measured: one training run per variant", 1, 1, 1, float(np.nanmean(runs)),
                               math.nan, math.nan, math.nan, None,
                               note="training noise is not measured (a single training run per variant); the "
                                    "intervals cover case sampling only; " + HOW_TO_MEASURE)


PROCEDURE_LEVEL, CASE_LEVEL = "training procedure", "these models on these cases"


def has_interval(x: dict | None) -> bool:
    """Whether a report entry's procedure level has an interval (one training run has none)."""
    return bool(x) and x.get("ci_low") is not None and not math.isnan(x["ci_low"])


def headline_difference(comparison: dict) -> tuple[float, float, float, float, str]:
    """(Δ, low, high, Holm p, level) of a report comparison: the procedure level where it has an interval, else the
    case level. The one rule every headline (layers, which layer, summaries) follows."""
    x = comparison.get("procedure")
    if has_interval(x):
        return x["mean_difference"], x["ci_low"], x["ci_high"], x.get("p_holm", math.nan), PROCEDURE_LEVEL
    c = comparison
    return c["mean_difference"], c["ci_low"], c["ci_high"], c["p_holm"], CASE_LEVEL


def headline_mean(per_metric: dict) -> tuple[float, float, float, str]:
    """(mean, low, high, level) of one variant's metric in a report, by the same rule."""
    x = per_metric.get("procedure")
    if has_interval(x):
        return x["mean"], x["ci_low"], x["ci_high"], PROCEDURE_LEVEL
    return per_metric["mean"], per_metric["ci_low"], per_metric["ci_high"], CASE_LEVEL
