"""Small synthetic segmentation datasets in nnU-Net raw format, for tests, demos and benchmarks.

Each case holds one or two blobs with a striped texture on a textured, noisy background whose
mean intensity overlaps the foreground's, so intensity alone does not segment it: a net has to
learn shape and texture. 2D cases are grayscale PNGs, 3D cases NIfTI volumes.

Two tasks: "blobs" (the label follows from local texture) and "context" (objects of identical
appearance are class a or b depending on a small cue far away in the image; see :func:`context_case`),
so a benchmark can reward global mixing at the bottleneck, or show that it is absent.

A domain shift (``Shift``: contrast, extra noise, intensity scale) changes only how the cases look:
the same seed gives the same shapes and labels, so a shifted copy is a zero-shot test set for
models trained on the unshifted one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dataclasses import dataclass

import numpy as np

from ..core.errors import UserError
from ..core.files import honour_umask

TASKS = {  # task -> labels
    "blobs": {"background": 0, "lesion": 1},
    "context": {"background": 0, "class_a": 1, "class_b": 2},
}


class SyntheticError(UserError, ValueError):
    """A synthetic dataset cannot be written as asked; the message names the value and the fix."""


@dataclass(frozen=True)
class Shift:
    """A change of appearance: ``contrast`` scales deviations from the image mean, ``noise`` adds Gaussian
    noise of that standard deviation, ``scale`` multiplies intensities (in this order)."""

    contrast: float = 1.0
    noise: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        if not self.contrast > 0 or not self.scale > 0 or not self.noise >= 0:
            raise SyntheticError(f"domain shift {self}: contrast and scale must be > 0 and noise >= 0 "
                                 f"(no shift: contrast=1, noise=0, scale=1).")

    @property
    def active(self) -> bool:
        return self != Shift()

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = image.mean()
        image = mean + self.contrast * (image - mean)
        if self.noise:
            image = image + rng.normal(0, self.noise, size=image.shape)
        return (self.scale * image).astype(np.float32)


def _objects(rng: np.random.Generator, grids, shape) -> np.ndarray:
    """One or two wobbly ellipsoids (bool mask)."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 3)):
        centre = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        radii = [rng.uniform(0.1 * s, 0.22 * s) for s in shape]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
        wobble = 0.15 * np.sin(3 * np.arctan2(grids[0] - centre[0], grids[1] - centre[1]) + rng.uniform(0, 6.3))
        mask[dist < 1.0 + wobble] = True
    return mask


def _appearance(rng: np.random.Generator, grids, mask: np.ndarray) -> np.ndarray:
    """Striped objects on a textured, noisy background of overlapping mean intensity."""
    direction = rng.normal(size=len(grids))
    direction /= np.linalg.norm(direction)
    phase = sum(g * d for g, d in zip(grids, direction))
    stripes = np.sin(phase * rng.uniform(1.2, 1.8))
    background = 0.3 * np.sin(grids[0] * rng.uniform(0.05, 0.2) + grids[-1] * rng.uniform(0.05, 0.2))
    image = np.where(mask, 0.6 + 0.5 * stripes, background)
    return image + rng.normal(0, 0.35, size=mask.shape)


def _case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The "blobs" task: every object pixel is label 1; its texture alone tells it from the background."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    mask = _objects(rng, grids, shape)
    return _appearance(rng, grids, mask).astype(np.float32), mask.astype(np.uint8)


CUE_INTENSITY = 1.8


