"""Dice of predicted segmentations against ground truth, with nnU-Net's own metric code."""
from __future__ import annotations

import math
from pathlib import Path

from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

from .errors import UserError
from .files import read_json


class EvaluationError(UserError, ValueError):
    """Predictions and references cannot be scored as given; the message names the files and the fix."""


def check_folders(gt_folder: Path, pred_folder: Path, ending: str) -> None:
    """Both folders hold files of the dataset's ending, and every prediction has its reference."""
    for what, folder in (("reference", gt_folder), ("prediction", pred_folder)):
        if not folder.is_dir():
            raise EvaluationError(f"{what} folder {folder} does not exist; pass the folder that holds the "
                                  f"{what} files.")
        if not any(folder.glob(f"*{ending}")):
            raise EvaluationError(f"{what} folder {folder} holds no files ending in {ending!r} (the dataset's "
                                  f"file_ending); pass the folder that holds them.")
    references = {p.name for p in gt_folder.glob(f"*{ending}")}
    unmatched = sorted(p.name for p in pred_folder.glob(f"*{ending}") if p.name not in references)
    if unmatched:
        raise EvaluationError(f"predictions without a reference in {gt_folder}: {', '.join(unmatched[:10])}"
                              f"{' ...' if len(unmatched) > 10 else ''}. Pass the matching reference folder, or "
                              f"remove predictions of cases that have no ground truth.")


def dice_per_case(gt_folder, pred_folder, dataset_json_file) -> dict:
    """Mean foreground Dice per case (over the labels present in reference or prediction) and over cases;
    nnU-Net's summary.json is written to ``pred_folder``."""
    dataset_json = read_json(dataset_json_file)
    if not isinstance(dataset_json, dict) or "labels" not in dataset_json or "file_ending" not in dataset_json:
        raise EvaluationError(f"{dataset_json_file} is not an nnU-Net dataset.json (it needs 'labels' and "
                              f"'file_ending'); pass the dataset's own dataset.json.")
    labels = [v for k, v in dataset_json["labels"].items() if k != "background" and isinstance(v, int)]
    ending = dataset_json["file_ending"]
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    check_folders(gt_folder, pred_folder, ending)
    example = next(gt_folder.glob(f"*{ending}"))
    reader = determine_reader_writer_from_dataset_json(dataset_json, str(example))()
    summary = compute_metrics_on_folder(str(gt_folder), str(pred_folder), str(Path(pred_folder) / "summary.json"),
                                        reader, ending, labels, num_processes=1)
    per_case = {Path(c["prediction_file"]).name[: -len(ending)]: _mean([m["Dice"] for m in c["metrics"].values()])
                for c in summary["metric_per_case"]}
    return {"per_case": per_case, "mean": _mean(list(per_case.values()))}


def _mean(values: list[float]) -> float:
    """nnU-Net's convention: a label absent from both reference and prediction has Dice NaN and is left out (a
    case of the context task holds one of its two classes); NaN only when nothing is left."""
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


def format_dice(scores: dict) -> str:
    lines = [f"{case:<24} Dice {d:.4f}" for case, d in sorted(scores["per_case"].items())]
    lines.append(f"{'mean':<24} Dice {scores['mean']:.4f}")
    return "\n".join(lines)
