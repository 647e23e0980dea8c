"""``nnunetv2-llm analyze``: the metric functions on inputs with known answers, then the command on real folds.

The end-to-end test trains (when absent) the same two short 2d folds as test_nnunet_e2e.py, so the
session's runs are shared, and checks every saved number against an independent numpy recomputation
from the feature maps the command saves.
"""
import json
import math

import numpy as np
import pytest
from PIL import Image

from nnunetv2_llm.evaluation.analysis_patches import crop_or_pad
from nnunetv2_llm.evaluation.feature_metrics import (activation_map, channel_spectra, concentration_iou, effective_rank,
                                                     lsvr, mean_over_spectra, singular_values)

SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"
PLAIN = "nnUNetTrainer_2epochs_5its"


def _random_orthogonal(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def test_effective_rank_and_lsvr_on_known_spectra():
    rng = np.random.default_rng(0)
    assert effective_rank(singular_values(np.eye(7))) == pytest.approx(7)
    assert lsvr(singular_values(np.eye(7))) == pytest.approx(math.log(7))
    rank_one = np.outer(rng.standard_normal(6), rng.standard_normal(10))
    assert effective_rank(singular_values(rank_one)) == pytest.approx(1, abs=1e-6)
    assert lsvr(singular_values(rank_one)) == pytest.approx(0, abs=1e-6)
    # Singular values 3, 1 in rotated bases: p = (3/4, 1/4).
    matrix = _random_orthogonal(4, rng)[:, :2] @ np.diag([3.0, 1.0]) @ _random_orthogonal(5, rng)[:2]
    assert singular_values(matrix[:, None, :]) == pytest.approx([3, 1, 0, 0], abs=1e-9)
    assert effective_rank(singular_values(matrix)) == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                                               + 0.25 * math.log(0.25))))
    assert lsvr(singular_values(matrix)) == pytest.approx(-math.log(0.75))
    # A C x H x W map is read as the C x (HW) matrix.
    features = rng.standard_normal((8, 3, 5))
    assert singular_values(features) == pytest.approx(np.linalg.svd(features.reshape(8, 15), compute_uv=False))
    assert math.isnan(effective_rank(np.zeros(3))) and math.isnan(lsvr(np.zeros(3)))


def test_channel_wise_spectra_are_the_papers_definition():
    """One spectrum per channel's H x W map: diagonal maps have their diagonal as singular values."""
    features = np.zeros((3, 4, 4))
    features[0] = np.diag([4.0, 2.0, 1.0, 1.0])
    features[1] = np.diag([1.0, 1.0, 1.0, 1.0])
    features[2, 0, :] = 1.0  # rank one: a single singular value of 2
    spectra = channel_spectra(features)
    assert spectra.shape == (3, 4)
    assert spectra[0] == pytest.approx([4, 2, 1, 1]) and spectra[1] == pytest.approx([1, 1, 1, 1])
    assert spectra[2] == pytest.approx([2, 0, 0, 0], abs=1e-12)
    p0 = np.array([4, 2, 1, 1]) / 8
    expected_er = [math.exp(-(p0 * np.log(p0)).sum()), 4.0, 1.0]
    assert mean_over_spectra(effective_rank, spectra) == pytest.approx(np.mean(expected_er))
    assert mean_over_spectra(lsvr, spectra) == pytest.approx(np.mean([-math.log(0.5), math.log(4), 0.0]))
    volume = np.stack([features, features[::-1]], axis=1)  # C x D x H x W: every slice is its own map
    assert channel_spectra(volume).shape == (6, 4)
    assert math.isnan(mean_over_spectra(effective_rank, channel_spectra(np.zeros((2, 3, 3)))))


def test_activation_map_and_concentration_iou_on_known_maps():
    features = np.zeros((4, 2, 2), np.float32)
    features[:, 0, 0] = [-2, 2, -2, 2]  # mean |f| = 2 at the top-left token, 0 elsewhere
    features[:, 1, 1] = [1, -1, 1, -1]  # mean |f| = 1
    amap = activation_map(features, (2, 2))
    assert amap == pytest.approx(np.array([[1.0, 0.0], [0.0, 0.5]]))
    up = activation_map(features, (8, 8))
    assert up.shape == (8, 8) and up.min() == 0 and up.max() == 1
    assert up[:4, :4].mean() > up[4:, 4:].mean() > up[:4, 4:].mean()
    assert activation_map(np.ones((3, 2, 2, 2)), (4, 4, 4)).shape == (4, 4, 4)
    assert not activation_map(np.ones((3, 2, 2)), (4, 4)).any(), "a constant map highlights nothing"

    act = np.zeros((4, 4))
    act[:, :2] = 0.9  # left half highlighted
    act[0, 2] = 0.4  # on the threshold: highlighted
    act[1, 2] = 0.39
    mask = np.zeros((4, 4), bool)
    mask[:2, :] = True  # top half
    # highlighted: 8 + 1 = 9, mask: 8, intersection: 4 + 1 = 5, union: 9 + 8 - 5 = 12
    assert concentration_iou(act, mask, 0.4) == pytest.approx(5 / 12)
    assert concentration_iou(act, act >= 0.4) == 1.0
    assert concentration_iou(np.zeros((3, 3)), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        concentration_iou(act, mask[:3])


def test_crop_or_pad_keeps_the_foreground_in_the_patch():
    image = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    mask = np.zeros((10, 10), bool)
    mask[7:9, 8:10] = True
    patch, patch_mask, origin = crop_or_pad(image, mask, (4, 4))
    assert origin == [6, 6] and patch_mask.sum() == 4
    assert np.array_equal(patch[0], image[0, 6:10, 6:10])
    padded, padded_mask, origin = crop_or_pad(image, mask, (12, 6))
    assert origin == [-1, 4] and padded.shape == (1, 12, 6) and padded_mask.sum() == 4
    assert np.array_equal(padded[0, 1:11], image[0, :, 4:10]) and not padded[0, 0].any()


def _entropy_rank_and_lsvr(matrix):
    s = np.linalg.svd(matrix.reshape(matrix.shape[0], -1).astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p)))), float(-np.log(s[0] / s.sum())), len(s)


