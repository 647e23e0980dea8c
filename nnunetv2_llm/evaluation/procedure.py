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
* one fold and R >= 2 replicates: t over the replicate runs, the variance of the mean over runs plus the
  case-sampling variance of the mean over cases, with Welch-Satterthwaite degrees of freedom.
* one fold and one run, or fold 'all' (in-sample: scores of the training cases): no procedure-level claim.

No interval and p = NaN, with the reason in ``note``, where the data cannot support one: a fold with no case that has
a value, differences without spread (zero variance), or a single case.

With R >= 2 the variance components of the run-level difference (between folds, between replicate runs of one fold)
come from a mixed model (statsmodels MixedLM, REML; no fold component below 3 folds, and a fit on the boundary,
exactly 0, is flagged), and the case component is the spread of the per-case difference within one run divided by
the cases per fold: all three are variances of a run's mean difference. Distributions come from scipy and
statsmodels; nothing here implements one.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

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
    variance_components: dict[str, float] | None = None  # fold, run, case: variances of a run's mean difference
    p_holm: float = math.nan  # set where this test is the primary endpoint (Holm over the variants)
    degrees_of_freedom: float | None = None
    note: str = ""
    caveats: list[str] = field(default_factory=list)  # what the data could not support (also in ``note``)
    case_weighted_difference: float = math.nan  # the mean over cases (folds weighted by their cases)
    fold_component_on_boundary: bool = False  # the mixed model put the fold component at exactly 0

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.ci_low)


@dataclass
class TrainingDesign:
    """The design of a report's training runs and what it allows (report.json: ``training_runs``): partitions,
    folds, replicates and whether training noise was measured, with the sentence the report prints, and the
    replicate runs found but left out (no pair)."""

    folds: int
    replicates: int
    runs_per_variant: int
    training_noise_measured: bool
    procedure_level: bool
    note: str
    layout: str = "replicate 1: $nnUNet_results; replicate r >= 2: $nnUNet_results/replicates/<r>"
    left_out: list[str] = field(default_factory=list)  # "replicate 3 of A (...)": runs without a partner
    partitions: int = 1  # k-fold partitions of the cases (folds 5, 6, ... of the splits file: partition 2, ...)

    @classmethod
    def of(cls, folds: int, replicates: int, in_sample: bool = False,
           left_out: list[str] | None = None, partitions: int = 1) -> "TrainingDesign":
        if in_sample:
            note = ("in-sample scores (fold all, validated on its own training cases): no procedure-level claim, "
                    "since a training run scored on its training cases says nothing about new cases; every "
                    "interval covers these cases only")
        elif replicates > 1:
            note = (f"{replicates} training runs of each fold: the procedure level includes training noise (run to "
                    f"run) as well as case sampling")
        elif folds > 1:
            note = ("training noise is not measured apart from the folds' differences (one training run per fold; "
                    "the procedure level is the Nadeau-Bengio test over folds); to measure it, " + HOW_TO_MEASURE)
        elif partitions > 1:
            note = (f"training noise is not measured (one training run of one fold in each of {partitions} "
                    f"partitions; the procedure level needs 2 or more folds of each partition): every interval covers "
                    f"case sampling only; to measure it, " + HOW_TO_MEASURE)
        else:
            note = ("training noise is not measured (a single training run per variant): every interval covers case "
                    "sampling only; to measure it, " + HOW_TO_MEASURE)
        if partitions > 1 and not in_sample:
            note += (f"; {partitions} partitions of the cases into {folds} fold(s): the procedure level averages the "
                     f"partitions; the case level (these models on these cases) reads partition 1's out-of-fold "
                     f"predictions, nnU-Net's own cross-validation, so each case counts once")
        if left_out:
            note += "; left out (a paired comparison needs the same replicate of every variant): " + "; ".join(left_out)
        return cls(folds, replicates, partitions * folds * replicates, replicates > 1 and not in_sample,
                   not in_sample and (folds > 1 or replicates > 1), note, left_out=list(left_out or []),
                   partitions=partitions)


