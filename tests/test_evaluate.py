"""`nnunetv2-llm dice` on labels absent from a case: nnU-Net's convention leaves them out (hand-computed values)."""
import json
import math

import numpy as np
from PIL import Image

from nnunetv2_llm.commands import cli
from nnunetv2_llm.evaluation.dice import dice_per_case


def _write(folder, name, squares):
    label = np.zeros((8, 8), dtype=np.uint8)
    for value, rows, cols in squares:
        label[rows[0]:rows[1], cols[0]:cols[1]] = value
    folder.mkdir(exist_ok=True)
    Image.fromarray(label).save(folder / f"{name}.png")


def test_dice_leaves_out_labels_absent_from_reference_and_prediction(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt, "a", [(1, (0, 4), (0, 4))])                       # only class 1: 16 pixels
    _write(pred, "a", [(1, (0, 4), (0, 2))])                     # 8 of them: Dice 2*8/24; class 2 absent: left out
    _write(gt, "b", [(2, (0, 4), (0, 4))])                       # only class 2
    _write(pred, "b", [(2, (0, 4), (0, 4)), (1, (7, 8), (7, 8))])  # class 2 exact (1), one false class-1 pixel (0)
    _write(gt, "c", [])                                          # nothing in either: the case is left out
    _write(pred, "c", [])
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".png",
                                        "channel_names": {"0": "x"}, "numTraining": 3}))
    scores = dice_per_case(gt, pred, dataset_json)
    assert math.isclose(scores["per_case"]["a"], 2 * 8 / 24) and math.isclose(scores["per_case"]["b"], 0.5)
    assert math.isnan(scores["per_case"]["c"])
    assert math.isclose(scores["mean"], (2 * 8 / 24 + 0.5) / 2)
    assert cli.main(["dice", "--gt", str(gt), "--pred", str(pred), "--dataset-json", str(dataset_json)]) == 0
    assert f"{'mean':<24} Dice 0.5833" in capsys.readouterr().out
