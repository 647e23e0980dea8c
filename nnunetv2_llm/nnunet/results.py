"""A trained run: the results folder ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``, its folds,
checkpoints and validation, and the dataset and fold names that lead to it.

Every command that reads trained results (compare, analyze, export, info, sweep, the demo) finds them here, so a
dataset id, a fold list, a variant's label and "a fold is done" mean the same everywhere.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError, did_you_mean
from ..core.files import read_json

DEFAULT_PLANS = "nnUNetPlans"
FINAL_CHECKPOINT = "checkpoint_final.pth"
NNUNET_FOLDS = 5  # nnU-Net's default split when a dataset has no splits_final.json yet
SPLITS_FILE = "splits_final.json"  # in nnUNet_preprocessed/<dataset>/: the split of every fold nnU-Net trains
SPLIT_RECORD = "split.json"  # in fold_<f>/: the cases the fold trained and validated on


class ResultsError(UserError, ValueError):
    """A dataset, fold, variant or results folder that cannot be used; the message names it and the fix."""


# ---------------------------------------------------------------- datasets

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


# ---------------------------------------------------------------- folds

def read_splits(path: Path, fix: str = "restore it, or delete it so that nnU-Net writes its 5-fold split again "
                                        "(folds trained on it then no longer match)") -> list[dict]:
    """A splits file, checked: a list of ``{'train': [...], 'val': [...]}``; ``fix`` says what to do when it is not."""
    splits = read_json(path, fix=fix)
    if not isinstance(splits, list) or not all(isinstance(s, dict) and isinstance(s.get("train"), list)
                                               and isinstance(s.get("val"), list) for s in splits):
        raise ResultsError(f"{path} is not an nnU-Net split (a list of {{'train': [...], 'val': [...]}}); {fix}.")
    return splits


def dataset_splits(name: str) -> list[dict] | None:
    """The dataset's ``splits_final.json`` (nnU-Net writes it with the first training), or None."""
    root = os.environ.get("nnUNet_preprocessed")
    path = Path(root) / name / SPLITS_FILE if root else None
    if path is None or not path.is_file():
        return None
    return read_splits(path)


def split_clashes(results: Path, splits: list[dict], only=None) -> dict[int, str]:
    """Fold -> what differs, for the trained folds of the results folder ``results`` (those holding a checkpoint and
    a split record; ``only``: just these folds) whose recorded split the splits file no longer gives."""
    clashes = {}
    for fold_folder in sorted(results.glob("fold_*")) if results.is_dir() else []:
        fold = fold_folder.name.removeprefix("fold_")
        record_path = fold_folder / SPLIT_RECORD
        if not fold.isdigit() or (only is not None and int(fold) not in only) or not record_path.is_file() \
                or not any((fold_folder / name).is_file() for name in FOLD_CHECKPOINTS):
            continue
        record, index = read_json(record_path), int(fold)
        if index >= len(splits):
            clashes[index] = f"the file holds {len(splits)} entries, none for fold {index}"
            continue
        for key in ("train", "val"):
            moved = set(record.get(key, [])) ^ set(map(str, splits[index][key]))
            if moved:
                shown = ", ".join(sorted(moved)[:3]) + (" ..." if len(moved) > 3 else "")
                clashes[index] = f"its {key} cases differ from the file's entry {index} ({len(moved)} moved: {shown})"
                break
    return clashes


