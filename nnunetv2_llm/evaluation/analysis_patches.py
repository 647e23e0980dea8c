"""The analysis's input: one network patch per validation case, cropped from the preprocessed case around its
foreground and zero-padded where the case is smaller."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analysed_fold import AnalysisError


@dataclass
class Patch:
    """One network input patch of a case, with its ground-truth foreground."""

    identifier: str
    image: np.ndarray  # C x *patch
    mask: np.ndarray  # bool, *patch
    origin: list[int]  # patch start in the preprocessed case (negative where padded)
    slice_index: int | None  # 2d configuration: the slice of the preprocessed case


def crop_or_pad(image: np.ndarray, mask: np.ndarray, patch_size) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The patch of ``patch_size`` centred on the foreground bounding box (image centre if none), zero-padded."""
    spatial = image.shape[1:]
    fg = np.argwhere(mask)
    centre = ((fg.min(0) + fg.max(0) + 1) / 2 if len(fg) else np.array(spatial) / 2)
    starts = []
    for c, n, p in zip(centre, spatial, patch_size):
        start = int(round(c - p / 2))
        starts.append(max(0, min(start, n - p)) if n >= p else -((p - n) // 2))
    out_image = np.zeros((image.shape[0], *patch_size), dtype=np.float32)
    out_mask = np.zeros(tuple(patch_size), dtype=bool)
    src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(starts, patch_size, spatial))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, starts))
    out_image[(slice(None), *dst)] = image[(slice(None), *src)]
    out_mask[dst] = mask[src]
    return out_image, out_mask, starts


def load_cases(name: str, configuration: str, configuration_manager, keys: list[str]) -> list[Patch]:
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = Path(nnUNet_preprocessed.require()) / name / configuration_manager.data_identifier
    if not folder.is_dir():
        raise AnalysisError(f"preprocessed data {folder} is missing: run nnUNetv2_plan_and_preprocess "
                            f"-d {name} -c {configuration}.")
    dataset = infer_dataset_class(str(folder))(str(folder), identifiers=list(keys))
    patch = [int(p) for p in configuration_manager.patch_size]
    cases = []
    for key in keys:
        data, seg, _, _ = dataset.load_case(key)
        data, fg = np.asarray(data[:], dtype=np.float32), np.asarray(seg[:])[0] > 0
        slice_index = None
        if len(patch) == 2:  # 2d configuration: data are C x Z x Y x X with Z slices
            slice_index = int(np.argmax(fg.reshape(fg.shape[0], -1).sum(1)))
            data, fg = data[:, slice_index], fg[slice_index]
        image, mask, origin = crop_or_pad(data, fg, patch)
        cases.append(Patch(key, image, mask, origin, slice_index))
    return cases
