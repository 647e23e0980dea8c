"""The plans a trained fold pinned: nnU-Net stores them in every checkpoint, while it overwrites the results folder's
plans.json whenever any fold starts; what of two plans gives another network or other data, and the ways out when
plans changed under trained folds.
"""
from __future__ import annotations

from pathlib import Path

from .datasets import dataset_id

FINAL_CHECKPOINT = "checkpoint_final.pth"

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

