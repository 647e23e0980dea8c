"""nnU-Net's label rule in both of our Dice paths (`dice` and `compare`'s scoring): foreground labels or regions as
its LabelManager says, voxels under the reference's ignore label left out; checked against nnU-Net's own
compute_metrics_on_folder on generated 2D cases."""
import json
import math

import numpy as np
import pytest
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
from PIL import Image
from rich.progress import Progress

from nnunetv2_llm.evaluation.cases import Case
from nnunetv2_llm.evaluation.dice import dice_per_case
from nnunetv2_llm.evaluation.labels import label_rule
from nnunetv2_llm.evaluation.scoring import score_cases

IGNORE = {"labels": {"background": 0, "lesion": 1, "ignore": 2}, "file_ending": ".png"}
REGIONS = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2],
           "file_ending": ".png"}


def _cases(tmp_path, dataset_json, n=4, seed=0, values=(0, 1, 2)):
    """Random blobs of the given values as reference and a perturbed copy as prediction (never the ignore label)."""
    rng = np.random.default_rng(seed)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    for i in range(n):
        ref = np.zeros((40, 40), dtype=np.uint8)
        for value in values[1:]:
            y, x = rng.integers(5, 30, 2)
            ref[y:y + rng.integers(4, 10), x:x + rng.integers(4, 10)] = value
        out = ref.copy()
        out[out == 2] = rng.choice([0, 1], size=int((out == 2).sum())) if "ignore" in dataset_json["labels"] else 2
        y, x = rng.integers(0, 30, 2)
        out[y:y + 6, x:x + 6] = 1
        Image.fromarray(ref).save(gt / f"case{i}.png")
        Image.fromarray(out).save(pred / f"case{i}.png")
    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json))
    return gt, pred


def _nnunet(gt, pred, dataset_json, tmp_path):
    rule = label_rule(dataset_json)
    summary = compute_metrics_on_folder(str(gt), str(pred), str(tmp_path / "nnunet.json"), NaturalImage2DIO(),
                                        ".png", list(rule.targets), rule.ignore_label, num_processes=1)
    return {c["reference_file"].rsplit("/", 1)[-1][:-4]: c["metrics"] for c in summary["metric_per_case"]}, summary


def _ours(gt, pred, dataset_json, tmp_path):
    rule = label_rule(dataset_json)
    cases = {p.stem: Case(p.stem, p, pred / p.name, 0) for p in sorted(gt.glob("*.png"))}
    with Progress(disable=True) as progress:
        return score_cases(cases, tmp_path / "cache", "NaturalImage2DIO", rule, dict.fromkeys(rule.keys, 1.0), 1,
                           progress, "scoring"), rule


@pytest.mark.parametrize("dataset_json", [IGNORE, REGIONS], ids=["ignore label", "regions"])
def test_dice_and_compare_follow_nnunets_label_rule(tmp_path, dataset_json):
    gt, pred = _cases(tmp_path, dataset_json)
    nnunet, summary = _nnunet(gt, pred, dataset_json, tmp_path)
    ours, rule = _ours(gt, pred, dataset_json, tmp_path)
    if "ignore" in dataset_json["labels"]:
        assert rule.targets == (1,) and rule.ignore_label == 2, "the ignore label is no class"
    else:
        assert rule.targets == ((1, 2), 2) and rule.keys == ["(1, 2)", "2"], "regions, named as nnU-Net names them"
    for case, metrics in nnunet.items():
        for target, key in zip(rule.targets, rule.keys):
            for metric in ("Dice", "IoU"):
                theirs, mine = metrics[target][metric], ours.value(case, key, metric)
                assert (math.isnan(theirs) and math.isnan(mine)) or mine == pytest.approx(theirs, abs=1e-12)
    scores = dice_per_case(gt, pred, tmp_path / "dataset.json")
    if len(rule.targets) == 1:  # then nnU-Net's foreground mean is the mean over cases too
        assert scores["mean"] == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-12)
    for case, metrics in nnunet.items():
        present = [metrics[t]["Dice"] for t in rule.targets if not math.isnan(metrics[t]["Dice"])]
        assert scores["per_case"][case] == pytest.approx(np.mean(present), abs=1e-12)


def test_voxels_under_the_ignore_label_count_for_no_metric(tmp_path):
    """A prediction that differs from the reference only where the reference says 'ignore' is perfect."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = np.zeros((40, 40), dtype=np.uint8)
    ref[10:20, 10:20] = 1
    ref[25:35, 25:35] = 2
    out = ref.copy()
    out[25:35, 25:35] = 1  # lesion predicted inside the ignored area
    Image.fromarray(ref).save(gt / "c.png")
    Image.fromarray(out).save(pred / "c.png")
    (tmp_path / "dataset.json").write_text(json.dumps(IGNORE))
    ours, _ = _ours(gt, pred, IGNORE, tmp_path)
    assert [ours.value("c", "1", m) for m in ("Dice", "NSD", "HD95")] == [1.0, 1.0, 0.0]
    assert dice_per_case(gt, pred, tmp_path / "dataset.json")["mean"] == 1.0
