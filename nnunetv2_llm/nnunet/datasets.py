"""Dataset names and nnU-Net's folders: ``501`` or ``Dataset501_Name`` -> the dataset, the folder an nnU-Net variable
names, a dataset's preprocessed folder and its dataset.json, each refused with the fix when it cannot be used.

The modules that read splits, the plans a fold trained with and trained results folders build on this one, so that a
dataset id means the same everywhere and they share one error class.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.errors import UserError, did_you_mean
from ..core.files import read_json


class ResultsError(UserError, ValueError):
    """A dataset, fold, variant or results folder that cannot be used; the message names it and the fix."""


def _known_datasets() -> list[str]:
    names = set()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        root = os.environ.get(var)
        if root and Path(root).is_dir():
            names.update(p.name for p in Path(root).glob("Dataset*") if p.is_dir())
    return sorted(names)


def dataset_name(dataset) -> str:
    """``501``, ``"501"`` or ``"Dataset501_Name"`` -> ``"Dataset501_Name"`` by nnU-Net's own lookup (raw,
    preprocessed and results folders); anything else is refused with the datasets that exist."""
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets
    text = str(dataset).strip()
    known = _known_datasets()
    listing = f" (datasets found: {', '.join(known) or 'none'})"
    if re.fullmatch(r"Dataset\d{3}_.+", text):
        if text not in known:
            raise ResultsError(f"-d {text}: no such dataset in nnUNet_raw, nnUNet_preprocessed or nnUNet_results"
                               f"{listing}.{did_you_mean(text, known)} Pass an id or the name of one of those.")
        return text
    if not text.isdigit():
        raise ResultsError(f"-d {dataset!r} is neither a dataset id (e.g. 501) nor a dataset name (e.g. "
                           f"Dataset501_Name){listing}.{did_you_mean(text, known)}")
    candidates = list(find_candidate_datasets(int(text)))
    if len(candidates) != 1:
        what = f"several datasets have id {int(text)}: {', '.join(candidates)}" if candidates else \
            f"no dataset has id {int(text)} in nnUNet_raw, nnUNet_preprocessed or nnUNet_results{listing}"
        raise ResultsError(f"-d {dataset}: {what}. Pass an id or name of one dataset, or create it first "
                           f"(nnUNetv2_plan_and_preprocess -d {int(text)}); check the three nnU-Net folders with "
                           f"`nnunetv2-llm doctor`.")
    return str(candidates[0])


def dataset_id(name: str) -> int:
    return int(name[len("Dataset"):len("Dataset") + 3])


def require_folder(variable: str) -> Path:
    """The folder an nnU-Net variable names; unset or missing is refused with what to export."""
    value = os.environ.get(variable)
    if not value or not Path(value).is_dir():
        raise ResultsError(f"{variable}={value!r} is not a folder; export {variable} (see `nnunetv2-llm doctor`).")
    return Path(value)


def preprocessed_folder(dataset) -> Path:
    """``nnUNet_preprocessed/DatasetXXX_Name`` of a dataset id or name; it must have been planned."""
    root = require_folder("nnUNet_preprocessed")
    name = dataset_name(dataset)
    folder = root / name
    if not folder.is_dir():
        raise ResultsError(f"-d {dataset}: {name} has no preprocessed data in {root}; run "
                           f"nnUNetv2_plan_and_preprocess -d {dataset_id(name)} first.")
    return folder


def read_dataset_json(path: Path) -> dict:
    """An nnU-Net dataset.json, checked for what every reader here needs ('labels', 'file_ending', 'channel_names')."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict) or "file_ending" not in data \
            or not isinstance(data.get("channel_names", {}), dict):
        raise ResultsError(f"{path} is not an nnU-Net dataset.json (it needs a 'labels' mapping, 'file_ending' and "
                           f"'channel_names'); restore it from the raw dataset.")
    return data

