"""Trained results: the folder ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>`` of one trainer x plans
x configuration, its replicates, the state of its folds, and which folder a ``-tr`` names.

Every command that reads trained results (compare, analyze, export, info, sweep, the demo) finds them here, so a
variant's label and "a fold is done" mean the same everywhere.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import did_you_mean
from ..core.files import read_json
from .datasets import ResultsError, dataset_id, read_dataset_json, require_folder
from .splits import SPLIT_RECORD, dataset_splits, split_clashes, validation_keys
from .trained_plans import FINAL_CHECKPOINT, fold_trained_plans, new_plans_fix, plans_differences

DEFAULT_PLANS = "nnUNetPlans"


def results_folder(name: str, trainer: str, plans: str, configuration: str, root: str | os.PathLike | None = None) -> Path:
    """``<nnUNet_results>/<dataset>/<trainer>__<plans>__<configuration>`` (nnU-Net's own naming)."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
    base = Path(root) if root is not None else require_folder("nnUNet_results")
    return base / name / convert_trainer_plans_config_to_identifier(trainer, plans, configuration)


REPLICATES_FOLDER = "replicates"


def replicate_root(root: str | os.PathLike, replicate: int) -> Path:
    """The nnUNet_results root of one training replicate. Replicate 1 is ``nnUNet_results`` itself (so a single
    training, and every results folder of before replicates, is replicate 1); replicate r >= 2 is
    ``<nnUNet_results>/replicates/<r>``, a complete results root of its own: stock ``nnUNetv2_train``,
    ``nnUNetv2_predict`` and ``nnUNetv2_find_best_configuration`` use it with ``nnUNet_results`` set to it, and
    nnU-Net's dataset lookup skips the folder (its name does not start with ``Dataset``)."""
    return Path(root) if int(replicate) == 1 else Path(root) / REPLICATES_FOLDER / str(int(replicate))


def replicate_prefix(replicate: int) -> str:
    """What a user puts before a stock nnU-Net command to run it in replicate ``replicate``'s results root."""
    return f'nnUNet_results="$nnUNet_results/{REPLICATES_FOLDER}/{replicate}" ' if replicate > 1 else ""


def found_replicates(root: str | os.PathLike, name: str, identifier: str) -> list[int]:
    """The replicates 1, 2, ... that hold a results folder ``<dataset>/<identifier>`` (stopping at the first gap)."""
    found, r = [], 1
    while (replicate_root(root, r) / name / identifier).is_dir():
        found.append(r)
        r += 1
    return found


@dataclass(frozen=True)
class FoldState:
    """``missing`` (no fold folder), ``unfinished`` (no final checkpoint), ``unvalidated`` (nnU-Net's final
    validation did not finish: no summary.json, or cases of the split without a prediction), or ``done``."""

    status: str
    missing_cases: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def validation_gap(self) -> str:
        """What an ``unvalidated`` fold's final validation lacks, for messages."""
        if not self.missing_cases:
            return "it has no validation/summary.json"
        shown = ", ".join(self.missing_cases[:5]) + (" ..." if len(self.missing_cases) > 5 else "")
        return f"its validation lacks {len(self.missing_cases)} case(s) of the split ({shown})"


@dataclass(frozen=True)
class TrainedResults:
    """One results folder: a trainer trained with a plans name on one configuration of a dataset."""

    dataset: str
    trainer: str
    plans: str
    configuration: str
    folder: Path
    replicate: int = 1  # which training replicate (its results root: :func:`replicate_root`)

    @property
    def label(self) -> str:
        """How reports name the variant: the trainer, with ``__PLANS`` unless the plans are nnU-Net's default."""
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer}__{self.plans}"

    def fold_folder(self, fold) -> Path:
        return self.folder / f"fold_{fold}"

    def checkpoint(self, fold, name: str = FINAL_CHECKPOINT) -> Path:
        return self.fold_folder(fold) / name

    def train_command(self, fold, extra: str = "") -> str:
        plans = "" if self.plans == DEFAULT_PLANS else f" -p {self.plans}"
        return (f"{replicate_prefix(self.replicate)}nnUNetv2_train {dataset_id(self.dataset)} {self.configuration} {fold} -tr {self.trainer}{plans}"
                f"{extra}")

    @functools.cached_property
    def plans_json(self) -> dict:
        plans = read_json(self.folder / "plans.json")
        if not isinstance(plans, dict) or self.configuration not in (plans.get("configurations") or {}):
            raise ResultsError(f"{self.folder / 'plans.json'} holds no configuration {self.configuration!r}: it is "
                               f"damaged or not nnU-Net's plans. Restore it from the checkpoint's plans (nnUNetv2_train "
                               f"... --val writes it again) or train the variant again.")
        return plans

    @functools.cached_property
    def dataset_json(self) -> dict:
        return read_dataset_json(self.folder / "dataset.json")

    def llm_spec(self):
        """The LLM spec the folder's plans.json records (None: plain nnU-Net)."""
        from ..core.resolve import spec_in_plans
        return spec_in_plans(self.plans_json, self.configuration, str(self.folder / "plans.json"))

    def fold_state(self, fold) -> FoldState:
        folder = self.fold_folder(fold)
        if not folder.is_dir():
            return FoldState("missing")
        if not (folder / FINAL_CHECKPOINT).is_file():
            return FoldState("unfinished")
        validation = folder / "validation"
        if not (validation / "summary.json").is_file():
            return FoldState("unvalidated")
        ending = self.dataset_json["file_ending"]
        missing = tuple(k for k in validation_keys(self.dataset, fold) if not (validation / f"{k}{ending}").is_file())
        return FoldState("unvalidated", missing) if missing else FoldState("done")

    def require_done(self, fold) -> None:
        """A fold to score, analyse or export must have finished training and nnU-Net's final validation, on the
        split the splits file still gives it."""
        self.require_same_split(fold)
        state = self.fold_state(fold)
        if state.status in ("missing", "unfinished"):
            what = "is missing" if state.status == "missing" else "is unfinished (no checkpoint_final.pth)"
            raise ResultsError(f"{self.label}: fold {fold} {what} in {self.folder}. Train it: "
                               f"{self.train_command(fold)}, or leave it out of -f.")
        if state.status == "unvalidated":
            raise ResultsError(f"{self.label}: fold {fold} did not finish nnU-Net's final validation "
                               f"({state.validation_gap}). Run "
                               f"{self.train_command(fold, ' --val')}.")

    def require_same_split(self, fold) -> None:
        """A fold that recorded its split (``fold_<f>/split.json``, our trainers) is scored on the cases the splits
        file gives it only while those are the cases it trained and validated on."""
        splits = dataset_splits(self.dataset) if fold != "all" else None
        clash = split_clashes(self.folder, splits, only={int(fold)}).get(int(fold)) if splits is not None else None
        if clash:
            raise ResultsError(
                f"{self.label}: fold {fold} trained on another split than {self.dataset}'s splits_final.json now gives "
                f"({clash}; see {self.fold_folder(fold) / SPLIT_RECORD}), so its validation is not of the cases the "
                f"file names. Restore the splits file it trained on, or train the fold again: "
                f"{self.train_command(fold)}.")

    def require_same_plans(self, folds: list) -> None:
        """Every fold to score or export trained with the plans in the folder's plans.json (the network prediction
        and the parameter counts build): nnU-Net overwrites that file when any fold starts, so a fold trained
        before its plans were made again no longer loads with it."""
        for fold in folds:
            found = fold_trained_plans(self.fold_folder(fold))
            if found is None:
                continue
            checkpoint, trained = found
            differences = plans_differences(trained, self.plans_json, self.configuration)
            if differences:
                raise ResultsError(
                    f"{self.label}: fold {fold} trained with other plans than {self.folder / 'plans.json'} now holds "
                    f"({differences}; from {checkpoint.name} to plans.json): the plans were made again and another "
                    f"fold trained with them, so fold {fold} no longer loads with this folder's plans and its folds "
                    f"do not form one model. {new_plans_fix(self.dataset, self.configuration, self.plans)}: "
                    f"{self.train_command(fold)}.")


