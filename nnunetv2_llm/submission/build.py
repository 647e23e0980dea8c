"""``export``: a folder that builds into a challenge container which predicts with no network.

The model travels as nnU-Net's own export (``nnUNetv2_export_model_to_zip``): checkpoints of the chosen folds,
plans with the LLM spec and its sha256, dataset.json. Inference builds the network from the plans and takes the
frozen layer from the checkpoints, so the image needs neither the hub nor the LLM files. The folder holds:

  model.zip     nnU-Net's export, installed into the image at build time
  src/          this package's code, exactly as it exported (trainers for ``nnUNet_extTrainer`` included)
  export.json   what was exported, the versions that were installed, the input/output convention, and the sha256
                of model.zip, Dockerfile, predict.py and src/ (``--check`` refuses a folder that differs)
  predict.py    the entry point (:mod:`.runtime`)
  Dockerfile    a PyTorch CUDA runtime base with those exact versions pinned
  README.md     build, run, expected runtime

This module writes the folder (:func:`export_submission`); what a model must pass first is :mod:`.exportable`, the
pinned versions :mod:`.versions`, the sha256 pins :mod:`.hashes`, and the Dockerfile, predict.py and README
:mod:`.templates`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..core.files import disk_full_error, file_sha256, honour_umask, is_disk_full, write_json
from ..nnunet.datasets import dataset_name, require_folder
from ..nnunet.results import TrainedResults, resolve_trained_results
from ..nnunet.splits import parse_folds
from .exportable import check_checkpoints, check_exportable_folds
from .hashes import record_sha256, recorded_hashes
from .runtime import EXPORT_FILE, EXPORT_FORMAT, LAYOUTS, MODEL_ZIP, ExportError, inside_folder
from .templates import PREDICT_PY, default_base_image, dockerfile, submission_readme
from .versions import package_versions


def export_size(variant: TrainedResults, folds: list) -> int:
    """About the bytes a submission takes: the folds' final checkpoints (in model.zip) and this package's code."""
    package = Path(__file__).resolve().parents[1]
    code = sum(p.stat().st_size for p in package.rglob("*.py"))
    return sum(variant.checkpoint(fold).stat().st_size for fold in folds) + code


def copy_package(dest: Path) -> None:
    """This package's code as it runs here, with the trainers and variant files as ordinary subpackages."""
    import importlib.util

    from ..nnunet.environment import trainers_folder
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, dest / "nnunetv2_llm", ignore=ignore)
    shutil.copytree(trainers_folder(), dest / "nnunetv2_llm" / "ext_trainers", ignore=ignore, dirs_exist_ok=True)
    variants = Path(importlib.util.find_spec("nnunetv2_llm.variant_files").submodule_search_locations[0])
    shutil.copytree(variants, dest / "nnunetv2_llm" / "variant_files", ignore=ignore, dirs_exist_ok=True)


def _check_layout(variant: TrainedResults, layout: str, channel_folders: list[str], tile_step_size: float,
                  output_subfolder: str) -> None:
    inside_folder(output_subfolder, "--output-subfolder")
    for name in channel_folders:
        inside_folder(name, "--channel-folders")
    n_channels = len(variant.dataset_json["channel_names"])
    if layout not in LAYOUTS:
        raise ExportError(f"--layout {layout!r}: accepted are {', '.join(LAYOUTS)}.")
    if layout == "folders" and len(channel_folders) != n_channels:
        raise ExportError(f"--layout folders needs one --channel-folders name per input channel of the model "
                          f"({n_channels}: {', '.join(variant.dataset_json['channel_names'].values())}); got "
                          f"{len(channel_folders)}.")
    if layout == "nnunet" and channel_folders:
        raise ExportError("--channel-folders goes with --layout folders; drop it or add --layout folders.")
    if not 0 < tile_step_size <= 1:
        raise ExportError(f"--step-size {tile_step_size}: accepted is 0 < step <= 1 (nnU-Net's default 0.5).")


