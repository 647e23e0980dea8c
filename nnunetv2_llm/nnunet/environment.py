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


def with_our_trainers(env: dict) -> dict:
    """``env`` with our trainers folder first on its ``nnUNet_extTrainer`` (the user's other entries kept)."""
    return {**env, "nnUNet_extTrainer": os.pathsep.join(ext_trainer_entries(env.get("nnUNet_extTrainer", "")))}


def ensure_trainer_lookup() -> None:
    """Our trainers folder on nnUNet_extTrainer for this process (before nnU-Net's lookup or predictor runs)."""
    os.environ["nnUNet_extTrainer"] = with_our_trainers(dict(os.environ))["nnUNet_extTrainer"]


def nnunet_cli_env(raw: Path, preprocessed: Path, results: Path, device: str) -> dict:
    """The environment of nnU-Net CLI subprocesses: these three folders, our trainers first on
    ``nnUNet_extTrainer`` (keeping the user's other entries), one worker, no hub.

    On CPU, OpenMP threads that spin while waiting make nnU-Net's training (which uses every core) up to
    15x slower as soon as another process wants a core; passive waiting avoids that (unless the user
    chose a policy)."""
    env = with_our_trainers(dict(os.environ))
    env.update({
        "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed), "nnUNet_results": str(results),
        "nnUNet_def_n_proc": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
    })
    if device == "cpu":
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


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
