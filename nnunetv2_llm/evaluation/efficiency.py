"""Accuracy next to its cost: each variant's mean Dice (with its CI) against trainable parameters and GFLOPs of one
patch; the variants no other beats on both axes (the Pareto front) are marked. Where compare predicted held-out or
zero-shot cases, the wall time per case is listed too, but it is no cost here: one nnUNetv2_predict run per variant,
start-up and model load included, one after the other, so on a loaded machine the order decides it (benchmarks/
overhead.py times the block itself). U-Bench's U-Score is not computed: its formula is not in the material
available here."""
from __future__ import annotations

import math
from pathlib import Path

from .formatting import fmt
from .plotting import savefig, wrap_title, wrapped

# (field of a variant's Cost, axis label); lower cost is better on each. Wall time is not one (see above).
COSTS = (("trainable_M", "trainable parameters (M)"), ("gflops", "GFLOPs of one patch"))
WALL_TIME = "seconds_per_case"


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (quality, cost) points, higher quality and lower cost being better: whether each is on the Pareto front,
    i.e. no other point is at least as good on both and better on one. Points with a NaN are never on it."""
    def bad(q, c):
        return q is None or c is None or math.isnan(q) or math.isnan(c)
    out = []
    for i, (q, c) in enumerate(points):
        if bad(q, c):
            out.append(False)
            continue
        dominated = any(not bad(q2, c2) and q2 >= q and c2 <= c and (q2 > q or c2 < c)
                        for j, (q2, c2) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def efficiency_rows(report, set_name: str) -> list[dict]:
    """Per variant of one set (``report``: a :class:`CompareReport`): Dice with CI, each cost, and whether it is on
    the front for that cost; rows for the table and the figure."""
    rows = []
    for v, summary in report.sets[set_name].variants.items():
        dice, cost = summary.metrics["Dice"], report.efficiency.get(v)
        rows.append({"variant": v, "dice": dice.mean, "ci_low": dice.ci_low, "ci_high": dice.ci_high,
                     **{key: getattr(cost, key) if cost else None for key in (*dict(COSTS), WALL_TIME)}})
    for key, _ in COSTS:
        front = pareto_front([(r["dice"], r[key]) for r in rows])
        for r, on in zip(rows, front):
            r[f"front_{key}"] = on
    return rows


def efficiency_table(report, set_name: str) -> list[str]:
    rows = efficiency_rows(report, set_name)
    measured = any(r[WALL_TIME] is not None for r in rows)
    lines = [f"## Accuracy and cost ({set_name})", "",
             "Mean Dice (higher is better) with its bootstrap 95% CI over cases, against what each variant costs "
             "(lower is better). * = on the Pareto front for that cost: no other variant has at least its Dice at no "
             "more cost and is better in one of the two." + (
                 " Wall s / case: nnUNetv2_predict's wall time per held-out / zero-shot case, one run per variant, "
                 "start-up and model load included, the runs one after the other: on a loaded machine the order "
                 "decides it, so it is shown for orientation and is not part of the Pareto choice (benchmarks/"
                 "overhead.py times the block itself)." if measured else ""), "",
             "| variant | Dice [95% CI] | trainable M | GFLOPs |" + (" wall s / case |" if measured else ""),
             "|---|---|---|---|" + ("---|" if measured else "")]
    for r in rows:
        cells = [f"{fmt(r['trainable_M'], 2)}{'*' if r['front_trainable_M'] else ''}",
                 f"{fmt(r['gflops'], 2)}{'*' if r['front_gflops'] else ''}"]
        if measured:
            cells.append(fmt(r[WALL_TIME], 3))
        lines.append(f"| {r['variant']} | {fmt(r['dice'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def side_by_side(rows: list[dict], key: str, step: float = 0.02) -> list[float | None]:
    """Each row's cost, nudged sideways (by ``step`` of the axis span per neighbour) where several rows have the
    same cost, so variants of identical cost (same backbone and block size) do not hide each other's error bars."""
    values = [r[key] for r in rows if r[key] is not None]
    span = (max(values) - min(values)) or abs(values[0]) or 1.0
    out = []
    for i, r in enumerate(rows):
        if r[key] is None:
            out.append(None)
            continue
        same = [j for j, other in enumerate(rows) if other[key] == r[key]]
        out.append(r[key] + (same.index(i) - (len(same) - 1) / 2) * step * span)
    return out


def efficiency_figure(path: Path, report, set_name: str) -> Path:
    from matplotlib.figure import Figure

    rows = efficiency_rows(report, set_name)
    axes_used = [(k, label) for k, label in COSTS if any(r[k] is not None for r in rows)]
    fig = Figure(figsize=(4.6 * len(axes_used), 4.6), layout="constrained")
    axes = fig.subplots(1, len(axes_used), sharey=True, squeeze=False)[0]
    markers = "osD^v<>pP*hX"
    for ax, (key, label) in zip(axes, axes_used):
        front = [r for r in rows if r[f"front_{key}"]]
        for i, (r, x) in enumerate(zip(rows, side_by_side(rows, key))):
            if x is None:
                continue
            ax.errorbar(x, r["dice"], yerr=[[r["dice"] - r["ci_low"]], [r["ci_high"] - r["dice"]]],
                        fmt=markers[i % len(markers)], capsize=3, label=r["variant"],
                        markeredgecolor="k" if r[f"front_{key}"] else "none", markersize=8)
        if len(front) > 1:
            ordered = sorted(front, key=lambda r: r[key])
            ax.plot([r[key] for r in ordered], [r["dice"] for r in ordered], "k--", lw=0.8, label=None)
        ax.set_xlabel(f"{label}, lower is better", fontsize=8)
        ax.set_title(f"Dice vs {label.split(' (')[0]}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice with 95% CI, higher is better", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, wrapped(labels, 40), loc="outside lower center", fontsize=7, ncols=min(3, len(labels)))
    fig.suptitle(wrap_title(f"{set_name}: accuracy against cost (black edges and dashed line: the Pareto front; "
                            f"variants of equal cost drawn side by side)", int(12 * 4.6 * len(axes_used))), fontsize=10)
    return savefig(fig, path)
