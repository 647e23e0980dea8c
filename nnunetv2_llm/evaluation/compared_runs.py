"""Which training runs compare reads: the requested folds grouped by partition of the splits file, the training
replicates every variant has, and each run's validation cases, checked to be the same for every variant."""
from __future__ import annotations

from pathlib import Path

from ..core.files import check_checkpoint_file
from ..nnunet.results import TrainedResults, found_replicates, replicate_root
from ..nnunet.splits import NNUNET_FOLDS
from .cases import CompareError, check_same_cases, validation_cases


def partition_groups(folds: list) -> dict[int, list]:
    """Partition -> its folds (:func:`..nnunet.splits.fold_partitions`: folds 5, 6, ... of the splits file are
    partitions 2, 3, ...); fold all is a group of its own. Every partition must hold the same folds within it, or the
    partitions' means are of different folds."""
    from ..nnunet.splits import fold_partitions
    if "all" in [str(f) for f in folds]:  # alone, or refused with its reason by validation_cases
        return {1: list(folds)}
    groups: dict[int, dict[int, int]] = {}
    for part in sorted(fold_partitions(folds), key=lambda x: x.fold):
        groups.setdefault(part.partition, {})[part.fold_in_partition] = part.fold
    within = {p: set(g) for p, g in groups.items()}
    every = set().union(*within.values())
    for p, have in within.items():
        if have != every:
            missing = [NNUNET_FOLDS * (p - 1) + f for f in sorted(every - have)]
            wanted = [NNUNET_FOLDS * (q - 1) + f for q in groups for f in sorted(every)]
            raise CompareError(
                f"-f {' '.join(map(str, folds))}: partition {p} (folds {NNUNET_FOLDS * (p - 1)}-"
                f"{NNUNET_FOLDS * p - 1}) lacks fold(s) "
                f"{', '.join(map(str, missing))}, which the other partitions have (fold f of partition p is fold "
                f"{NNUNET_FOLDS}(p-1)+f of the splits file). Pass the same folds of every partition (-f "
                f"{' '.join(map(str, wanted))}), or one partition's.")
    return {p: [groups[p][f] for f in sorted(groups[p])] for p in sorted(groups)}


def checked_cases(runs: list[TrainedResults], folds: list, gt: Path, where: str, also: dict | None = None) -> dict:
    """Each run's validation cases by label, checked to be the same cases for every run (and ``also``), with every
    fold's checkpoint readable."""
    cases = {v.label: validation_cases(v, folds, gt) for v in runs}
    check_same_cases({**cases, **(also or {})}, where)
    for v in runs:
        for fold in folds:
            check_checkpoint_file(v.checkpoint(fold))
    return cases


def replicate_of(variant: TrainedResults, replicate: int) -> TrainedResults:
    """The same trainer, plans and configuration in replicate ``replicate``'s results root."""
    root = replicate_root(variant.folder.parent.parent, replicate)
    return TrainedResults(variant.dataset, variant.trainer, variant.plans, variant.configuration,
                      root / variant.folder.parent.name / variant.folder.name, replicate)


def count_replicates(variants: list[TrainedResults], wanted: int | None) -> tuple[int, list[str]]:
    """How many training replicates every variant has (``$nnUNet_results/replicates/<r>``; ``wanted``, from
    --replicates, must be there for each), and the replicates found beyond them, named with the reason."""
    found = {v.label: len(found_replicates(v.folder.parent.parent, v.folder.parent.name, v.folder.name))
             for v in variants}
    if wanted is None:
        used = min(found.values())
        fewest = min(found, key=found.get)
        why = f"{fewest} has {used}"
    else:
        used, why = wanted, f"--replicates {wanted}"
    left_out = [f"replicate{'s' if n > used + 1 else ''} {used + 1}{f'-{n}' if n > used + 1 else ''} of {label} "
                f"({why})" for label, n in found.items() if n > used]
    if wanted is None:
        return used, left_out
    for v in variants:
        if found[v.label] < wanted:
            missing = replicate_of(v, found[v.label] + 1)
            raise CompareError(f"--replicates {wanted}: {v.label} has {found[v.label]} (no {missing.folder}). Train "
                               f"replicate {found[v.label] + 1}: {missing.train_command(0)} (each fold), or pass "
                               f"--replicates {found[v.label]}.")
    return wanted, left_out