def _check_png(path, min_colours=50):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert min(pixels.shape[:2]) > 200, path
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colours, f"{path} is nearly blank"
    return pixels


@pytest.mark.slow
def test_analyze_compare_llm_and_plain_folds(nnunet_env, dataset_2d, smollm2_gguf, tmp_path):
    smol, plain = nnunet_env.trained(dataset_2d, SMOL), nnunet_env.trained(dataset_2d, PLAIN)
    out = tmp_path / "analysis"
    proc = nnunet_env.run("nnunetv2-llm", "analyze", "-d", dataset_2d, "-c", "2d", "-tr", SMOL, "-f", "0",
                          "--compare", PLAIN, "-o", out, "--device", "cpu")
    assert "IoU before" in proc.stdout
    assert "(higher = attention more on the object" in proc.stdout and "higher = more dimensions used" in proc.stdout

    result = json.loads((out / "analysis.json").read_text())
    splits_file = nnunet_env.preprocessed / nnunet_env.dataset_folder(dataset_2d).name / "splits_final.json"
    splits = json.loads(splits_file.read_text())
    assert result["validation_cases"] == sorted(splits[0]["val"])
    assert result["threshold"] == 0.4 and "exp(-sum_i p_i ln p_i)" in result["definitions"]["effective_rank"]
    runs = {r["label"]: r for r in result["runs"]}
    assert list(runs) == [SMOL, PLAIN]
    assert runs[SMOL]["has_llm"] and runs[SMOL]["llm"]["layer"] == 14 and not runs[PLAIN]["has_llm"]
    assert runs[SMOL]["folder"] == str(smol) and runs[PLAIN]["folder"] == str(plain)
    assert runs[SMOL]["decoder_input_shape"] == [512, 4, 4] == runs[PLAIN]["decoder_input_shape"]

    for label, run in runs.items():
        assert sorted(run["cases"]) == result["validation_cases"]
        for case, m in run["cases"].items():
            saved = np.load(out / "features" / label / f"{case}.npz")
            mask = saved["mask"]
            assert saved["image"].shape == (1, 64, 64) and mask.shape == (64, 64) and mask.any()
            assert m["foreground_voxels"] == int(mask.sum())
            decoder_input = saved["after"] if run["has_llm"] else saved["before"]
            er, ratio, k = _entropy_rank_and_lsvr(decoder_input)
            assert 1 - 1e-6 <= m["effective_rank_matrix"] <= k + 1e-6 and k == 16
            assert 0 <= m["lsvr_matrix"] <= math.log(k) + 1e-9
            assert m["effective_rank_matrix"] == pytest.approx(er, rel=1e-6)
            assert m["lsvr_matrix"] == pytest.approx(ratio, rel=1e-6, abs=1e-9)
            per_channel = [_entropy_rank_and_lsvr(c) for c in decoder_input if np.abs(c).sum() > 0]
            assert m["effective_rank"] == pytest.approx(np.mean([c[0] for c in per_channel]), rel=1e-6)
            assert m["lsvr"] == pytest.approx(np.mean([c[1] for c in per_channel]), rel=1e-6, abs=1e-9)
            assert m["num_singular_values"] == 4 and 1 - 1e-6 <= m["effective_rank"] <= 4 + 1e-6
            for key in ("before", "after"):
                if key not in saved:
                    assert m[f"iou_{key}"] is None and key == "after" and not run["has_llm"]
                    continue
                amap = activation_map(saved[key], mask.shape)
                assert 0.0 <= m[f"iou_{key}"] <= 1.0
                assert m[f"iou_{key}"] == pytest.approx(concentration_iou(amap, mask, 0.4))
        for key, value in run["mean"].items():
            values = [c[key] for c in run["cases"].values() if c[key] is not None]
            assert (value is None) == (not values) and (value is None or value == pytest.approx(np.mean(values)))
    assert runs[PLAIN]["mean"]["iou_after"] is None and runs[SMOL]["mean"]["iou_after"] is not None
    # The LLM block really changes the map the decoder gets.
    first = result["validation_cases"][0]
    smol_features = np.load(out / "features" / SMOL / f"{first}.npz")
    assert not np.allclose(smol_features["before"], smol_features["after"])

    for case in result["validation_cases"]:
        pixels = _check_png(out / "cases" / f"{case}.png")
        assert pixels.shape[0] > pixels.shape[1] * 0.5, "two rows: one per compared run"
    _check_png(out / "distributions.png")
    assert not list(out.rglob(".*")), "no temporary files left behind"


def test_analyze_names_a_missing_run(nnunet_env, dataset_2d, tmp_path):
    proc = nnunet_env.run("nnunetv2-llm", "analyze", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerNoSuchRun",
                          "-o", tmp_path, check=False)
    assert proc.returncode == 2
    assert "nnUNetTrainerNoSuchRun__nnUNetPlans__2d" in proc.stderr and "finished an epoch" in proc.stderr
    assert "nnUNetv2_train" not in proc.stderr, "no advice to train a trainer that does not exist (issue 32 #6)"
    assert not list(tmp_path.iterdir())
