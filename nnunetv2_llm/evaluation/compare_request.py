"""What compare is asked, and the checks of its options: the request (variants, folds, other sets, statistics),
the option values checked before any file is read, the NSD tolerances, the reference and the labels every variant
must share."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import did_you_mean
from ..nnunet.results import DEFAULT_PLANS, TrainedResults
from .cases import CompareError
from .labels import LabelRule, label_rule
from .metrics import DEFAULT_TOLERANCE_MM, METRICS
from .summary import DEFAULT_PRIMARY

BOOTSTRAP_RANGE = (100, 1_000_000)


@dataclass
class CompareRequest:
    """What to compare: the variants (trainer names, ``TRAINER__PLANS`` or results folders) of one dataset and
    configuration, the folds, the other case sets, and how to test."""

    dataset: str
    configuration: str
    trainers: list[str]
    output: str
    plans: list[str] = field(default_factory=lambda: [DEFAULT_PLANS])
    folds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    reference: str | None = None
    external: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    nsd_tolerance: list[str] | None = None
    bootstrap: int = 2000
    seed: int = 0
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "auto"
    by_layer: str | None = None  # "strict": one series of plans that differ only in their layer; "series": several
    replicates: int | None = None  # training replicates per fold to use (None: as many as every variant has)
    primary: str = DEFAULT_PRIMARY  # the metric of the primary endpoint (the only test with stars)


def parse_tolerances(items: list[str] | None, keys: list[str]) -> dict[str, float]:
    """``1.5`` for every label, or ``LABEL=MM`` per label (a region as nnU-Net names it, ``(1, 2)=2``). Order does
    not matter: a per-label value wins over the global one; two different values for one label are refused."""
    given: dict[str | None, tuple[str, float]] = {}  # label (None: every label) -> (item, mm)
    for item in items or []:
        key, sep, value = item.rpartition("=")
        try:
            mm = float(value)
        except ValueError:
            mm = -1.0
        if not mm > 0 or not math.isfinite(mm):
            raise CompareError(f"--nsd-tolerance {item!r}: give a positive distance in mm, for all labels (2.0) "
                               f"or per label (1=2.0).")
        label = key.strip() if sep else None
        if label is not None and label not in keys:
            raise CompareError(f"--nsd-tolerance {item!r}: label {key!r} is not one of the labels {keys}.")
        if label in given and given[label][1] != mm:
            raise CompareError(f"--nsd-tolerance {given[label][0]!r} and {item!r} give two distances for "
                               f"{'every label' if label is None else f'label {label}'}; keep one.")
        given[label] = (item, mm)
    default = given.pop(None, (None, DEFAULT_TOLERANCE_MM))[1]
    return {k: given[k][1] if k in given else default for k in keys}


def pick_reference(variants: list[TrainedResults], reference: str | None) -> int:
    if reference is None:
        return 0
    matches = [i for i, v in enumerate(variants) if reference in (v.label, v.trainer)]
    if len(matches) != 1:
        labels = [v.label for v in variants]
        raise CompareError(f"--reference {reference!r} names none (or several) of the variants {labels}; pass one "
                           f"of those.{did_you_mean(reference, labels)}")
    return matches[0]


def check_labels(variants: list[TrainedResults]) -> LabelRule:
    """Every variant must segment the same labels; returns nnU-Net's rule for them."""
    first = variants[0]
    for v in variants[1:]:
        if (v.dataset_json["labels"], v.dataset_json.get("regions_class_order")) != \
                (first.dataset_json["labels"], first.dataset_json.get("regions_class_order")):
            raise CompareError(f"{v.label} segments labels {v.dataset_json['labels']}, {first.label} segments "
                               f"{first.dataset_json['labels']}: variants of one comparison must be trained on the "
                               f"same dataset and labels.")
    return label_rule(first.dataset_json, str(first.folder / "dataset.json"))


def check_statistics(bootstrap: int, primary: str) -> None:
    """The options of the statistics, shared by compare and the re-analysis of a cases.csv."""
    if not BOOTSTRAP_RANGE[0] <= bootstrap <= BOOTSTRAP_RANGE[1]:
        raise CompareError(f"--bootstrap {bootstrap}: accepted are {BOOTSTRAP_RANGE[0]}..{BOOTSTRAP_RANGE[1]} "
                           f"resamples (fewer give a CI that changes with the seed; the default is 2000).")
    if primary not in METRICS:
        raise CompareError(f"--primary {primary}: accepted are {', '.join(METRICS)} (the metric of the "
                           f"primary endpoint; the default is {DEFAULT_PRIMARY}).{did_you_mean(primary, METRICS)}")


def check_options(request: CompareRequest) -> None:
    """The option values that need no file: checked before the dataset, the results or the report folder are read."""
    check_statistics(request.bootstrap, request.primary)
    if request.processes < 1:
        raise CompareError(f"-np {request.processes}: give at least 1 process.")
    if len(request.plans) not in (1, len(request.trainers)):
        raise CompareError(f"-p takes one plans name for all variants or one per -tr ({len(request.trainers)}); "
                           f"got {len(request.plans)}.")
    if request.replicates is not None and request.replicates < 1:
        raise CompareError(f"--replicates {request.replicates}: give 1 or more training replicates per fold.")
    report_folder(request.output)


def report_folder(output: str | Path) -> Path:
    """The report folder ``-o`` names, absolute; refused when it is a file (compare and the re-analysis)."""
    out = Path(output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CompareError(f"-o {output} is a file; pass a folder for the report.")
    return out