def context_case(rng: np.random.Generator, shape: tuple[int, ...], cue_class: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "context" task: objects look exactly as in "blobs", but their label (1 or 2) is set by a small cue
    far away: a solid bright disk/ball means class 1, a bright ring/shell of the same size class 2. The cue
    is background and lies at least 30% of the image's edge length from every object, so no neighbourhood
    of an object tells its class: a net has to carry the cue across the image. Returns image, label, cue mask.

    ``cue_class`` forces the class (tests); the random draws for the objects and their texture do not
    depend on it, so the same seed gives the same objects and image outside the cue for either class."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    radius = max(3.0, 0.08 * min(shape))
    min_distance = 0.3 * min(shape)
    while True:
        mask = _objects(rng, grids, shape)
        image = _appearance(rng, grids, mask)
        drawn_class = int(rng.integers(1, 3))
        object_points = np.argwhere(mask)
        candidates = np.stack(np.meshgrid(*[np.arange(int(radius) + 1, s - int(radius) - 1) for s in shape],
                                          indexing="ij"), axis=-1).reshape(-1, len(shape))
        far = [c for c in candidates[rng.permutation(len(candidates))[:400]]
               if np.sqrt(((object_points - c) ** 2).sum(1)).min() - radius >= min_distance]
        if far:
            break
    cls = drawn_class if cue_class is None else cue_class
    centre = far[0]
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    cue = dist <= radius if cls == 1 else (dist <= radius) & (dist >= radius - 1.0)
    image = np.where(cue, CUE_INTENSITY, image)
    return image.astype(np.float32), (mask * cls).astype(np.uint8), cue


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip((image + 1.5) / 3.5 * 255, 0, 255).astype(np.uint8)


def _write(image: np.ndarray, label: np.ndarray | None, img_path: Path, seg_path: Path | None, dim: int):
    if dim == 2:
        from PIL import Image
        Image.fromarray(_to_uint8(image)).save(img_path)
        if label is not None:
            Image.fromarray(label).save(seg_path)
    else:
        import SimpleITK as sitk
        sitk.WriteImage(sitk.GetImageFromArray(image), str(img_path))
        if label is not None:
            sitk.WriteImage(sitk.GetImageFromArray(label), str(seg_path))


def taken_dataset_folders(dataset_id: int, roots) -> list[Path]:
    """Folders under ``roots`` (nnU-Net's raw, preprocessed, results folders) that already use ``dataset_id``."""
    return sorted(p for root in map(Path, roots) if root.is_dir() for p in root.glob(f"Dataset{dataset_id:03d}_*"))


def make_dataset(raw_dir: str | os.PathLike, dataset_id: int, dim: int = 2, num_train: int = 20,
                 num_test: int = 4, size: int | None = None, seed: int = 0, name: str | None = None,
                 shift: Shift = Shift(), other_roots=(), task: str = "blobs") -> Path:
    """Write ``DatasetXXX_<name>`` under ``raw_dir`` (atomically) and return its folder.

    The id must be free in ``raw_dir`` and in ``other_roots`` (e.g. the preprocessed and results folders).

    Test cases go to ``imagesTs`` with their ground truth in ``labelsTs``.
    """
    if task not in TASKS:
        raise SyntheticError(f"task {task!r} is not known; choose one of {', '.join(TASKS)}.")
    if dim not in (2, 3):
        raise SyntheticError(f"dim={dim!r}: choose 2 (PNG images) or 3 (NIfTI volumes).")
    if not 1 <= dataset_id <= 999:
        raise SyntheticError(f"dataset id {dataset_id} is out of nnU-Net's range 1..999; pick a free id such as 501.")
    if num_train < 5:
        raise SyntheticError(f"num_train={num_train}: nnU-Net's 5-fold cross-validation needs at least 5 cases.")
    size = size or (64 if dim == 2 else 32)
    name = name or f"Synth{dim}D" + ("Context" if task == "context" else "") + ("Shifted" if shift.active else "")
    folder = Path(raw_dir) / f"Dataset{dataset_id:03d}_{name}"
    taken = taken_dataset_folders(dataset_id, [raw_dir, *other_roots])
    if taken:
        raise SyntheticError(
            f"dataset id {dataset_id} is taken by {', '.join(map(str, taken))}; nnU-Net needs one name per id. "
            f"Choose another id (-d), or remove those folders.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ending = ".png" if dim == 2 else ".nii.gz"
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        rng = np.random.default_rng(seed)
        shift_rng = np.random.default_rng([seed, 1])  # shifted noise leaves the cases' own draws unchanged
        shape = (size,) * dim
        for i in range(num_train + num_test):
            split = "Tr" if i < num_train else "Ts"
            image, label = _case(rng, shape) if task == "blobs" else context_case(rng, shape)[:2]
            if shift.active:
                image = shift.apply(image, shift_rng)
            case = f"synth_{i:03d}"
            _write(image, label, tmp / f"images{split}" / f"{case}_0000{ending}",
                   tmp / f"labels{split}" / f"{case}{ending}", dim)
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
        description = {"blobs": "nnunetv2-llm synthetic textured blobs",
                       "context": "nnunetv2-llm synthetic context task: the object class is set by a distant cue "
                                  "(solid = class_a, ring = class_b)"}[task]
        description += f", shifted: {shift}" if shift.active else ""
        generate_dataset_json(str(tmp), {0: "synthetic"}, TASKS[task], num_train, ending,
                              dataset_name=folder.name, description=description)
        honour_umask(tmp, directory=True)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
