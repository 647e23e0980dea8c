"""Dice of predicted segmentations against ground truth, with nnU-Net's own metric code."""
from __future__ import annotations

import json
from pathlib import Path

from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json


def dice_per_case(gt_folder, pred_folder, dataset_json_file) -> dict:
    """Mean foreground Dice per case and over cases; nnU-Net's summary.json is written to ``pred_folder``."""
    dataset_json = json.loads(Path(dataset_json_file).read_text())
    labels = [v for k, v in dataset_json["labels"].items() if k != "background" and isinstance(v, int)]
    ending = dataset_json["file_ending"]
    example = next(Path(gt_folder).glob(f"*{ending}"))
    reader = determine_reader_writer_from_dataset_json(dataset_json, str(example))()
    summary = compute_metrics_on_folder(str(gt_folder), str(pred_folder), str(Path(pred_folder) / "summary.json"),
                                        reader, ending, labels, num_processes=1)
    per_case = {Path(c["prediction_file"]).name[: -len(ending)]:
                sum(c["metrics"][k]["Dice"] for k in c["metrics"]) / len(c["metrics"])
                for c in summary["metric_per_case"]}
    return {"per_case": per_case, "mean": sum(per_case.values()) / len(per_case)}


def format_dice(scores: dict) -> str:
    lines = [f"{case:<24} Dice {d:.4f}" for case, d in sorted(scores["per_case"].items())]
    lines.append(f"{'mean':<24} Dice {scores['mean']:.4f}")
    return "\n".join(lines)
