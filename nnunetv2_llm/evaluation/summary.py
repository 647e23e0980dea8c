"""The compare report as objects: per set the variants' summaries and their comparisons with the reference (case
level and, for the validation set, procedure level), Holm's correction as a pure function of them, and the primary
endpoint. Data flows one way: typed per-case scores -> :class:`PairedResult` / :class:`ProcedureComparison` ->
:class:`SetSummary` -> :class:`CompareReport`; report.json is written from it once, in :mod:`.report`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import HIGHER_IS_BETTER, METRICS
from .procedure import CASE_LEVEL, PROCEDURE_LEVEL, ProcedureComparison, TrainingDesign
from .statistics import (PairedResult, bootstrap_ci, holm, mean_of_present, paired_comparison, paired_values, present,
                         rank_stability, sign_flip_p, std_of_present)

DEFAULT_PRIMARY = "Dice"


@dataclass
class ProcedureMean:
    """One variant's procedure-level mean of a metric (report.json: a variant's ``procedure``)."""

    mean: float
    ci_low: float
    ci_high: float
    runs: int


@dataclass
class Headline:
    """The numbers a headline quotes: the procedure level where it has an interval, else the case level."""

    value: float  # a mean, or a difference to the reference
    ci_low: float
    ci_high: float
    p_holm: float
    level: str


@dataclass
class MetricSummary:
    """One variant's metric on one set: the mean over cases with its bootstrap CI, per fold and per label."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    per_fold: dict[str, float]
    per_label: dict[str, float]
    procedure: ProcedureMean | None = None

    def headline(self) -> Headline:
        """The mean a headline quotes, by :meth:`Comparison.headline`'s rule."""
        x = self.procedure
        if x is not None and not math.isnan(x.ci_low):
            return Headline(x.mean, x.ci_low, x.ci_high, math.nan, PROCEDURE_LEVEL)
        return Headline(self.mean, self.ci_low, self.ci_high, math.nan, CASE_LEVEL)


@dataclass
class Rank:
    rank: float
    first: float  # how often it ranks first when the cases are resampled


@dataclass
class VariantSummary:
    label: str
    metrics: dict[str, MetricSummary]
    ranks: dict[str, Rank]


@dataclass
class Comparison:
    """One variant against the reference on one metric: over cases, and (validation set) over training runs."""

    case: PairedResult
    p_holm: float = math.nan  # of the case-level test, in its family (primary or secondary)
    procedure: ProcedureComparison | None = None
    primary_at: str = ""  # the level (procedure or case) at which this is the report's primary endpoint, else ""

    def headline(self) -> Headline:
        """The one rule every headline (layers, which layer, summaries) follows."""
        x = self.procedure
        if x is not None and x.has_interval:
            return Headline(x.mean_difference, x.ci_low, x.ci_high, x.p_holm, PROCEDURE_LEVEL)
        c = self.case
        return Headline(c.mean_difference, c.ci_low, c.ci_high, self.p_holm, CASE_LEVEL)


@dataclass
class SetSummary:
    """Every variant of one case set, its comparisons with the reference, ranks and the pairwise Dice tests."""

    name: str
    cases: list[str]
    variants: dict[str, VariantSummary]
    comparisons: dict[str, dict[str, Comparison]]  # variant -> metric -> comparison
    pairwise_dice_p: list[list[float]]  # uncorrected p (the table's test) of every pair of variants
    pairwise_dice_p_holm: list[list[float]] = field(default_factory=list)

    def other_pairs(self) -> list[tuple[int, int]]:
        """The pairs of two variants that are not the reference (the significance figure's own tests)."""
        others = [i for i, v in enumerate(self.variants) if v in self.comparisons]
        return [(i, j) for i in others for j in others if i < j]


def metric_summary(values: np.ndarray, cases: list[str], folds: dict, per_label: dict[str, float], seed: int,
                   resamples: int) -> MetricSummary:
    by_fold = {fold: mean_of_present([value for c, value in zip(cases, values) if str(folds[c]) == fold])
               for fold in sorted({str(folds[c]) for c in cases})}
    kept = present(values)
    low, high = bootstrap_ci(kept, seed, resamples) if len(kept) else (math.nan, math.nan)
    return MetricSummary(mean_of_present(values), std_of_present(values), low, high, int(len(kept)), by_fold,
                         per_label)


def summarize_set(name: str, labels: list[str], reference: int, scores: dict, cases: list[str], case_folds: dict,
                  seed: int, resamples: int) -> SetSummary:
    """Means (with a bootstrap CI over cases), per-fold and per-target means, paired comparisons with the
    reference and ranks of every variant (``labels``; ``scores``: label -> :class:`CaseScores`) on one case set."""
    values = {(v, m): scores[v].case_means(cases, m) for v in labels for m in METRICS}
    ranking = {}
    for metric in METRICS:
        matrix = np.stack([values[v, metric] for v in labels], axis=1)
        ranks = rank_stability(matrix, HIGHER_IS_BETTER[metric], seed)
        ranking[metric] = {v: Rank(r, f) for v, r, f in zip(labels, ranks["rank"], ranks["first"])}
    variants, comparisons = {}, {}
    for i, v in enumerate(labels):
        metrics = {m: metric_summary(values[v, m], cases, case_folds[v],
                                     scores[v].target_means(cases, m),
                                     seed, resamples) for m in METRICS}
        variants[v] = VariantSummary(v, metrics, {m: ranking[m][v] for m in METRICS})
        if i != reference:
            comparisons[v] = {m: Comparison(paired_comparison(values[v, m], values[labels[reference], m],
                                                              HIGHER_IS_BETTER[m], seed, resamples, m))
                              for m in METRICS}
    return SetSummary(name, cases, variants, comparisons, pairwise_matrix([values[v, "Dice"] for v in labels], seed))


