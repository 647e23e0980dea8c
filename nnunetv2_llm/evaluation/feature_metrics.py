"""The numbers the feature analysis computes from a feature map: the activation map and its concentration IoU with
the ground truth, and the spectrum metrics (effective rank, LSVR) of the decoder input. Pure numpy (torch only to
upsample); the definitions are in :mod:`.analysis`."""
from __future__ import annotations

import math

import numpy as np

from .feature_probe import Features

THRESHOLD = 0.4
FEATURE_METRICS = ("iou_before", "iou_after", "effective_rank", "lsvr", "effective_rank_matrix", "lsvr_matrix")


def activation_map(features, size: tuple[int, ...]) -> np.ndarray:
    """Channel-mean of |features| (C x *spatial), upsampled to ``size`` and min-max normalised to [0, 1]."""
    import torch
    import torch.nn.functional as F
    t = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if t.ndim not in (3, 4):
        raise ValueError(f"features must be C x H x W or C x D x H x W, got shape {tuple(t.shape)}")
    mean_abs = t.abs().mean(0)[None, None]
    mode = "bilinear" if mean_abs.ndim == 4 else "trilinear"
    up = F.interpolate(mean_abs, size=tuple(int(s) for s in size), mode=mode, align_corners=False)[0, 0]
    up = up.double().numpy()
    lo, hi = up.min(), up.max()
    return np.zeros_like(up) if hi - lo <= 0 else (up - lo) / (hi - lo)


def concentration_iou(act_map: np.ndarray, mask: np.ndarray, threshold: float = THRESHOLD) -> float:
    """IoU of the highlighted region ``act_map >= threshold`` with the ground-truth foreground ``mask``."""
    act_map, mask = np.asarray(act_map), np.asarray(mask, dtype=bool)
    if act_map.shape != mask.shape:
        raise ValueError(f"activation map {act_map.shape} and mask {mask.shape} differ in shape")
    highlighted = act_map >= threshold
    union = np.logical_or(highlighted, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(highlighted, mask).sum() / union)


def channel_spectra(features) -> np.ndarray:
    """The paper's channel-wise SVD: one row of singular values per channel's H x W map (3D: per D slice too)."""
    maps = np.asarray(features, dtype=np.float64)
    return np.linalg.svd(maps.reshape(-1, *maps.shape[-2:]), compute_uv=False)


def mean_over_spectra(metric, spectra: np.ndarray) -> float:
    """A spectrum metric averaged over the channel maps; all-zero maps (NaN) are left out."""
    values = [v for v in (metric(sv) for sv in spectra) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def singular_values(features) -> np.ndarray:
    """Singular values of the C x N matrix of a C x *spatial feature map, in float64, descending."""
    matrix = np.asarray(features, dtype=np.float64)
    return np.linalg.svd(matrix.reshape(matrix.shape[0], -1), compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p = s / sum(s); NaN for an all-zero spectrum."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum()
    if total <= 0:
        return math.nan
    p = sv[sv > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def lsvr(sv: np.ndarray) -> float:
    """Largest singular value ratio on a negative log scale, -ln(s_1 / sum(s)); NaN for an all-zero spectrum."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum()
    return math.nan if total <= 0 else float(-np.log(sv.max() / total))


def _json_value(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def feature_metrics(features: Features, mask: np.ndarray, threshold: float) -> dict:
    size = mask.shape
    sv = singular_values(features.decoder_input)
    spectra = channel_spectra(features.decoder_input)
    before = activation_map(features.before, size)
    after = None if features.after is None else activation_map(features.after, size)
    return {
        "iou_before": concentration_iou(before, mask, threshold),
        "iou_after": None if after is None else concentration_iou(after, mask, threshold),
        "effective_rank": _json_value(mean_over_spectra(effective_rank, spectra)),
        "lsvr": _json_value(mean_over_spectra(lsvr, spectra)),
        "effective_rank_matrix": _json_value(effective_rank(sv)),
        "lsvr_matrix": _json_value(lsvr(sv)),
        "num_singular_values": int(spectra.shape[1]),
        "num_singular_values_matrix": int(len(sv)),
        "foreground_voxels": int(mask.sum()),
        "_maps": (before, after),
    }


def mean_metrics(cases: dict) -> dict:
    out = {}
    for m in FEATURE_METRICS:
        values = [c[m] for c in cases.values() if c[m] is not None]
        out[m] = float(np.mean(values)) if values else None
    return out
