"""Where nnU-Net finds our trainers, the environment its CLIs run in when this package starts them, and the device.

nnU-Net (>= 2.8) looks up trainers in the folders listed on ``nnUNet_extTrainer``; every command of
ours that starts an nnU-Net CLI or loads a trained model puts our trainers folder first on it,
keeping the user's own entries.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..core.errors import UserError


def trainers_folder() -> Path:
    """The folder to put on ``nnUNet_extTrainer``: thin modules re-exporting our trainer classes."""
    import importlib.util
    return Path(importlib.util.find_spec("nnunetv2_llm.ext_trainers").submodule_search_locations[0])


def _same_folder(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(Path(a).expanduser(), b)
    except OSError:
        return False


def ext_trainer_entries(value: str | None = None) -> list[str]:
    """The entries of ``nnUNet_extTrainer`` (default: this process's) with our folder first, others kept."""
    ours = trainers_folder()
    value = os.environ.get("nnUNet_extTrainer", "") if value is None else value
    others = [p for p in value.split(os.pathsep) if p.strip() and not _same_folder(p, ours)]
    return [str(ours), *others]


def lists_our_trainers(value: str | None = None) -> bool:
    value = os.environ.get("nnUNet_extTrainer", "") if value is None else value
    return any(_same_folder(p, trainers_folder()) for p in value.split(os.pathsep) if p.strip())


def searched_first(value: str | None = None) -> bool:
    """Whether nnU-Net's lookup searches our folder before any other of ``nnUNet_extTrainer`` (default: this
    process's); nnU-Net skips entries that do not exist."""
    value = os.environ.get("nnUNet_extTrainer", "") if value is None else value
    entries = [p for p in value.split(os.pathsep) if p.strip() and os.path.exists(p)]
    return bool(entries) and _same_folder(entries[0], trainers_folder())


def with_our_trainers(env: dict) -> dict:
    """``env`` with our trainers folder first on its ``nnUNet_extTrainer`` (the user's other entries kept)."""
    return {**env, "nnUNet_extTrainer": os.pathsep.join(ext_trainer_entries(env.get("nnUNet_extTrainer", "")))}


def ensure_trainer_lookup() -> None:
    """Our trainers folder on nnUNet_extTrainer for this process (before nnU-Net's lookup or predictor runs)."""
    os.environ["nnUNet_extTrainer"] = with_our_trainers(dict(os.environ))["nnUNet_extTrainer"]


# nnU-Net on CPU. OpenMP threads that spin while waiting make nnU-Net's training (which uses every core) up to
# 15x slower as soon as another process wants a core: passive waiting avoids that. nnU-Net's pools (validation
# export, preprocessing) start 8 workers by default, too many for a CPU that also trains. Data augmentation in the
# training process itself (nnUNet_n_proc_DA=0) is for TRAINING ONLY: nnU-Net's planner calls
# torch.set_num_threads(nnUNet_n_proc_DA) and fails with 0.
CPU_SETTINGS = {"nnUNet_def_n_proc": "1", "OMP_WAIT_POLICY": "PASSIVE"}
# PyTorch's own wheel indexes: TORCH_WHEEL_INDEX/cpu holds the CPU builds of torch and torchvision, /cu130 etc. the
# CUDA ones; a torch's local version (2.14.1+cpu) names the index it came from.
TORCH_WHEEL_INDEX = "https://download.pytorch.org/whl"
CPU_TRAINING_SETTINGS = {**CPU_SETTINGS, "nnUNet_n_proc_DA": "0"}


def cpu_env(env: dict, training: bool) -> dict:
    """``env`` with the CPU settings (those for training too when ``training``); values the user set are kept."""
    return {**(CPU_TRAINING_SETTINGS if training else CPU_SETTINGS), **env}


def cpu_advice(train_example: str = "nnUNetv2_train DATASET CONFIG FOLD -tr TRAINER -device cpu") -> list[str]:
    """Shell lines that give a CPU user the settings: two exports for every nnU-Net command, and the training-only
    one as a prefix of the training command (exported, it would break nnUNetv2_plan_and_preprocess)."""
    exports = " ".join(f"{k}={v}" for k, v in CPU_SETTINGS.items())
    return [f"export {exports}",
            f"nnUNet_n_proc_DA=0 {train_example}   # nnUNet_n_proc_DA=0 for training only: "
            f"nnU-Net's planner fails with it"]


def nnunet_env(base: dict | None = None, device: str | None = None, training: bool = False,
               offline: bool = False) -> dict:
    """The environment a stock nnU-Net command runs in when this package starts it: ``base`` (default: this
    process's) with our trainers first on ``nnUNet_extTrainer`` (the user's other entries kept), on the CPU the CPU
    settings (the training-only one when ``training``; values the user set are kept), and with ``offline`` no hub."""
    env = with_our_trainers(dict(os.environ if base is None else base))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return cpu_env(env, training) if device == "cpu" else env


def run_nnunet(name: str, args: list[str], env: dict | None = None, device: str | None = None,
               training: bool = False):
    """Run the stock nnU-Net console script ``name`` of this Python environment with ``args``, its output captured,
    in :func:`nnunet_env` (``env`` as the base). Commands that stream a long run into a log (the demo's steps, a
    sweep's jobs) start their process themselves, in the same environment."""
    import subprocess
    return subprocess.run([cli_path(name), *map(str, args)], env=nnunet_env(env, device, training),
                          capture_output=True, text=True)


def nnunet_cli_env(raw: Path, preprocessed: Path, results: Path, device: str) -> dict:
    """:func:`nnunet_env` for these three folders, with one worker and no hub."""
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed),
           "nnUNet_results": str(results), "nnUNet_def_n_proc": "1", "PYTHONUNBUFFERED": "1"}
    return nnunet_env(env, device, offline=True)


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def cli_path(name: str) -> str:
    """A console script of this Python environment (the one nnunetv2-llm runs in)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


DEVICES = ("auto", "cpu", "cuda")  # auto: a CUDA GPU when torch sees one, else the CPU


def resolve_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is refused."""
    import torch
    if choice not in DEVICES:
        raise UserError(f"--device {choice!r}: accepted are {', '.join(DEVICES)}.")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU; use --device auto or cpu.")
    return choice
