"""Where nnU-Net finds our trainers, and the environment its CLIs run in when this package starts them.

nnU-Net (>= 2.8) looks up trainers in the folders listed on ``nnUNet_extTrainer``; every command of
ours that starts an nnU-Net CLI or loads a trained model puts our trainers folder first on it,
keeping the user's own entries.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


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


def ensure_trainer_lookup() -> None:
    """Put our trainers folder on nnUNet_extTrainer for this process (e.g. before nnU-Net's predictor loads a run)."""
    os.environ["nnUNet_extTrainer"] = os.pathsep.join(ext_trainer_entries())


def nnunet_cli_env(raw: Path, preprocessed: Path, results: Path, device: str) -> dict:
    """The environment of nnU-Net CLI subprocesses: these three folders, our trainers first on
    ``nnUNet_extTrainer`` (keeping the user's other entries), one worker, no hub.

    On CPU, OpenMP threads that spin while waiting make nnU-Net's training (which uses every core) up to
    15x slower as soon as another process wants a core; passive waiting avoids that (unless the user
    chose a policy)."""
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed), "nnUNet_results": str(results),
        "nnUNet_extTrainer": os.pathsep.join(ext_trainer_entries()),
        "nnUNet_def_n_proc": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
    })
    if device == "cpu":
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def cli_path(name: str) -> str:
    """A console script of this Python environment (the one nnunetv2-llm runs in)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def console(width: int = 120):
    """A rich console: the terminal's width when interactive, ``width`` columns when piped or logged."""
    from rich.console import Console
    return Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=width)
