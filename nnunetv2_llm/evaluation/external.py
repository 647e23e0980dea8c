"""Zero-shot and held-out sets for compare: labelled images the models never trained on, predicted by each variant
with the stock ``nnUNetv2_predict`` (ensemble of the requested folds), once, and cached in the report folder.

Every image and label file is checked before anything is predicted (channels, inside the files too; a label file
per image pair; shapes; spacing, origin and direction; label values). A cached prediction is trusted only when its
marker, written last, lists cases that all exist and checkpoints that have not changed since; a prediction runs into
a folder of its own, renamed into place when complete, so a killed or concurrent run leaves nothing that a rerun
would trust.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.files import read_json, write_json
from ..nnunet.image_names import CHANNEL
from ..nnunet.environment import run_nnunet
from ..nnunet.results import TrainedResults
from .cases import VALIDATION_SETS, Case, CompareError
from .labels import LabelRule

MARKER = ".nnunetv2-llm-prediction.json"
# The kinds of set: the training distribution, or a shifted one; and the flag that names each.
FLAGS = {"held-out": "--held-out", "zero-shot": "--external"}


@dataclass(frozen=True)
class External:
    name: str
    images: Path
    labels: Path
    kind: str = "zero-shot"

    @property
    def flag(self) -> str:
        return FLAGS[self.kind]


def parse_external(item: str, dataset_json: dict, kind: str = "zero-shot") -> External:
    """``NAME=FOLDER``: a raw dataset (imagesTs+labelsTs, else imagesTr+labelsTr) or a folder holding those."""
    ending, flag = dataset_json["file_ending"], FLAGS[kind]
    name, sep, folder = item.partition("=")
    if not sep or not name or not folder:
        raise CompareError(f"{flag} {item!r}: write NAME=FOLDER, e.g. {flag} shifted=/data/Dataset601_X.")
    if name in VALIDATION_SETS or not all(c.isalnum() or c in "-_." for c in name):
        raise CompareError(f"{flag} {item!r}: NAME must use letters, digits, '-', '_', '.' and not be "
                           f"{' or '.join(map(repr, VALIDATION_SETS))}.")
    root = Path(folder).expanduser().resolve()
    pairs = [(root / f"images{s}", root / f"labels{s}") for s in ("Ts", "Tr")]
    found = next(((i, lab) for i, lab in pairs if i.is_dir() and lab.is_dir()), None)
    if found is None:
        raise CompareError(f"{flag} {name}={folder}: no imagesTs+labelsTs (or imagesTr+labelsTr) folders in "
                           f"{root}. Point it at an nnU-Net raw dataset or a folder holding those two folders.")
    own = root / "dataset.json"
    if own.is_file():
        ext_json = read_json(own)
        if not isinstance(ext_json, dict) or ext_json.get("labels") != dataset_json["labels"]:
            labels = ext_json.get("labels") if isinstance(ext_json, dict) else ext_json
            raise CompareError(f"{flag} {name}: its dataset.json labels {labels} differ from the models' labels "
                               f"{dataset_json['labels']}; a {kind} set needs the same labels.")
        if ext_json.get("file_ending", ending) != ending:
            raise CompareError(f"{flag} {name}: files end in {ext_json['file_ending']!r}, the models were "
                               f"trained on {ending!r}; convert the images first.")
    if not list(found[1].glob(f"*{ending}")):
        raise CompareError(f"{flag} {name}: {found[1]} holds no label files ending in {ending!r}.")
    return External(name, *found, kind=kind)


def check_external(ext: External, dataset_json: dict, rule: LabelRule, reader_writer) -> list[str]:
    """Before any prediction: every label file has its image with the model's channels (files and the channels inside
    them), of the same shape and geometry (spacing, origin, direction), and holds only the dataset's label values.
    Returns the case names."""
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    channels: dict[str, list[int]] = {}
    for image in sorted(ext.images.glob(f"*{ending}")):
        match = CHANNEL.match(image.name[: -len(ending)])
        if match is None:
            raise CompareError(f"{ext.flag} {ext.name}: {image.name} is not named CASE_XXXX{ending} (nnU-Net's "
                               f"naming of channel files); rename it.")
        channels.setdefault(match["case"], []).append(int(match["channel"]))
    cases = sorted(p.name[: -len(ending)] for p in ext.labels.glob(f"*{ending}"))
    expected = list(range(n_channels))
    for case in cases:
        given = sorted(channels.get(case, []))
        if not given:
            raise CompareError(f"{ext.flag} {ext.name}: the label {case}{ending} has no image "
                               f"({ext.images}/{case}_0000{ending}); every label file needs its image.")
        if given != expected:
            raise CompareError(
                f"{ext.flag} {ext.name}: case {case} has {len(given)} channel file(s) "
                f"({', '.join(f'_{c:04d}' for c in given)}), the model takes {n_channels} "
                f"({', '.join(f'_{c:04d}' for c in expected)}: {', '.join(dataset_json['channel_names'].values())}). "
                f"Give each case exactly the model's channels.")
        files = [ext.images / f"{case}_{c:04d}{ending}" for c in expected]
        image, image_props = _read(reader_writer.read_images, [str(f) for f in files], ext, case)
        seg, seg_props = _read(reader_writer.read_seg, str(ext.labels / f"{case}{ending}"), ext, case)
        _check_channels(ext, case, ending, dataset_json, files, image, seg, reader_writer)
        if seg.shape[1:] != image.shape[1:]:
            raise CompareError(f"{ext.flag} {ext.name}: the label {case}{ending} has shape {seg.shape[1:]}, its "
                               f"image {image.shape[1:]}; every label must cover its image voxel for voxel.")
        mismatch = geometry_mismatch(image_props, seg_props)
        if mismatch is not None:
            what, of_image, of_label = mismatch
            raise CompareError(
                f"{ext.flag} {ext.name}: the label {case}{ending} has {what} {of_label}, its image {of_image} (beyond "
                f"nnU-Net's tolerance, np.allclose, as its integrity check compares them): the label is not on its "
                f"image's grid, so its scores (and mm distances) would be wrong. Resample the label onto its image, or "
                f"copy the image's geometry into it if the voxels already match (SimpleITK: "
                f"label.CopyInformation(image)).")
        extra = sorted(set(np.unique(seg).astype(int).tolist()) - set(rule.values) - {0})
        if extra:
            raise CompareError(f"{ext.flag} {ext.name}: {case}{ending} holds labels {extra} that the models do not "
                               f"know (they segment {sorted(rule.values)}); a {ext.kind} set needs the same labels.")
    return cases


def _read(read, files, ext: External, case: str):
    """nnU-Net's reader on one case; a file it cannot read is named (its own message printed to stdout is kept)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            return read(files)
    except (RuntimeError, AssertionError, ValueError, OSError, IndexError) as e:
        said = " ".join((out.getvalue() + " " + str(e)).split())[:300]
        raise CompareError(f"{ext.flag} {ext.name}: nnU-Net's reader cannot read case {case} ({files}): "
                           f"{type(e).__name__}{': ' + said if said else ''}. Fix or convert the file(s).") from None


