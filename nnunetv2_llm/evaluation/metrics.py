"""Per-case segmentation metrics: nnU-Net's own Dice and IoU, MONAI's HD95 and normalized surface distance.

Dice and IoU are computed with nnU-Net's ``region_or_label_to_mask`` and ``compute_tp_fp_fn_tn``, with
its formulas and its label rule (:mod:`.labels`: foreground labels or regions, the ignore label's voxels
masked out), so they equal the values in nnU-Net's ``summary.json`` for the same files. HD95 and NSD
come from ``monai.metrics`` in millimetres, from the reference image's spacing, on the same masked voxels.

Empty masks (per label), documented in docs/compare-and-statistics.md:

* reference and prediction both empty: every metric is NaN (nnU-Net's Dice convention), and the case
  is left out of that label's means and tests;
* exactly one empty: Dice = IoU = 0, NSD = 0, and HD95 = the image's diagonal in mm (the largest
  distance possible inside the image; MONAI would return inf or NaN, which no mean or test survives).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..core.errors import UserError
from .labels import LabelRule

METRICS = ("Dice", "IoU", "NSD", "HD95")
HIGHER_IS_BETTER = {"Dice": True, "IoU": True, "NSD": True, "HD95": False}
DEFAULT_TOLERANCE_MM = 1.0


def spatial(segmentation: np.ndarray, spacing) -> tuple[np.ndarray, list[float]]:
    """nnU-Net's (1, *spatial) segmentation and its spacing, without the fake axis of 2D images.

    nnU-Net reads a 2D image as (1, 1, H, W) with a spacing of 999 on the first axis."""
    seg, spacing = segmentation[0], [float(s) for s in spacing]
    if seg.ndim == 3 and seg.shape[0] == 1:
        seg, spacing = seg[0], spacing[1:]
    return seg, spacing


def surface_metrics(ref: np.ndarray, pred: np.ndarray, spacing: list[float], tolerance_mm: float) -> dict:
    """HD95 and NSD of two boolean masks (MONAI), with the empty-mask conventions of this module."""
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    if n_ref == 0 and n_pred == 0:
        return {"NSD": math.nan, "HD95": math.nan}
    if n_ref == 0 or n_pred == 0:
        diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing))))
        return {"NSD": 0.0, "HD95": diagonal}
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    y_pred, y = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation and empty-class warnings; empties are handled above
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[tolerance_mm], include_background=True,
                                   spacing=spacing)
    return {"NSD": float(nsd.item()), "HD95": float(hd95.item())}


class ShapeMismatch(UserError, ValueError):
    """A prediction and its reference differ in shape; the message names both files."""


def case_metrics(reference_file: str, prediction_file: str, reader_writer, rule: LabelRule,
                 tolerances: dict[str, float] | None) -> dict[str, dict[str, float]]:
    """``{target key: {Dice, IoU, NSD, HD95, n_ref, n_pred}}`` for one case; each file is read once. Without
    ``tolerances`` only Dice and IoU are computed."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask
    seg_ref, props = reader_writer.read_seg(reference_file)
    seg_pred, _ = reader_writer.read_seg(prediction_file)
    if seg_ref.shape != seg_pred.shape:
        raise ShapeMismatch(f"{prediction_file} has shape {seg_pred.shape[1:]}, its reference {reference_file} "
                            f"{seg_ref.shape[1:]}: they are not the same case or were resampled differently. "
                            f"Predict the reference's image again, or pair the right files.")
    ignore = seg_ref == rule.ignore_label if rule.ignore_label is not None else None
    out = {}
    for target, key in zip(rule.targets, rule.keys):
        mask_ref, mask_pred = region_or_label_to_mask(seg_ref, target), region_or_label_to_mask(seg_pred, target)
        tp, fp, fn, _ = compute_tp_fp_fn_tn(mask_ref, mask_pred, ignore)
        if ignore is not None:
            mask_ref, mask_pred = mask_ref & ~ignore, mask_pred & ~ignore
        empty = tp + fp + fn == 0
        ref, spacing = spatial(mask_ref, props["spacing"])
        pred, _ = spatial(mask_pred, props["spacing"])
        out[key] = {"Dice": math.nan if empty else 2 * tp / (2 * tp + fp + fn),
                    "IoU": math.nan if empty else tp / (tp + fp + fn),
                    **(surface_metrics(ref, pred, spacing, tolerances[key]) if tolerances is not None else {}),
                    "n_ref": int(tp + fn), "n_pred": int(tp + fp)}
    return out
