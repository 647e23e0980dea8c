"""Checkpoints written by an earlier version keep predicting, label for label, with the stock CLI.

``tests/data/legacy-0.2`` was written by nnunetv2-llm 0.2 (commit 0b1c1e1, before the package was split into
role folders): a 32x32 synthetic 2D dataset, plans with a tiny Llama-shaped layer (random init, trained; the
config is stored in the plans, so nothing is downloaded), nnU-Net's features cut to 4..32 per stage to keep the
checkpoint small, ``nnUNetTrainerLLM_2epochs_5its`` fold 0 on the CPU, then ``nnUNetv2_predict`` of the two test
images into ``expected/``. The checkpoint stores the trainer's name, the plans and plain state-dict tensors, not
our module paths, so it must load under any later layout of the package.
"""
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import NNUNetEnv

LEGACY = Path(__file__).parent / "data" / "legacy-0.2"
TRAINER, PLANS = "nnUNetTrainerLLM_2epochs_5its", "nnUNetPlans_LLM_tiny"


def test_a_version_0_2_checkpoint_predicts_the_same_labels(tmp_path):
    env = NNUNetEnv(tmp_path / "nnunet")
    shutil.rmtree(env.results)
    shutil.copytree(LEGACY / "results", env.results)
    out = tmp_path / "pred"
    env.run("nnUNetv2_predict", "-i", LEGACY / "imagesTs", "-o", out, "-d", "990", "-c", "2d", "-tr", TRAINER,
            "-p", PLANS, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar")
    expected = sorted(p.name for p in (LEGACY / "expected").glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == expected and len(expected) == 2
    for name in expected:
        ours, then = np.array(Image.open(out / name)), np.array(Image.open(LEGACY / "expected" / name))
        assert ours.shape == then.shape and len(np.unique(then)) == 2, "a real two-label prediction"
        assert np.array_equal(ours, then), f"{name}: {np.sum(ours != then)} pixels differ from version 0.2's"