@dataclass
class FoldDifferences:
    """Per fold, a replicates x cases array of paired differences (variant - reference); NaN cases left out of
    means. ``n_test``/``n_train``: the mean validation and training split sizes of the folds."""

    by_fold: list[np.ndarray]
    n_test: float
    n_train: float

    @property
    def replicates(self) -> int:
        return int(self.by_fold[0].shape[0])

    def cases_per_fold(self) -> list[int]:
        """Per fold, the cases with a value in at least one run."""
        return [int(np.sum(~np.all(np.isnan(d), axis=0))) for d in self.by_fold]

    def run_means(self) -> np.ndarray:
        """folds x replicates: the mean difference of each pair of training runs."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a run whose cases are all NaN stays NaN
            return np.array([np.nanmean(d, axis=1) for d in self.by_fold])


def t_interval(mean: float, variance: float, df: float, level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, two-sided p against 0) of a t statistic with ``df`` degrees of freedom (scipy); all NaN where
    the variance is zero or unknown (no spread measured is no certainty)."""
    from scipy.stats import t
    if not variance > 0 or not df > 0:
        return math.nan, math.nan, math.nan
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


MIN_FOLDS_FOR_FOLD_COMPONENT = 3  # with 2 folds the REML fold component is noise (its 5-95% range spans 0 to 5e-3)
BOUNDARY = 1e-4  # a fold component this small against run + case is a fit on the boundary (REML stops near 0)