def _check_channels(ext: External, case: str, ending: str, dataset_json: dict, files: list[Path], image, seg,
                    reader_writer) -> None:
    """Channels inside the files, not only the files' names: an RGB PNG is three channels in one file."""
    n_channels = len(dataset_json["channel_names"])
    if image.shape[0] != n_channels:
        per_file = {f.name: _read(reader_writer.read_images, [str(f)], ext, case)[0].shape[0] for f in files}
        inside = ", ".join(f"{name}: {n}" for name, n in per_file.items())
        raise CompareError(
            f"{ext.flag} {ext.name}: case {case}'s image holds {image.shape[0]} channels ({inside}; an RGB(A) file "
            f"holds 3 or 4), the model takes {n_channels} ({', '.join(dataset_json['channel_names'].values())}), one "
            f"per file CASE_XXXX{ending}. Convert each file to a single channel (e.g. grayscale), or give each "
            f"channel a file of its own.")
    if seg.shape[0] != 1:
        raise CompareError(f"{ext.flag} {ext.name}: the label {case}{ending} holds {seg.shape[0]} channels (an RGB(A) "
                           f"file?); a label is one channel of label values. Save it as a single-channel image.")


def geometry_mismatch(image_props: dict, seg_props: dict) -> tuple[str, object, object] | None:
    """(what, image's, label's) for the first of spacing, origin and direction (SimpleITK) or the affine (NIfTI)
    where a label differs from its image beyond nnU-Net's tolerance (``np.allclose``, as
    ``verify_dataset_integrity.check_cases`` compares them), else None."""
    pairs = [("spacing", image_props.get("spacing"), seg_props.get("spacing"))]  # nnU-Net's (array) axis order
    if "sitk_stuff" in image_props and "sitk_stuff" in seg_props:  # the file's own order, as the user knows it
        pairs = [("spacing", image_props["sitk_stuff"].get("spacing"), seg_props["sitk_stuff"].get("spacing"))]
    for stuff, keys in (("sitk_stuff", ("origin", "direction")), ("nibabel_stuff", ("original_affine",))):
        if stuff in image_props and stuff in seg_props:
            pairs += [(k, image_props[stuff].get(k), seg_props[stuff].get(k)) for k in keys]
    for what, of_image, of_label in pairs:
        if of_image is None or of_label is None:
            continue
        a, b = np.asarray(of_image, dtype=float), np.asarray(of_label, dtype=float)
        if a.shape != b.shape or not np.allclose(a, b):
            return what, tuple(np.round(a, 6).ravel().tolist()), tuple(np.round(b, 6).ravel().tolist())
    return None


