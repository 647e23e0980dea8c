"""nnU-Net's splits file: the folds it holds and the cases each validates on, repeated partitions through it, and
the split each trained fold is pinned to.

nnU-Net trains fold ``f`` on entry ``f`` of ``nnUNet_preprocessed/<dataset>/splits_final.json``, whatever the
number of entries. Partition ``p`` (1, 2, ...) is entries ``5(p-1)`` to ``5p-1``: partition 1 is nnU-Net's own
5-fold split, and partition ``p >= 2`` is nnU-Net's own ``generate_crossval_split`` of the same cases with seed
``12345 + p - 1`` (nnU-Net's seed is 12345), appended after the entries already there, which stay byte-identical.
So stock ``nnUNetv2_train 501 2d 7`` trains partition 2's fold 2, while ``-f 0 1 2 3 4`` (nnU-Net's default in
predict and find_best_configuration) still means partition 1.

A fold trained by one of our trainers records the split it trained on (``fold_<f>/split.json``); a trainer refuses
to start when the splits file no longer gives a trained fold of its results folder that split, and refuses a fold
index the file does not hold (stock nnU-Net would train it on a random 80:20 split).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_path, read_json, write_json
from ..core.locks import exclusive
from .datasets import ResultsError
from .trained_plans import FOLD_CHECKPOINTS

NNUNET_FOLDS = 5  # nnU-Net's default split when a dataset has no splits_final.json yet
SPLITS_FILE = "splits_final.json"  # in nnUNet_preprocessed/<dataset>/: the split of every fold nnU-Net trains
SPLIT_RECORD = "split.json"  # in fold_<f>/: the cases the fold trained and validated on

NNUNET_SPLIT_SEED = 12345  # nnU-Net's seed for its 5-fold split (nnUNetTrainer.do_split)
MAX_PARTITIONS = 20


# ---------------------------------------------------------------- the folds of the splits file

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


# ---------------------------------------------------------------- repeated partitions

@dataclass(frozen=True)
class FoldPartition:
    """Where a fold index of the splits file sits: ``fold 7 -> partition 2, fold 2``."""

    fold: int
    partition: int  # 1, 2, ...: partition 1 is nnU-Net's own split
    fold_in_partition: int  # 0 .. 4


def fold_partitions(folds) -> list[FoldPartition]:
    """The partition and the fold within it of each fold index (``all`` is no partition's and is refused)."""
    found = []
    for fold in folds:
        if isinstance(fold, bool) or not str(fold).isdigit():
            raise ResultsError(f"fold {fold!r} belongs to no partition: only fold indices 0, 1, ... of the splits "
                               f"file do (partition p holds folds {NNUNET_FOLDS}(p-1) to {NNUNET_FOLDS}p-1).")
        index = int(fold)
        found.append(FoldPartition(index, index // NNUNET_FOLDS + 1, index % NNUNET_FOLDS))
    return found


def check_partitions(value) -> int:
    """The grid's ``partitions``: how many 5-fold partitions of the cases each fold list is trained on."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTITIONS:
        raise ResultsError(f"partitions: {value!r}: accepted are whole numbers 1..{MAX_PARTITIONS} (5-fold partitions "
                           f"of the cases; 1, nnU-Net's own split, is the default); pass e.g. --partitions 2.")
    return value


def partition_split(cases: list[str], partition: int) -> list[dict]:
    """Partition ``partition``'s 5 entries: nnU-Net's own split function, with seed 12345 + partition - 1."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    splits = generate_crossval_split(sorted(cases), seed=NNUNET_SPLIT_SEED + partition - 1, n_splits=NNUNET_FOLDS)
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits]


def _first_partition_cases(path: Path, splits: list[dict]) -> list[str]:
    """The cases of the file's first 5 entries, which must be a 5-fold partition (every case validated once)."""
    if len(splits) < NNUNET_FOLDS:
        raise ResultsError(f"{path} holds {len(splits)} split(s); partitions need a 5-fold split as its first five "
                           f"entries (nnU-Net's own, or yours). Delete the file so that nnU-Net writes its 5-fold "
                           f"split, or train without partitions.")
    first = splits[:NNUNET_FOLDS]
    cases = sorted({c for s in first for c in s["train"] + s["val"]})
    validated = sorted(c for s in first for c in s["val"])
    if validated != cases:
        raise ResultsError(f"{path}: its first five entries are not a 5-fold partition (each case must be validated "
                           f"in exactly one of them); partitions cannot be added to it. Restore nnU-Net's split, or "
                           f"train without partitions.")
    return cases


def _cases_of_dataset(folder: Path) -> list[str]:
    """The dataset's training cases, from nnU-Net's ``gt_segmentations`` (every preprocessing writes them)."""
    ending = read_json(folder / "dataset.json")["file_ending"]
    cases = sorted(p.name[:-len(ending)] for p in (folder / "gt_segmentations").glob(f"*{ending}"))
    if not cases:
        raise ResultsError(f"{folder} holds no gt_segmentations: preprocess the dataset first "
                           f"(nnUNetv2_plan_and_preprocess).")
    return cases


@dataclass(frozen=True)
class PartitionsWritten:
    """What :func:`write_partitions` found and did."""

    path: Path
    partitions: int  # the partitions the file holds now
    added: int  # entries appended (0: the file already held them)


def _appended(text: str, entries: list[dict]) -> str:
    """``text`` (a JSON list) with ``entries`` appended as nnU-Net formats its splits (indent 4, sorted keys); the
    text before the closing bracket stays as it is, byte for byte."""
    head = text.rstrip()[:-1].rstrip()  # a JSON list (read_splits checked it): the text before its "]"
    blocks = ["\n".join("    " + line for line in json.dumps(e, indent=4, sort_keys=True).splitlines())
              for e in entries]
    joined = ",\n".join(blocks)
    return f"{head},\n{joined}\n]" if head != "[" else f"[\n{joined}\n]"


def write_partitions(folder: str | os.PathLike, partitions: int, echo=print) -> PartitionsWritten:
    """Make ``folder/splits_final.json`` (a preprocessed dataset folder) hold ``partitions`` 5-fold partitions:
    nnU-Net's own split first (written as nnU-Net writes it when the file is missing), the others appended. Held
    under a lock and written atomically; planning again adds nothing, and entries already there are never changed
    (ones that differ from the rule are refused)."""
    folder = Path(folder)
    partitions = check_partitions(partitions)
    path = folder / SPLITS_FILE
    with exclusive(folder / f".{SPLITS_FILE}.lock", f"the splits file {path}", echo):
        if path.is_file():
            text = path.read_text()
            splits = read_splits(path)
        else:
            text, splits = "[]", []
        cases = _first_partition_cases(path, splits) if splits else _cases_of_dataset(folder)
        wanted = [e for p in range(1, partitions + 1) for e in
                  (splits[:NNUNET_FOLDS] if p == 1 and splits else partition_split(cases, p))]
        for index in range(NNUNET_FOLDS, min(len(splits), len(wanted))):
            have, rule = splits[index], wanted[index]
            if sorted(have["train"]) != sorted(rule["train"]) or sorted(have["val"]) != sorted(rule["val"]):
                part = fold_partitions([index])[0]
                raise ResultsError(
                    f"{path}: entry {index} is not partition {part.partition}'s fold {part.fold_in_partition} "
                    f"(nnU-Net's split of the cases with seed {NNUNET_SPLIT_SEED + part.partition - 1}): someone "
                    f"else wrote it. "
                    f"Nothing was written; remove entries {index}.. from the file (and the folds trained on them), "
                    f"or keep the partitions it holds.")
        new = wanted[len(splits):]
        if new:
            with atomic_path(path) as tmp:
                Path(tmp).write_text(_appended(text, new))
        return PartitionsWritten(path, max(len(splits), len(wanted)) // NNUNET_FOLDS, len(new))


# ---------------------------------------------------------------- the split a trained fold is pinned to

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


def record_split(fold_folder: str | os.PathLike, fold: int, train: list, val: list) -> None:
    """Write what fold ``fold`` trains and validates on into its folder (unless it is recorded already)."""
    record = {"fold": int(fold), "train": sorted(map(str, train)), "val": sorted(map(str, val))}
    path = Path(fold_folder) / SPLIT_RECORD
    if not path.is_file() or read_json(path) != record:
        write_json(path, record)


def check_fold_split(trainer: str, preprocessed: Path, results: Path, fold) -> None:
    """Refuse, before nnU-Net starts, a fold the splits file does not hold (nnU-Net would train a random 80:20
    split) and a splits file that no longer gives a trained fold of ``results`` its recorded split."""
    if fold == "all":
        return
    path = preprocessed / SPLITS_FILE
    splits = read_splits(path) if path.is_file() else None
    held = len(splits) if splits is not None else NNUNET_FOLDS  # a missing file: nnU-Net writes its 5 folds
    if int(fold) >= held:
        part = fold_partitions([fold])[0]
        what = (f"{path} holds {held} splits (folds 0-{held - 1})" if splits is not None
                else f"{preprocessed} has no {SPLITS_FILE} yet (nnU-Net writes its 5 folds, 0-4)")
        fix = (f"Fold {fold} is partition {part.partition}'s fold {part.fold_in_partition}: write the partitions "
               f"first (`nnunetv2-llm sweep plan ... --partitions {part.partition}` appends them), or pick a fold in "
               f"0-{held - 1}" if part.partition > 1 else f"Pick a fold in 0-{held - 1}")
        raise ResultsError(f"{trainer}: fold {fold} is not in the splits file: {what}, and stock nnU-Net would train "
                           f"it on a random 80:20 split. {fix}. Nothing was trained.")
    clashes = split_clashes(results, splits) if splits is not None else {}
    if clashes:
        first = next(iter(clashes))
        raise ResultsError(
            f"{trainer}: {path} no longer gives trained fold(s) {', '.join(map(str, clashes))} of {results} the split "
            f"they trained on (fold {first}: {clashes[first]}; see fold_{first}/{SPLIT_RECORD}). Folds on other "
            f"splits do not form one cross-validation, so nothing was trained. Restore the splits file they trained "
            f"on, or move those folds away and train them again.")