def variance_components(diffs: FoldDifferences) -> tuple[dict[str, float] | None, bool]:
    """(fold, run and case components, all variances of a run's mean difference; whether the fold component sits on
    the boundary). fold and run: statsmodels MixedLM on the run-level differences (REML; one fold: the runs' sample
    variance; no fold component below 3 folds); case: the per-case difference's variance within a run over the
    cases per fold."""
    if diffs.replicates < 2:
        return None, False
    runs = diffs.run_means()
    within = [np.nanvar(d[r], ddof=1) for d in diffs.by_fold for r in range(d.shape[0])
              if np.sum(~np.isnan(d[r])) > 1]
    per_fold = [n for n in diffs.cases_per_fold() if n]
    case = float(np.mean(within)) / float(np.mean(per_fold)) if within and per_fold else math.nan
    if len(diffs.by_fold) == 1:
        return {"fold": math.nan, "run": float(np.nanvar(runs[0], ddof=1)), "case": case}, False
    import statsmodels.api as sm
    y = runs.ravel()
    groups = np.repeat(np.arange(runs.shape[0]), runs.shape[1])
    keep = ~np.isnan(y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boundary fits (a zero fold component) warn; flagged below
            fit = sm.MixedLM(y[keep], np.ones((keep.sum(), 1)), groups[keep]).fit(reml=True)
        fold, run = float(np.asarray(fit.cov_re)[0, 0]), float(fit.scale)
    except (ValueError, np.linalg.LinAlgError):
        fold, run = math.nan, math.nan
    if len(diffs.by_fold) < MIN_FOLDS_FOR_FOLD_COMPONENT:
        return {"fold": math.nan, "run": run, "case": case}, False
    return {"fold": fold, "run": run, "case": case}, fold <= BOUNDARY * (run + case)


def _no_interval(reason: str) -> str:
    return f"no interval and no p: {reason}"


def procedure_comparison(diffs: FoldDifferences, components: bool = True) -> ProcedureComparison:
    """The procedure-level interval and test for one variant against the reference on one metric."""
    k, r = len(diffs.by_fold), diffs.replicates
    runs = diffs.run_means()
    vc, boundary = variance_components(diffs) if components else (None, False)
    sizes = diffs.cases_per_fold()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        case_mean = float(np.nanmean(np.concatenate([np.nanmean(d, axis=0) for d in diffs.by_fold])))
    notes = []
    if boundary:
        notes.append("the fold variance component was fitted at its boundary (0): the folds' spread is within "
                     "what the runs explain, not a measured zero")
    if vc is not None and k < MIN_FOLDS_FOR_FOLD_COMPONENT:
        notes.append(f"no fold variance component with {k} fold(s) (it needs {MIN_FOLDS_FOR_FOLD_COMPONENT})")
    if k >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a fold without values stays NaN, named below
            fold_means = np.nanmean(runs, axis=1)
        method = (f"Nadeau-Bengio corrected resampled t-test over {k} folds (variance x (1/k + n_test/n_train) = "
                  f"1/{k} + {diffs.n_test:g}/{diffs.n_train:g}), t with {k - 1} df"
                  + (f"; each fold the mean of its {r} replicate runs; variance components from a mixed model "
                     f"(statsmodels MixedLM, REML)" if r > 1 else "; one run per fold"))
        empty = [i for i, m in enumerate(fold_means) if math.isnan(m)]
        if empty:
            mean, low, high, p = math.nan, math.nan, math.nan, math.nan
            notes.insert(0, _no_interval(f"fold(s) at position {', '.join(map(str, empty))} have no case with a "
                                         f"value"))
        else:
            mean, low, high, p, _ = nadeau_bengio(fold_means, diffs.n_test, diffs.n_train)
            if math.isnan(p):
                notes.insert(0, _no_interval("the fold differences have no spread (zero variance)"))
        if len(set(sizes)) > 1 and not empty:
            notes.append(f"folds weigh equally (the unit is the training run; fold sizes {min(sizes)} to "
                         f"{max(sizes)} cases); weighted by cases the difference is {case_mean:+.4f}")
        unmeasured = ["training noise is not measured apart from the folds' differences (one run per fold); "
                      + HOW_TO_MEASURE] if r == 1 else []
        return ProcedureComparison(method, k * r, k, r, mean, low, high, p, vc, degrees_of_freedom=k - 1,
                                   note="; ".join(notes + unmeasured), caveats=notes,
                                   case_weighted_difference=case_mean, fold_component_on_boundary=boundary)
    if r >= 2:
        case_means = np.nanmean(diffs.by_fold[0], axis=0)
        case_means = case_means[~np.isnan(case_means)]
        mean = float(np.nanmean(runs[0]))
        run_part = float(np.nanvar(runs[0], ddof=1)) / r
        method = (f"t over {r} replicate runs of one fold (variance of their mean plus the case-sampling variance, "
                  f"Welch-Satterthwaite df); variance components: run from the replicates, case within a run")
        if len(case_means) < 2:
            notes.insert(0, _no_interval(f"{len(case_means)} case(s): the case-sampling variance is not measured"))
            return ProcedureComparison(method, r, 1, r, mean, math.nan, math.nan, math.nan, vc, note="; ".join(notes),
                                       caveats=notes, case_weighted_difference=case_mean)
        case_part = float(case_means.var(ddof=1)) / len(case_means)
        df = welch_satterthwaite([(run_part, r - 1), (case_part, len(case_means) - 1)])
        low, high, p = t_interval(mean, run_part + case_part, df)
        if math.isnan(p):
            notes.insert(0, _no_interval("the differences have no spread (zero variance)"))
        return ProcedureComparison(method, r, 1, r, mean, low, high, p, vc, degrees_of_freedom=df,
                                   note="; ".join(notes), caveats=notes, case_weighted_difference=case_mean)
    return ProcedureComparison("not measured: one training run per variant", 1, 1, 1, float(np.nanmean(runs)),
                               math.nan, math.nan, math.nan, None,
                               note="training noise is not measured (a single training run per variant); the "
                                    "intervals cover case sampling only; " + HOW_TO_MEASURE,
                               case_weighted_difference=case_mean)


def welch_satterthwaite(parts: list[tuple[float, int]]) -> float:
    """Degrees of freedom of a sum of variance estimates (each with its own df): (sum v)^2 / sum(v^2 / df)."""
    total = sum(v for v, _ in parts)
    denominator = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    return total * total / denominator if denominator > 0 else math.nan


PROCEDURE_LEVEL, CASE_LEVEL = "training procedure", "these models on these cases"

