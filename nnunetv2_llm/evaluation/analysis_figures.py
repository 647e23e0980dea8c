"""The feature analysis's figures: per case the image with its activation maps (one row per analysed fold), and
the distributions of effective rank, LSVR and concentration IoU over the cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import atomic_path
from .analysis_patches import Patch


def _display_slice(case: Patch) -> tuple[int, ...] | None:
    """For 3D patches the slice (first axis) with the most foreground; None for 2D."""
    if case.mask.ndim == 2:
        return None
    return (int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1))),)


def save_case_figure(path: Path, case_id: str, rows: list[tuple[str, Patch, np.ndarray, np.ndarray | None]],
                     threshold: float, metrics: list[dict]) -> None:
    """One row per analysed fold: image with ground-truth contour, Act. Before overlay, Act. After overlay."""
    from matplotlib.figure import Figure

    from .plotting import wrap_name
    fig = Figure(figsize=(9, 3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for (label, case, before, after), m, ax_row in zip(rows, metrics, axes):
        idx = _display_slice(case) or ()
        image, mask = case.image[0][idx], case.mask[idx]
        where = f" (slice {idx[0]} of {case.mask.shape[0]})" if idx else ""
        panels = [("image + ground truth" + where, None, None),
                  ("Act. Before", before, m["iou_before"]), ("Act. After", after, m["iou_after"])]
        for ax, (title, amap, iou) in zip(ax_row, panels):
            ax.imshow(image, cmap="gray")
            if amap is not None:
                im = ax.imshow(amap[idx], cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.contour(amap[idx] >= threshold, levels=[0.5], colors="white", linewidths=0.8,
                           linestyles="dashed")
                title += f"\nIoU@{threshold:g} = {iou:.3f}"
            elif title.startswith("Act."):
                title += "\n(no LLM block)"
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(wrap_name(label, 40), fontsize=7)
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, label="activation (min-max)")
    fig.suptitle(f"{case_id}: green = ground truth, dashed = activation >= {threshold:g}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def save_distributions(path: Path, runs: list[dict], threshold: float) -> None:
    """ER and LSVR violins with per-case dots and the mean (red), and mean concentration IoU bars per analysed fold."""
    from matplotlib.figure import Figure

    from .plotting import wrap_title, wrapped
    labels, rows = wrapped([r["label"] for r in runs], 34), np.arange(len(runs))
    height = max(0.8 + 0.5 * len(runs), 0.5 + 0.32 * sum(label.count("\n") + 1 for label in labels))
    fig = Figure(figsize=(8, 1.8 + 3 * height), layout="constrained")
    ax_er, ax_lsvr, ax_iou = fig.subplots(3, 1)
    for ax, metric, title, xlabel in (
            (ax_er, "effective_rank", "Effective rank (ER, channel-wise SVD) of the decoder input",
             "effective rank (number of directions), higher = more dimensions used"),
            (ax_lsvr, "lsvr", "LSVR = -ln(s1 / sum s) of the decoder input",
             "LSVR, higher = the largest direction s1 dominates less")):
        data = [[c[metric] for c in r["cases"].values() if c[metric] is not None] for r in runs]
        filled = [i for i, d in enumerate(data) if d]
        if filled:
            ax.violinplot([data[i] for i in filled], positions=filled, orientation="horizontal", showextrema=False)
        for i in filled:
            mean = float(np.mean(data[i]))
            ax.scatter(data[i], np.full(len(data[i]), i), s=8, color="k", alpha=0.6, zorder=3)
            ax.plot([mean, mean], [i - 0.35, i + 0.35], color="red", lw=2, zorder=4)
            ax.annotate(f"mean {mean:.3f}", (mean, i - 0.38), fontsize=7, color="red", ha="center", va="bottom")
        ax.set_title(wrap_title(title, 60), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    height = 0.38
    for shift, key, shade, name in ((-height / 2, "iou_before", "tab:blue", "Act. Before"),
                                    (height / 2, "iou_after", "lightblue", "Act. After")):
        means = [r["mean"][key] for r in runs]
        present = [i for i, v in enumerate(means) if v is not None]
        ax_iou.barh([i + shift for i in present], [means[i] for i in present], height, color=shade,
                    edgecolor="k", label=name)
        for i in present:
            ax_iou.text(means[i] + 0.01, i + shift, f"{means[i]:.3f}", va="center", fontsize=7)
    ax_iou.set_xlim(0, 1.1)
    ax_iou.set_title(wrap_title(f"Mean concentration IoU of activation >= {threshold:g} with the ground truth", 60),
                     fontsize=9)
    ax_iou.set_xlabel("concentration IoU (0-1), higher = activation more on the object", fontsize=8)
    ax_iou.legend(fontsize=7, loc="lower right")
    for ax in (ax_er, ax_lsvr, ax_iou):
        ax.set_yticks(rows, labels, fontsize=8)
        ax.set_ylim(len(runs) - 0.5, -0.5)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