def parse_folds(values, name: str | None = None) -> list:
    """Fold names -> ``[0, 1, ..., 'all']``: integers within the dataset's splits (``splits_final.json``, else
    nnU-Net's 5), or ``all``; each at most once."""
    splits = dataset_splits(name) if name else None
    n = len(splits) if splits is not None else NNUNET_FOLDS
    where = f"{name}'s splits_final.json has {n} splits" if splits is not None else "nnU-Net's default 5-fold split"
    folds, bad = [], []
    given = [] if values is None else [values] if isinstance(values, (str, int)) else list(values)
    if not given:
        raise ResultsError(f"no folds given; name one or more in 0-{n - 1} ({where}), or 'all'.")
    for value in given:
        text = str(value).strip()
        if text == "all":
            folds.append("all")
        elif text.isdigit() and int(text) < n:
            folds.append(int(text))
        else:
            bad.append(text)
    if bad:
        raise ResultsError(f"fold(s) {bad} outside 0-{n - 1} ({where}); use folds in 0-{n - 1}, or 'all'.")
    if len(set(map(str, folds))) != len(folds):
        raise ResultsError(f"-f {' '.join(map(str, folds))}: a fold is listed twice.")
    return folds


def validation_keys(name: str, fold) -> list[str]:
    """The cases nnU-Net validates fold ``fold`` on (``all``: every training case)."""
    splits = dataset_splits(name)
    if splits is None:
        raise ResultsError(f"{name} has no splits_final.json in nnUNet_preprocessed: nnU-Net writes it when the "
                           f"first fold trains.")
    if fold == "all":
        return sorted({k for s in splits for k in s.get("train", []) + s["val"]})
    if not 0 <= int(fold) < len(splits):
        raise ResultsError(f"fold {fold} is not in {name}'s splits_final.json (folds 0..{len(splits) - 1}, or 'all').")
    return sorted(splits[int(fold)]["val"])


# ---------------------------------------------------------------- the plans a fold trained with

# The checkpoints a fold may hold, the most telling first; each carries the plans it trained with (init_args).
FOLD_CHECKPOINTS = (FINAL_CHECKPOINT, "checkpoint_latest.pth", "checkpoint_best.pth")
# Plans-wide entries that preprocessing or the network read (the rest of the plans is per configuration).
PLANS_WIDE_KEYS = ("transpose_forward", "transpose_backward", "foreground_intensity_properties_per_channel",
                   "image_reader_writer", "label_manager")


def network_plans(plans: dict, configuration: str) -> dict:
    """What of nnU-Net plans decides a configuration's network and the data it sees: the resolved configuration
    (``inherits_from`` followed) and the plans-wide entries above. The LLM entry is left out: the trainer pins it on
    its own, with the layer's sha256."""
    import copy

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..core.plans_entry import PLANS_KEY
    try:
        resolved = dict(PlansManager(copy.deepcopy(plans)).get_configuration(configuration).configuration)
    except (KeyError, TypeError, AttributeError):
        resolved = {}
    resolved.pop(PLANS_KEY, None)
    return {"configurations": {configuration: resolved}, **{k: plans.get(k) for k in PLANS_WIDE_KEYS}}


def _leaves(value, path: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{path}.{key}" if path else str(key))
                .items()}
    return {path: value}


