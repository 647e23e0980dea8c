"""Paired statistics over cases: bootstrap CIs, Wilcoxon signed-rank with Holm correction, effect sizes, ranks.

Tests and intervals come from scipy (``scipy.stats.wilcoxon``, ``scipy.stats.bootstrap``) and the
correction from statsmodels (``multipletests(method="holm")``); nothing here implements a distribution.
Differences are always ``variant - reference``; for a lower-is-better metric (HD95) a negative
difference is a win.
"""
from __future__ import annotations

import math

import numpy as np

TIE_TOLERANCE = 1e-12


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
    if len(d) < 2 or np.ptp(d) == 0:
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


def paired_comparison(variant: np.ndarray, reference: np.ndarray, higher_is_better: bool, seed: int,
                      resamples: int = 2000) -> dict:
    """Everything the report says about one variant against the reference on one metric (NaN pairs dropped)."""
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    keep = ~(np.isnan(v) | np.isnan(r))
    d = v[keep] - r[keep]
    if len(d) == 0:
        return {"n": 0, "mean_difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
                "rank_biserial": math.nan, "wins": 0, "ties": 0, "losses": 0}
    low, high = bootstrap_ci(d, seed, resamples)
    wins, ties, losses = win_tie_loss(d, higher_is_better)
    return {"n": int(len(d)), "mean_difference": float(d.mean()), "ci_low": low, "ci_high": high,
            "p": wilcoxon_p(d), "rank_biserial": rank_biserial(d), "wins": wins, "ties": ties, "losses": losses}


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