def split_trainer_plans(item: str, default_plans: str) -> tuple[str, str]:
    """``TRAINER`` or ``TRAINER__PLANS`` (nnU-Net's results folder naming) -> (trainer, plans)."""
    trainer, _, plans = item.partition("__")
    if not trainer:
        raise ResultsError(f"{item!r}: expected TRAINER or TRAINER__PLANS (as nnU-Net names results folders).")
    return trainer, plans or default_plans


def trained_results(name: str, trainer: str, plans: str, configuration: str) -> TrainedResults:
    return TrainedResults(name, trainer, plans, configuration, results_folder(name, trainer, plans, configuration))


def finished_an_epoch(folder: Path) -> bool:
    """Whether a results folder holds a fold that finished at least one epoch (nnU-Net draws progress.png after
    every epoch and writes a checkpoint at the end); the folder of a training that failed at its start does not."""
    return any((fold / name).is_file() for fold in folder.glob("fold_*")
               for name in (FINAL_CHECKPOINT, "checkpoint_latest.pth", "progress.png"))


def trained_names(dataset_results: Path, configuration: str, plans: str) -> list[str]:
    """What ``-tr`` accepts for the trained results of ``configuration`` that finished an epoch: ``TRAINER`` for those
    of the ``-p`` plans, ``TRAINER__PLANS`` for the others."""
    if not dataset_results.is_dir():
        return []
    names = []
    for folder in sorted(dataset_results.glob(f"*__*__{configuration}")):
        trainer, own_plans, _ = folder.name.split("__", 2)
        if folder.is_dir() and finished_an_epoch(folder):
            names.append(trainer if own_plans == plans else f"{trainer}__{own_plans}")
    return names


def resolve_trained_results(item: str, plans: str, name: str, configuration: str) -> TrainedResults:
    """``TRAINER``, ``TRAINER__PLANS`` or a results folder path (``.../<dataset>/TRAINER__PLANS__CONFIGURATION``)
    of dataset ``name``; it must hold trained results."""
    path = Path(item).expanduser()
    if path.is_dir() and path.name.count("__") == 2:
        trainer, plans, conf = path.name.split("__")
        if conf != configuration:
            raise ResultsError(f"-tr {item}: that results folder is for configuration {conf!r}, not -c {configuration}.")
        if path.resolve().parent.name != name:
            raise ResultsError(f"-tr {item}: that results folder belongs to {path.resolve().parent.name}, not to -d "
                               f"{name}; pass a results folder of {name}, or -d {path.resolve().parent.name}.")
        variant = TrainedResults(name, trainer, plans, configuration, path.resolve())
    else:
        trainer, own_plans = split_trainer_plans(item, plans)
        variant = trained_results(name, trainer, own_plans, configuration)
    folder = variant.folder
    if not (folder / "plans.json").is_file() or not (folder / "dataset.json").is_file():
        found = trained_names(folder.parent, configuration, plans)
        raise ResultsError(f"-tr {item}: no trained results in {folder} (plans.json and dataset.json missing). "
                           f"Train it with nnUNetv2_train, or pick one of the trained results of -c {configuration} "
                           f"that finished an epoch: {', '.join(found) or 'none'}.{did_you_mean(item, found)}")
    variant.plans_json, variant.dataset_json  # read and checked now, before any work
    return variant
