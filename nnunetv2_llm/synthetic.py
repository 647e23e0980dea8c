"""Small synthetic segmentation datasets in nnU-Net raw format, for tests, demos and benchmarks.

Each case holds one or two blobs with a striped texture on a textured, noisy background whose
mean intensity overlaps the foreground's, so intensity alone does not segment it: a net has to
learn shape and texture. 2D cases are grayscale PNGs, 3D cases NIfTI volumes.

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

from .errors import UserError
from .files import honour_umask

LABELS = {"background": 0, "lesion": 1}


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


def _case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    label = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(1, 3)):
        centre = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        radii = [rng.uniform(0.1 * s, 0.22 * s) for s in shape]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
        wobble = 0.15 * np.sin(3 * np.arctan2(grids[0] - centre[0], grids[1] - centre[1]) + rng.uniform(0, 6.3))
        label[dist < 1.0 + wobble] = 1
    direction = rng.normal(size=len(shape))
    direction /= np.linalg.norm(direction)
    phase = sum(g * d for g, d in zip(grids, direction))
    stripes = np.sin(phase * rng.uniform(1.2, 1.8))
    background = 0.3 * np.sin(grids[0] * rng.uniform(0.05, 0.2) + grids[-1] * rng.uniform(0.05, 0.2))
    image = np.where(label == 1, 0.6 + 0.5 * stripes, background)
    image = image + rng.normal(0, 0.35, size=shape)
    return image.astype(np.float32), label


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
                 shift: Shift = Shift(), other_roots=()) -> Path:
    """Write ``DatasetXXX_<name>`` under ``raw_dir`` (atomically) and return its folder.

    The id must be free in ``raw_dir`` and in ``other_roots`` (e.g. the preprocessed and results folders).

    Test cases go to ``imagesTs`` with their ground truth in ``labelsTs``.
    """
    if dim not in (2, 3):
        raise SyntheticError(f"dim={dim!r}: choose 2 (PNG images) or 3 (NIfTI volumes).")
    if not 1 <= dataset_id <= 999:
        raise SyntheticError(f"dataset id {dataset_id} is out of nnU-Net's range 1..999; pick a free id such as 501.")
    if num_train < 5:
        raise SyntheticError(f"num_train={num_train}: nnU-Net's 5-fold cross-validation needs at least 5 cases.")
    size = size or (64 if dim == 2 else 32)
    name = name or f"Synth{dim}D" + ("Shifted" if shift.active else "")
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
            image, label = _case(rng, shape)
            if shift.active:
                image = shift.apply(image, shift_rng)
            case = f"synth_{i:03d}"
            _write(image, label, tmp / f"images{split}" / f"{case}_0000{ending}",
                   tmp / f"labels{split}" / f"{case}{ending}", dim)
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
        description = "nnunetv2-llm synthetic textured blobs" + (f", shifted: {shift}" if shift.active else "")
        generate_dataset_json(str(tmp), {0: "synthetic"}, LABELS, num_train, ending,
                              dataset_name=folder.name, description=description)
        honour_umask(tmp, directory=True)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
