"""compare's figures, per case set: per-case distributions, paired differences with their CIs, and the pairwise
significance of Dice. Every axis says its unit and which direction is better; variant names stand once per row."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .efficiency import efficiency_figure
from .metrics import HIGHER_IS_BETTER, METRICS
from .plotting import savefig, wrap_title, wrapped
from .procedure import CASE_LEVEL
from .summary import CompareReport, SetSummary

UNITS = {"Dice": "", "IoU": "", "NSD": "", "HD95": " (mm)"}
# Significance levels of the pairwise figure: (upper bound of p, label, colour).
LEVELS = ((0.001, "p < 0.001", "#08306b"), (0.01, "p < 0.01", "#2171b5"), (0.05, "p < 0.05", "#6baed6"),
          (math.inf, "not significant", "#f0f0f0"))


def axis_label(metric: str) -> str:
    return f"{metric}{UNITS[metric]}, {'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better"


def save_figures(out: Path, report: CompareReport, report_scores: dict) -> list[Path]:
    """The figures of every set; the significance matrix only with 3 or more variants (a single pair is the table's
    row)."""
    written = []
    for set_name, entry in report.sets.items():
        tag = set_name.replace("/", "_")
        written.append(distributions(out / f"distributions_{tag}.png", set_name, entry, report_scores[set_name]))
        if entry.comparisons:
            written.append(differences(out / f"differences_{tag}.png", set_name, entry, report.reference))
        if len(entry.variants) > 2:
            written.append(significance(out / f"significance_{tag}.png", set_name, entry, report.num_comparisons))
    if report.efficiency:  # a re-analysis of a cases.csv has no networks to count
        written.append(efficiency_figure(out / "efficiency.png", report, report.validation_set))
    return written


def distributions(path: Path, set_name: str, entry: SetSummary, scores: dict) -> Path:
    from matplotlib.figure import Figure
    names = list(entry.variants)
    fig = Figure(figsize=(3.2 * len(METRICS) + 2.2, 1.4 + 0.55 * len(names)), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    for ax, metric in zip(axes, METRICS):
        data = [scores[n].case_means(entry.cases, metric) for n in names]
        data = [d[~np.isnan(d)] for d in data]
        ax.boxplot(data, orientation="horizontal", showfliers=False)
        for i, d in enumerate(data, start=1):
            ax.scatter(d, np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), s=8, color="k", alpha=0.6)
        ax.set_xlabel(axis_label(metric), fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(1, len(names) + 1), wrapped(names), fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"{set_name}: per-case values ({len(entry.cases)} cases; box = quartiles, dots = cases)",
                 fontsize=10)
    return savefig(fig, path)


def differences(path: Path, set_name: str, entry: SetSummary, reference: str) -> Path:
    from matplotlib.figure import Figure
    compared = list(entry.comparisons)
    fig = Figure(figsize=(3.2 * len(METRICS) + 2.2, 1.6 + 0.55 * len(compared)), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    for ax, metric in zip(axes, METRICS):
        for i, name in enumerate(compared):
            comparison = entry.comparisons[name][metric]
            c = comparison.case
            if not math.isnan(c.ci_low):
                ax.errorbar(c.mean_difference, i, xerr=[[c.mean_difference - c.ci_low], [c.ci_high - c.mean_difference]],
                            fmt="o", color="k", capsize=3)
            else:
                ax.plot(c.mean_difference, i, "o", color="k")
            ax.annotate(f"p={comparison.p_holm:.3g}" + (" (primary)" if comparison.primary_at == CASE_LEVEL else ""),
                        (c.mean_difference, i), xytext=(0, 7), textcoords="offset points", fontsize=7, ha="center")
        ax.axvline(0, color="grey", lw=1)
        better = "right" if HIGHER_IS_BETTER[metric] else "left"
        ax.set_xlabel(f"Δ {metric}{UNITS[metric]} (variant - reference;\n{better} of 0 = better than the reference)",
                      fontsize=8)
        ax.set_title(f"Δ {metric}", fontsize=9)
        ax.set_ylim(-0.7, len(compared) - 0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(compared)), wrapped(compared), fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(wrap_title(f"{set_name}: mean paired difference to {reference} with bootstrap 95% CI; p = sign-flip "
                            f"test of the mean, Holm-corrected in its family (see report.md)",
                            int(11 * (3.2 * len(METRICS) + 2.2))), fontsize=10)
    return savefig(fig, path)


def significance(path: Path, set_name: str, entry: SetSummary, report_comparisons: int) -> Path:
    """Lower triangle of pairwise p on Dice, coloured by level, the p printed in each cell (secondary: no stars)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    names = list(entry.variants)
    n = len(names)
    matrix = np.array(entry.pairwise_dice_p_holm, dtype=float)
    colours = np.ones((n, n, 3))
    fig = Figure(figsize=(2.6 + 1.0 * n, 2.2 + 0.8 * n), layout="constrained")
    ax = fig.subplots()
    for i in range(n):
        for j in range(n):
            if j >= i:
                continue
            p = matrix[i, j]
            bound, _, colour = next(level for level in LEVELS if p < level[0])
            rgb = np.array([int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5)])
            colours[i, j] = rgb
            dark = rgb @ [0.299, 0.587, 0.114] < 0.5
            ax.text(j, i, f"{p:.3g}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.imshow(colours)
    for i in range(n):
        ax.text(i, i, "-", ha="center", va="center", fontsize=8, color="grey")
    ax.set_xticks(range(n), wrapped(names, 20), rotation=90, ha="center", fontsize=7)
    ax.set_yticks(range(n), wrapped(names), fontsize=7)
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, n), minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    pairs = n * (n - 1) // 2
    ax.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=label) for _, label, c in LEVELS],
              loc="upper right", fontsize=7, title="Holm-corrected p", title_fontsize=7, frameon=True)
    fig.suptitle(wrap_title(f"{set_name}: paired p on case Dice (sign-flip test of the mean difference), the {pairs} "
                            f"pairs of variants",
                            int(11 * (2.6 + 1.0 * n))), fontsize=10)
    ax.set_title(f"secondary: Holm over the {report_comparisons} secondary tests of the report, as in report.md\n"
                 f"(a pair with the reference shows the table's p)", fontsize=8)
    return savefig(fig, path)

