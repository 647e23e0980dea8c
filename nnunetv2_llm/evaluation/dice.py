"""Dice of a folder of predictions against ground truth: nnU-Net's metric code and label rule, per case and mean."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError
from ..core.files import read_json, write_json
from .labels import label_rule
from .metrics import case_metrics
from .statistics import mean_of_present


class EvaluationError(UserError, ValueError):
    """Predictions and references cannot be scored as given; the message names the files and the fix."""


def _listing(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")


def pair_files(gt_folder: Path, pred_folder: Path, ending: str, require_all: bool) -> tuple[list[str], list[str]]:
    """The case names with a prediction and a reference, and the references that have no prediction. A prediction
    without a reference is an error; a reference without a prediction is one too with ``require_all``."""
    for what, folder in (("reference", gt_folder), ("prediction", pred_folder)):
        if not folder.is_dir():
            raise EvaluationError(f"{what} folder {folder} does not exist; pass the folder that holds the "
                                  f"{what} files.")
        if not any(folder.glob(f"*{ending}")):
            raise EvaluationError(f"{what} folder {folder} holds no files ending in {ending!r} (the dataset's "
                                  f"file_ending); pass the folder that holds them.")
    references = {p.name[: -len(ending)] for p in gt_folder.glob(f"*{ending}")}
    predictions = {p.name[: -len(ending)] for p in pred_folder.glob(f"*{ending}")}
    unmatched = sorted(f"{c}{ending}" for c in predictions - references)
    if unmatched:
        raise EvaluationError(f"predictions without a reference in {gt_folder}: {_listing(unmatched)}. Pass the "
                              f"matching reference folder, or remove predictions of cases that have no ground truth.")
    missing = sorted(f"{c}{ending}" for c in references - predictions)
    if missing and require_all:
        raise EvaluationError(f"{len(missing)} of {len(references)} references have no prediction in {pred_folder}: "
                              f"{_listing(missing)}. Predict them, or drop --require-all to score the others.")
    return sorted(references & predictions), missing


def dice_per_case(gt_folder, pred_folder, dataset_json_file, require_all: bool = False,
                  summary_file=None) -> dict:
    """Per case the mean Dice over its labels (or regions) present in reference or prediction, and the mean over
    cases; ``missing``: references without a prediction. ``summary_file``: also write nnU-Net's summary.json
    layout there (per case and label Dice and IoU, and their means)."""
    dataset_json = read_json(dataset_json_file)
    if not isinstance(dataset_json, dict) or "labels" not in dataset_json or "file_ending" not in dataset_json:
        raise EvaluationError(f"{dataset_json_file} is not an nnU-Net dataset.json (it needs 'labels' and "
                              f"'file_ending'); pass the dataset's own dataset.json.")
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    rule = label_rule(dataset_json, str(dataset_json_file))
    ending = dataset_json["file_ending"]
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    cases, missing = pair_files(gt_folder, pred_folder, ending, require_all)
    reader = determine_reader_writer_from_dataset_json(dataset_json, str(gt_folder / f"{cases[0]}{ending}"),
                                                       verbose=False)()
    metrics = {c: case_metrics(str(gt_folder / f"{c}{ending}"), str(pred_folder / f"{c}{ending}"), reader, rule,
                               None) for c in cases}
    per_case = {c: mean_of_present([m["Dice"] for m in metrics[c].values()]) for c in cases}
    result = {"per_case": per_case, "mean": mean_of_present(per_case.values()), "missing": missing,
              "references": len(cases) + len(missing)}
    if summary_file is not None:
        write_json(summary_file, summary_json(gt_folder, pred_folder, ending, rule, metrics))
    return result


def summary_json(gt_folder: Path, pred_folder: Path, ending: str, rule, metrics: dict) -> dict:
    """nnU-Net's summary.json layout: ``metric_per_case``, ``mean`` per label and ``foreground_mean``."""
    per_case = [{"reference_file": str(gt_folder / f"{c}{ending}"), "prediction_file": str(pred_folder / f"{c}{ending}"),
                 "metrics": {k: {m: _json_number(v[m]) for m in v} for k, v in labels.items()}}
                for c, labels in metrics.items()]
    mean = {k: {m: _json_number(mean_of_present([metrics[c][k][m] for c in metrics])) for m in ("Dice", "IoU")}
            for k in rule.keys}
    foreground = {m: _json_number(mean_of_present([mean[k][m] for k in rule.keys if mean[k][m] is not None]))
                  for m in ("Dice", "IoU")}
    return {"foreground_mean": foreground, "mean": mean, "metric_per_case": per_case}


def _json_number(x):
    return None if x is None or x != x else float(x)


def format_dice(scores: dict) -> str:
    lines = [f"{case:<24} Dice {d:.4f}" for case, d in sorted(scores["per_case"].items())]
    undefined = sorted(case for case, d in scores["per_case"].items() if d != d)  # NaN: left out of the mean
    scored = len(scores["per_case"]) - len(undefined)
    lines.append(f"{'mean':<24} Dice {scores['mean']:.4f}  (over {scored} of {scores['references']} references)")
    if undefined:
        lines.append(f"not scored: {len(undefined)} case(s) whose reference and prediction hold no label (Dice "
                     f"undefined, left out of the mean): {_listing(undefined)}")
    if scores["missing"]:
        lines.append(f"not scored: {len(scores['missing'])} reference(s) without a prediction: "
                     f"{_listing(scores['missing'])}")
    return "\n".join(lines)
