"""Paired statistics over cases: the bootstrap CI of the mean difference with the sign-flip permutation test of the
same mean, Wilcoxon signed-rank as an extra column, Holm correction, effect sizes, ranks.

Tests and intervals come from scipy (``scipy.stats.bootstrap``, ``permutation_test``, ``wilcoxon``) and the
correction from statsmodels (``multipletests(method="holm")``); nothing here implements a distribution.
Differences are always ``variant - reference``; for a lower-is-better metric (HD95) a negative
difference is a win.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TIE_TOLERANCE = 1e-12
ALPHA = 0.05
# A case value is NaN when every target of the case is empty in both reference and prediction (nnU-Net's Dice
# convention): in a pair where the other variant has a number, that NaN is a perfect answer, not a missing one.
PERFECT = {"Dice": 1.0, "IoU": 1.0, "NSD": 1.0, "HD95": 0.0}


def present(values) -> np.ndarray:
    """The values that are numbers: NaN and None (a label absent from reference and prediction) left out."""
    return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def mean_of_present(values) -> float:
    """The mean over :func:`present` values, NaN when none is left (nnU-Net's mean over foreground labels)."""
    kept = present(values)
    return float(kept.mean()) if len(kept) else math.nan


def std_of_present(values) -> float:
    kept = present(values)
    return float(kept.std(ddof=1)) if len(kept) > 1 else math.nan


def bootstrap_ci(differences: np.ndarray, seed: int, resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference (cases resampled with replacement, seeded)."""
    from scipy.stats import bootstrap
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:  # one case: no spread to resample, so no interval
        return math.nan, math.nan
    if np.ptp(d) == 0:
        return float(d.mean()), float(d.mean())
    result = bootstrap((d,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (scipy); 1.0 when every difference is zero."""
    from scipy.stats import wilcoxon
    d = np.asarray(differences, dtype=float)
    if not np.any(np.abs(d) > TIE_TOLERANCE):
        return 1.0
    return float(wilcoxon(d).pvalue)


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-) over non-zero differences, in [-1, 1]."""
    from scipy.stats import rankdata
    d = np.asarray(differences, dtype=float)
    d = d[np.abs(d) > TIE_TOLERANCE]
    if len(d) == 0:
        return 0.0
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def win_tie_loss(differences: np.ndarray, higher_is_better: bool) -> tuple[int, int, int]:
    d = np.asarray(differences, dtype=float) * (1 if higher_is_better else -1)
    return int((d > TIE_TOLERANCE).sum()), int((np.abs(d) <= TIE_TOLERANCE).sum()), int((d < -TIE_TOLERANCE).sum())


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels), in the input order."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests
    return [float(p) for p in multipletests(p_values, method="holm")[1]]


def smallest_p(n: int) -> float:
    """The smallest two-sided p a sign-flip test of n pairs can give: every sign the same, 2 / 2^n."""
    return min(1.0, 2.0 ** (1 - n)) if n > 0 else math.nan


def sign_flip_p(differences: np.ndarray, seed: int, resamples: int = 9999) -> float:
    """Two-sided paired permutation test of the mean difference (scipy ``permutation_test``, the signs flipped;
    exact up to 2^13 pairs): it tests the quantity whose interval :func:`bootstrap_ci` gives."""
    from scipy.stats import permutation_test
    d = np.asarray(differences, dtype=float)
    if len(d) < 2 or not np.any(np.abs(d) > TIE_TOLERANCE):
        return math.nan if len(d) < 2 else 1.0
    result = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=resamples,
                              alternative="two-sided", rng=np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


def with_perfect_partners(variant, reference, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The documented pairing rule: a case whose value is NaN for one side only (all its targets empty in reference
    and prediction: a right answer) gets the metric's perfect value; NaN on both sides stays NaN. Returns both arrays
    (same shape) and how many values the rule filled."""
    v, r = np.asarray(variant, dtype=float).copy(), np.asarray(reference, dtype=float).copy()
    one = np.isnan(v) ^ np.isnan(r)
    v[one & np.isnan(v)] = PERFECT[metric]
    r[one & np.isnan(r)] = PERFECT[metric]
    return v, r, int(one.sum())


def paired_values(variant, reference, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The pairs of one metric by :func:`with_perfect_partners`, NaN in both left out; (variant, reference, number of
    pairs the rule filled)."""
    v, r, filled = with_perfect_partners(variant, reference, metric)
    keep = ~(np.isnan(v) | np.isnan(r))
    return v[keep], r[keep], filled


@dataclass
class PairedResult:
    """One variant against the reference on one metric over cases (report.json: a comparison's case-level keys).
    ``p`` tests the mean difference that ``ci_low``/``ci_high`` bound (sign-flip permutation); ``p_wilcoxon`` is the
    signed-rank test of the pseudo-median, an extra column."""

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p: float
    p_wilcoxon: float
    smallest_p: float  # the smallest p n pairs allow: at or above 0.05, no test can be significant
    rank_biserial: float
    wins: int
    ties: int
    losses: int
    filled_pairs: int = 0  # pairs where one variant's NaN (both empty) counted as perfect (see paired_values)

    @property
    def note(self) -> str:
        if self.n < 2:
            return f"{self.n} pair(s): no interval and no test"
        if self.smallest_p >= ALPHA:
            return f"{self.n} pairs cannot give p below {self.smallest_p:.3g}"
        return ""


def paired_comparison(variant: np.ndarray, reference: np.ndarray, higher_is_better: bool, seed: int,
                      resamples: int = 2000, metric: str = "Dice") -> PairedResult:
    """Everything the report says about one variant against the reference on one metric (pairs by
    :func:`paired_values`)."""
    v, r, filled = paired_values(variant, reference, metric)
    d = v - r
    if len(d) == 0:
        return PairedResult(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0, 0, filled)
    low, high = bootstrap_ci(d, seed, resamples)
    wins, ties, losses = win_tie_loss(d, higher_is_better)
    return PairedResult(int(len(d)), float(d.mean()), low, high, sign_flip_p(d, seed),
                        wilcoxon_p(d) if len(d) > 1 else math.nan, smallest_p(len(d)), rank_biserial(d), wins, ties,
                        losses, filled)


def rank_stability(scores: np.ndarray, higher_is_better: bool, seed: int, resamples: int = 1000) -> dict:
    """Ranks of the variants (columns) by their mean over cases (rows), and how often each ranks first when
    the cases are resampled with replacement (challengeR-style bootstrap of the ranking)."""
    s = np.asarray(scores, dtype=float)
    s = s[~np.isnan(s).any(axis=1)]
    sign = -1 if higher_is_better else 1
    if len(s) == 0:
        return {"rank": [math.nan] * scores.shape[1], "first": [math.nan] * scores.shape[1]}
    rank = (np.argsort(np.argsort(sign * s.mean(axis=0), kind="stable"), kind="stable") + 1).tolist()
    rng = np.random.default_rng(seed)
    firsts = np.zeros(s.shape[1])
    for _ in range(resamples):
        means = s[rng.integers(0, len(s), len(s))].mean(axis=0)
        best = sign * means == (sign * means).min()
        firsts += best / best.sum()  # ties share the first place
    return {"rank": rank, "first": (firsts / resamples).tolist()}


def significance_mark(p: float) -> str:
    if not p == p:  # NaN
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
