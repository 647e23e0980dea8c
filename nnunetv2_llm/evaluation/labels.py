"""Which labels count, as nnU-Net evaluates them: its ``LabelManager`` decides, from dataset.json alone.

The foreground labels (background and the ``ignore`` label left out), or the foreground *regions* when the dataset
trains on regions; voxels under the ignore label of the reference are masked out of every metric. This is
``compute_metrics_on_folder2``'s rule; ``dice`` and ``compare`` both follow it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import UserError


class LabelError(UserError, ValueError):
    """A dataset.json whose labels nnU-Net cannot evaluate; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelRule:
    targets: tuple  # what is scored: label values, or regions (tuples of label values)
    ignore_label: int | None
    values: frozenset  # every value a label file of this dataset may hold

    @property
    def keys(self) -> list[str]:
        """How nnU-Net's summary.json names each target: ``"1"``, or ``"(1, 2)"`` for a region."""
        from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
        return [label_or_region_to_key(t) for t in self.targets]

    def key(self, target) -> str:
        return self.keys[self.targets.index(target)]


def label_rule(dataset_json: dict, where: str = "dataset.json") -> LabelRule:
    """nnU-Net's evaluation targets and ignore label for a dataset.json."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    labels = dataset_json.get("labels") if isinstance(dataset_json, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise LabelError(f"{where} has no 'labels' mapping; pass the dataset's own dataset.json.")
    try:
        manager = LabelManager(label_dict=labels, regions_class_order=dataset_json.get("regions_class_order"))
    except (AssertionError, TypeError, ValueError) as e:
        raise LabelError(f"{where}: nnU-Net cannot read its labels {labels} ({e or type(e).__name__}); fix them as "
                         f"nnU-Net's dataset_format.md describes.") from None
    targets = manager.foreground_regions if manager.has_regions else manager.foreground_labels
    targets = tuple(tuple(int(v) for v in t) if isinstance(t, (list, tuple)) else int(t) for t in targets)
    values = set(int(v) for v in manager.all_labels)
    if manager.ignore_label is not None:
        values.add(int(manager.ignore_label))
    return LabelRule(targets, manager.ignore_label, frozenset(values))