def checkpoint_stamp(variant: TrainedResults, folds: list) -> list:
    return [[str(f), variant.checkpoint(f).stat().st_mtime_ns] for f in folds]


def cached_prediction(out: Path, stamp: dict, ending: str) -> dict | None:
    """The marker of ``out`` when it holds a complete prediction for ``stamp`` (the marker matches and every case it
    lists is there), else None. The marker also records how long the prediction took."""
    marker = out / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(recorded, dict) or {k: recorded.get(k) for k in stamp} != stamp:
        return None
    return recorded if all((out / f"{c}{ending}").is_file() for c in stamp["cases"]) else None


@dataclass(frozen=True)
class Predicted:
    folder: Path
    seconds_per_case: float | None  # wall time of nnUNetv2_predict (its start-up included) per image it predicted


def predict_external(variant: TrainedResults, ext: External, cases: list[str], folds: list, out_root: Path,
                     device: str, echo) -> Predicted:
    """The variant's ensemble prediction of ``ext`` with the stock ``nnUNetv2_predict``, run once, timed and cached.
    The caller holds the report folder's lock, so folders named ``.*.partial`` here are a killed run's: removed."""
    ending = variant.dataset_json["file_ending"]
    out = out_root / "external" / ext.name / variant.label
    stamp = {"folds": checkpoint_stamp(variant, folds), "images": str(ext.images), "cases": cases}
    cached = cached_prediction(out, stamp, ending)
    if cached is not None:
        echo(f"reusing {variant.label}'s predictions of {ext.name} ({out})")
        return Predicted(out, cached.get("seconds_per_case"))
    for stale in out.parent.glob(f".{variant.label}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = out.with_name(f".{variant.label}.{uuid.uuid4().hex[:12]}.partial")
    args = ["-i", ext.images, "-o", partial, "-d", variant.dataset, "-c", variant.configuration, "-tr",
            variant.trainer, "-p", variant.plans, "-f", *folds, "-device", device, "--disable_progress_bar"]
    if device == "cpu":
        args += ["-npp", "0", "-nps", "0"]
    echo(f"predicting {ext.name} with {variant.label} (folds {' '.join(map(str, folds))}) ...")
    try:
        start = time.perf_counter()
        proc = run_nnunet("nnUNetv2_predict", args, device=device)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise CompareError(f"nnUNetv2_predict for {variant.label} on {ext.name} failed (exit {proc.returncode}):\n"
                               + (proc.stdout + proc.stderr)[-3000:])
        absent = [c for c in cases if not (partial / f"{c}{ending}").is_file()]
        if absent:
            raise CompareError(f"nnUNetv2_predict for {variant.label} on {ext.name} wrote no prediction for "
                               f"{', '.join(absent[:5])}; see its output above, or predict again.")
        predicted = len(list(partial.glob(f"*{ending}")))
        per_case = seconds / predicted
        # last: a marker means every prediction it lists is complete
        write_json(partial / MARKER, {**stamp, "seconds": round(seconds, 3), "seconds_per_case": round(per_case, 4),
                                      "device": device})
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Predicted(out, per_case)


def external_cases(ext: External, predictions: Path, cases: list[str], ending: str) -> dict[str, Case]:
    return {c: Case(c, ext.labels / f"{c}{ending}", predictions / f"{c}{ending}", "ensemble") for c in cases}