def pairwise_matrix(values: list[np.ndarray], seed: int, metric: str = "Dice") -> list[list[float]]:
    """The table's test (sign-flip of the mean difference) between every pair of variants' case values on one set,
    uncorrected (:func:`holm_families` corrects them); pairs by :func:`paired_values`."""
    matrix = [[math.nan] * len(values) for _ in values]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            a, b, _ = paired_values(values[i], values[j], metric)
            matrix[i][j] = matrix[j][i] = sign_flip_p(a - b, seed)
    return matrix


@dataclass(frozen=True)
class HolmFamilies:
    """Holm-adjusted p of the report's two families. Primary: the primary metric on the validation set, one test per
    variant against the reference, at the procedure level where the runs allow it (else the case level). Secondary:
    every other case-level comparison and every Dice pair of two other variants, reported without stars."""

    primary_level: str
    primary: dict[str, float]  # variant -> adjusted p
    case: dict[tuple[str, str, str], float]  # (set, variant, metric) -> adjusted p (secondary, or primary at case level)
    pairs: dict[tuple[str, int, int], float]
    secondary_tests: int


def holm_families(sets: dict[str, SetSummary], own: str, primary: str, at_procedure: bool) -> HolmFamilies:
    """The adjusted p-values of both families (``at_procedure``: the runs allow a procedure-level test); changes
    nothing."""
    def primary_p(c: Comparison) -> float:
        if not at_procedure:
            return c.case.p
        return c.procedure.p if c.procedure is not None else math.nan

    tested = {v: primary_p(c[primary]) for v, c in sets[own].comparisons.items()}
    tested = {v: p for v, p in tested.items() if not math.isnan(p)}
    primary_adjusted = dict(zip(tested, holm(list(tested.values()))))
    first = {} if at_procedure else {(own, v, primary): p for v, p in primary_adjusted.items()}
    keys = [(s, v, m) for s, e in sets.items() for v, c in e.comparisons.items() for m, x in c.items()
            if not math.isnan(x.case.p) and (s, v, m) not in first]
    pairs = [(s, i, j) for s, e in sets.items() for i, j in e.other_pairs() if not math.isnan(e.pairwise_dice_p[i][j])]
    adjusted = holm([sets[s].comparisons[v][m].case.p for s, v, m in keys]
                    + [sets[s].pairwise_dice_p[i][j] for s, i, j in pairs])
    return HolmFamilies(PROCEDURE_LEVEL if at_procedure else CASE_LEVEL, primary_adjusted,
                        {**first, **dict(zip(keys, adjusted))}, dict(zip(pairs, adjusted[len(keys):])),
                        len(keys) + len(pairs))


def apply_holm(sets: dict[str, SetSummary], families: HolmFamilies, own: str, primary: str) -> None:
    """Write the adjusted p-values into the summaries and mark the primary comparisons; a pair with the
    reference in the significance matrix is the table's p of the other variant."""
    for s, e in sets.items():
        for v, by_metric in e.comparisons.items():
            for m, c in by_metric.items():
                c.p_holm = families.case.get((s, v, m), math.nan)
                c.primary_at = families.primary_level if s == own and m == primary else ""
                if c.procedure is not None:
                    c.procedure.p_holm = families.primary.get(v, math.nan) if c.primary_at == PROCEDURE_LEVEL \
                        else math.nan
        labels = list(e.variants)
        matrix = [[math.nan] * len(labels) for _ in labels]
        for i, v in enumerate(labels):
            for j, w in enumerate(labels):
                other = w if v not in e.comparisons else v if w not in e.comparisons else None
                if i != j and other is not None:
                    matrix[i][j] = e.comparisons[other]["Dice"].p_holm
        for (name, i, j), p in families.pairs.items():
            if name == s:
                matrix[i][j] = matrix[j][i] = p
        e.pairwise_dice_p_holm = matrix


@dataclass
class Cost:
    """Trainable/frozen parameters and GFLOPs of one patch, and (held-out/zero-shot predictions) wall time."""

    trainable_M: float
    frozen_M: float
    gflops: float
    patch_size: list[int]
    llm: bool
    seconds_per_case: float | None = None
    device: str | None = None


@dataclass
class CompareReport:
    """Everything report.md, report.json, the figures, layers.csv and ``sweep compare`` read."""

    dataset: str
    configuration: str
    folds: list
    labels: list[str]
    ignore_label: int | None
    output: str
    targets_note: str
    reference: str
    seed: int
    bootstrap_resamples: int
    nsd_tolerance_mm: dict[str, float]
    tolerance_note: str
    variants: dict[str, dict[str, str]]  # label -> trainer, plans, folder
    set_kinds: dict[str, str]  # the other sets: name -> held-out / zero-shot
    training_runs: TrainingDesign
    efficiency: dict[str, Cost]
    primary: str
    primary_level: str
    num_comparisons: int  # the secondary family's tests
    sets: dict[str, SetSummary]
    conventions: dict[str, str]
    timing: dict[str, float]
    layers: list | None = None
    source: str = ""  # a re-analysis: the table it read and what it could not recompute

    @property
    def validation_set(self) -> str:
        """The name of the report's validation set (in-domain, or in-sample for fold all)."""
        from .cases import VALIDATION_SETS
        return next(s for s in self.sets if s in VALIDATION_SETS)