def _check_output(output: str, overwrite: bool) -> Path:
    out = Path(output).expanduser().resolve()
    if out.exists() and not (out / EXPORT_FILE).is_file():
        raise ExportError(f"-o {output} exists and is not a submission folder written by export, so it is not "
                          f"replaced; pick another -o.")
    if out.exists() and not overwrite:
        raise ExportError(f"-o {output} exists; pass --overwrite to replace it, or pick another -o.")
    return out


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an older submission there goes only once the new one stands."""
    honour_umask(tmp, directory=True)
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def export_submission(dataset, configuration: str, trainer: str, plans: str, folds: list, output: str,
                      layout: str = "nnunet", channel_folders: list[str] | None = None, output_subfolder: str = "",
                      use_mirroring: bool = True, tile_step_size: float = 0.5, base_image: str | None = None,
                      overwrite: bool = False, echo=print) -> Path:
    """Check the model, then write the submission folder under a temporary name and move it into place."""
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    require_folder("nnUNet_results")
    name = dataset_name(dataset)
    folds = parse_folds(folds, name)
    variant = resolve_trained_results(trainer, plans, name, configuration)
    conf = variant.plans_json["configurations"][configuration]
    if conf.get("previous_stage") or configuration.endswith("cascade_fullres"):
        raise ExportError(f"-c {configuration} is a cascade stage: it needs the previous stage's predictions, which "
                          f"the entry point does not produce. Export a single-stage configuration (2d, 3d_fullres).")
    channel_folders = list(channel_folders or [])
    _check_layout(variant, layout, channel_folders, tile_step_size, output_subfolder)
    check_exportable_folds(variant, folds)
    variant.require_same_plans(folds)  # the container builds one network from plans.json for every fold
    llm_note = check_checkpoints(variant, folds)
    out = _check_output(output, overwrite)
    versions = package_versions()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        echo(f"exporting {variant.folder} folds {folds} (nnUNetv2_export_model_to_zip)")
        with contextlib.redirect_stdout(io.StringIO()):  # its "No ensemble directory found": there is none to export
            export_pretrained_model(name, str(tmp / MODEL_ZIP), configurations=(configuration,),
                                    trainer=variant.trainer, plans_identifier=variant.plans, folds=tuple(folds))
        copy_package(tmp / "src")
        record = {
            "format": EXPORT_FORMAT, "dataset": name, "configuration": configuration,
            "trainer": variant.trainer, "plans": variant.plans, "folds": folds,
            "model_folder": f"{name}/{variant.folder.name}", "file_ending": variant.dataset_json["file_ending"],
            "channels": variant.dataset_json["channel_names"], "use_mirroring": use_mirroring,
            "tile_step_size": tile_step_size, "model_sha256": file_sha256(tmp / MODEL_ZIP),
            "input": {"layout": layout, "channel_folders": channel_folders, "output_subfolder": output_subfolder,
                      "example_ending": variant.dataset_json["file_ending"]},
            "versions": versions, "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "base_image": base_image or default_base_image(versions["torch"]),
            "image_name": re.sub(r"[^a-z0-9._-]+", "-", f"{name}-{variant.trainer}-{configuration}".lower()),
            "llm_note": llm_note,
        }
        (tmp / "predict.py").write_text(PREDICT_PY)
        (tmp / "Dockerfile").write_text(dockerfile(record))
        record["sha256"] = recorded_hashes(tmp)
        record["record_sha256"] = record_sha256(record)
        write_json(tmp / EXPORT_FILE, record)
        (tmp / "README.md").write_text(submission_readme(record))
        _replace(tmp, out)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(out.parent, export_size(variant, folds), "the submission") from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    echo(f"wrote {out}: {MODEL_ZIP} ({(out / MODEL_ZIP).stat().st_size / 2 ** 20:.1f} MiB), Dockerfile, predict.py, "
         f"README.md (nnU-Net's model export holds no ensemble: the chosen folds are ensembled at prediction); check "
         f"it with `nnunetv2-llm export --check {output}`")
    return out