def plans_differences(trained: dict, now: dict, configuration: str, limit: int = 4) -> str:
    """The entries where two plans give another network or other data, ``""`` when none: ``path: A -> B``."""
    a, b = _leaves(network_plans(trained, configuration)), _leaves(network_plans(now, configuration))
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "absent") != b.get(k, "absent")]
    short = lambda v: (t if len(t := str(v)) <= 100 else t[:97] + "...")  # noqa: E731
    shown = [f"{k}: {short(a.get(k, 'absent'))} -> {short(b.get(k, 'absent'))}" for k in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def checkpoint_plans(checkpoint) -> dict | None:
    """The plans a loaded nnU-Net checkpoint trained with (its trainer's ``init_args``), or None."""
    return (checkpoint.get("init_args") or {}).get("plans") if isinstance(checkpoint, dict) else None


def fold_trained_plans(fold_folder: Path) -> tuple[Path, dict] | None:
    """(checkpoint, plans) that a fold trained with: nnU-Net stores the trainer's plans in every checkpoint
    (``init_args``), while it overwrites the results folder's plans.json whenever any fold starts. None when the
    fold holds no readable checkpoint (nothing trained there that another fold could break)."""
    from ..core.errors import UserError
    from ..core.files import load_checkpoint
    for name in FOLD_CHECKPOINTS:
        path = fold_folder / name
        if not path.is_file():
            continue
        try:
            checkpoint = load_checkpoint(path, mmap=True)
        except UserError:
            continue
        plans = checkpoint_plans(checkpoint)
        if isinstance(plans, dict):
            return path, plans
    return None


def trained_plans_clashes(folder: Path, plans: dict, configuration: str, skip=None) -> dict[str, str]:
    """Fold name -> what differs, for every fold of the results folder ``folder`` (but ``skip``) that trained with
    plans giving another network or other data than ``plans``."""
    clashes = {}
    for fold_folder in sorted(folder.glob("fold_*")) if folder.is_dir() else []:
        if fold_folder.name == f"fold_{skip}" or not fold_folder.is_dir():
            continue
        found = fold_trained_plans(fold_folder)
        differences = found and plans_differences(found[1], plans, configuration)
        if differences:
            clashes[fold_folder.name.removeprefix("fold_")] = differences
    return clashes


def new_plans_fix(dataset: str, configuration: str, plans: str) -> str:
    """The ways out when plans changed under a results folder: one wording for the trainer, compare and export."""
    number = dataset_id(dataset)
    return (f"Keep new plans under a new name (nnUNetv2_plan_and_preprocess -d {number} -c {configuration} [-pl "
            f"PLANNER] -overwrite_plans_name NEW_NAME, or `nnunetv2-llm plan -o NEW_NAME`; then train with -p "
            f"NEW_NAME), or retrain every fold of the folder with the current plans {plans!r}")


# ---------------------------------------------------------------- trained variants

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
class TrainedRun:
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


def trained_run(name: str, trainer: str, plans: str, configuration: str) -> TrainedRun:
    return TrainedRun(name, trainer, plans, configuration, results_folder(name, trainer, plans, configuration))


def finished_an_epoch(folder: Path) -> bool:
    """Whether a results folder holds a fold that finished at least one epoch (nnU-Net draws progress.png after
    every epoch and writes a checkpoint at the end); the folder of a run that failed at its start does not."""
    return any((fold / name).is_file() for fold in folder.glob("fold_*")
               for name in (FINAL_CHECKPOINT, "checkpoint_latest.pth", "progress.png"))


def trained_names(dataset_results: Path, configuration: str, plans: str) -> list[str]:
    """What ``-tr`` accepts for the runs of ``configuration`` that finished an epoch: ``TRAINER`` for runs of the
    ``-p`` plans, ``TRAINER__PLANS`` for the others."""
    if not dataset_results.is_dir():
        return []
    names = []
    for folder in sorted(dataset_results.glob(f"*__*__{configuration}")):
        trainer, own_plans, _ = folder.name.split("__", 2)
        if folder.is_dir() and finished_an_epoch(folder):
            names.append(trainer if own_plans == plans else f"{trainer}__{own_plans}")
    return names


def resolve_run(item: str, plans: str, name: str, configuration: str) -> TrainedRun:
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
        variant = TrainedRun(name, trainer, plans, configuration, path.resolve())
    else:
        trainer, own_plans = split_trainer_plans(item, plans)
        variant = trained_run(name, trainer, own_plans, configuration)
    folder = variant.folder
    if not (folder / "plans.json").is_file() or not (folder / "dataset.json").is_file():
        found = trained_names(folder.parent, configuration, plans)
        raise ResultsError(f"-tr {item}: no trained results in {folder} (plans.json and dataset.json missing). "
                           f"Train it with nnUNetv2_train, or pick one of the runs of -c {configuration} that "
                           f"finished an epoch: {', '.join(found) or 'none'}.{did_you_mean(item, found)}")
    variant.plans_json, variant.dataset_json  # read and checked now, before any work
    return variant
