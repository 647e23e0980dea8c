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
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..core.files import (disk_full_error, file_sha256, honour_umask, is_disk_full, load_checkpoint, tree_sha256,
                          write_json)
from ..nnunet.results import TrainedRun, dataset_name, parse_folds, require_folder, resolve_run
from .runtime import EXPORT_FILE, EXPORT_FORMAT, IMAGE_ENDINGS, LAYOUTS, MODEL_ZIP, ExportError, inside_folder

IMAGE_ROOT = "/opt/algorithm"
# The packages whose versions decide what the model computes; the Dockerfile pins them (and our other requirements).
PINNED = ("torch", "nnunetv2", "transformers", "dynamic-network-architectures")
# The files of a submission whose sha256 export.json records (README.md is rewritten by --check, so it is not one).
RECORDED = ("Dockerfile", "predict.py", "src")


# ---------------------------------------------------------------- what is exported

def package_versions() -> dict[str, str]:
    """Installed versions of the pinned packages and of every runtime requirement of this package."""
    from packaging.requirements import Requirement
    names = list(PINNED)
    for line in importlib.metadata.requires("nnunetv2-llm") or []:
        req = Requirement(line)
        if req.marker is None and req.name not in names:
            names.append(req.name)
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            raise ExportError(f"{name} is not installed, yet this package requires it; reinstall nnunetv2-llm "
                              f"(`pip install nnunetv2-llm`) before exporting.") from None
    versions["nnunetv2-llm"] = importlib.metadata.version("nnunetv2-llm")
    return versions


def check_checkpoints(variant: TrainedRun, folds: list) -> str:
    """Load every exported fold's checkpoint (a damaged one is refused, naming it); an LLM model must pin its tensors
    (sha256) and every fold must have trained with the plans' spec. Returns the line the submission's README states
    about the model's LLM layer."""
    from ..core.resolve import spec_of_checkpoint
    from ..core.spec_differences import refuse_spec_mismatch
    plans_file = variant.folder / "plans.json"
    spec = variant.llm_spec()
    if spec is not None and spec.loads_pretrained and spec.sha256 is None:
        raise ExportError(
            f"{plans_file} records no sha256 for the LLM layer (layer {spec.layer} of {spec.source}), so nobody can "
            f"tell which tensors this model was trained with. Restore the record from the checkpoint with "
            f"`{variant.train_command(folds[0], ' --val')}` (version 0.1 checkpoints carry none: retrain "
            f"the folds), then export again.")
    for fold in folds:
        path = variant.checkpoint(fold)
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or checkpoint.get("trainer_name") != variant.trainer:
            raise ExportError(f"{path} is not an nnU-Net checkpoint of {variant.trainer} (no network weights or "
                              f"another trainer's); retrain fold {fold} (`{variant.train_command(fold)}`).")
        if spec is None:
            continue
        trained = spec_of_checkpoint(checkpoint)
        if trained is None:
            raise ExportError(f"{path} carries no LLM block: it was not trained with the plans in {plans_file}. "
                              f"Retrain fold {fold} (`{variant.train_command(fold)}`).")
        refuse_spec_mismatch(spec, trained,
                             f"fold {fold} trained another LLM block than {plans_file} describes ({{differences}}); "
                             f"retrain the fold or restore the plans it trained with.", "plans", "checkpoint",
                             error=ExportError)
    if spec is None:
        return "Plain nnU-Net model (no LLM block)."
    return (f"LLM layer {spec.layer} of {spec.source}, pinned by sha256 {spec.sha256}; every exported fold's "
            f"checkpoint was checked against it.")


def check_exportable_folds(variant: TrainedRun, folds: list) -> None:
    """What nnU-Net's exporter reads of each fold must exist; say which command writes what is missing."""
    for fold in folds:
        fold_dir = variant.fold_folder(fold)
        variant.require_done(fold)  # a final checkpoint and nnU-Net's final validation, which the exporter copies
        if not (fold_dir / "progress.png").is_file():
            raise ExportError(f"fold {fold} of {variant.folder.name} lacks progress.png, which nnU-Net's exporter "
                              f"copies and only training writes; copy it back from where the fold trained, or "
                              f"retrain the fold.")


def export_size(variant: TrainedRun, folds: list) -> int:
    """About the bytes a submission takes: the folds' final checkpoints (in model.zip) and this package's code."""
    package = Path(__file__).resolve().parents[1]
    code = sum(p.stat().st_size for p in package.rglob("*.py"))
    return sum(variant.checkpoint(fold).stat().st_size for fold in folds) + code


def recorded_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the files export wrote that decide what the container runs."""
    return {name: tree_sha256(folder / name) if (folder / name).is_dir() else file_sha256(folder / name)
            for name in RECORDED}


def record_sha256(record: dict) -> str:
    """sha256 of export.json's own content (all but this field), so an edited record is caught like an edited file."""
    import hashlib
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


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


def default_base_image(torch_version: str) -> str:
    """The PyTorch runtime image of the installed torch and CUDA (a plain Python image for a CPU-only torch)."""
    import torch
    if torch.version.cuda:
        return f"pytorch/pytorch:{torch_version}-cuda{torch.version.cuda}-cudnn9-runtime"
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def dockerfile(record: dict) -> str:
    versions = record["versions"]
    pins = " \\\n        ".join(f"{name}=={versions[name]}" for name in versions if name != "nnunetv2-llm")
    root = IMAGE_ROOT
    return f"""\
# Built by nnunetv2-llm {versions['nnunetv2-llm']} export: {record['model_folder']}, folds {record['folds']}.
# CPU-only machines: docker build --build-arg BASE_IMAGE=python:{record['python']}-slim .
ARG BASE_IMAGE={record['base_image']}
FROM ${{BASE_IMAGE}}

ENV PYTHONUNBUFFERED=1 \\
    HF_HUB_OFFLINE=1 \\
    TRANSFORMERS_OFFLINE=1 \\
    nnUNet_raw={root}/nnUNet_raw \\
    nnUNet_preprocessed={root}/nnUNet_preprocessed \\
    nnUNet_results={root}/nnUNet_results \\
    PYTHONPATH={root}/src \\
    nnUNet_extTrainer={root}/src/nnunetv2_llm/ext_trainers

# The versions installed when the model was exported (nnunetv2-llm {versions['nnunetv2-llm']} is copied in src/).
RUN python -m pip install --no-cache-dir \\
        {pins}

COPY src {root}/src
COPY {MODEL_ZIP} {EXPORT_FILE} predict.py {root}/
RUN mkdir -p {root}/nnUNet_raw {root}/nnUNet_preprocessed {root}/nnUNet_results \\
    && nnUNetv2_install_pretrained_model_from_zip {root}/{MODEL_ZIP} \\
    && rm {root}/{MODEL_ZIP}

WORKDIR {root}
ENTRYPOINT ["python", "{root}/predict.py"]
"""


PREDICT_PY = '''\
"""Challenge entry point: predict every case of the input folder into the output folder (see README.md).

Input and output folders from the arguments, else $INPUT_FOLDER / $OUTPUT_FOLDER, else the platforms' /input and
/output.
"""
import argparse
import os
import sys
from pathlib import Path

from nnunetv2_llm.nnunet.environment import DEVICES
from nnunetv2_llm.submission.runtime import run_container

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default=os.environ.get("INPUT_FOLDER", "/input"))
    parser.add_argument("--output", default=os.environ.get("OUTPUT_FOLDER", "/output"))
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--timings", help="write the per-case runtimes to this JSON file")
    args = parser.parse_args()
    sys.exit(run_container(Path(__file__).resolve().with_name("export.json"), Path(args.input), Path(args.output),
                           args.device, Path(args.timings) if args.timings else None))
'''


def submission_readme(record: dict, check: dict | None = None) -> str:
    layout = record["input"]
    if layout["layout"] == "nnunet":
        inputs = (f"one file per channel named `CASE_0000{layout['example_ending']}`, `CASE_0001...` (nnU-Net's naming; "
                  f"a single-channel model also takes `CASE{layout['example_ending']}`)")
    else:
        inputs = ("one subfolder per channel, in the model's channel order: "
                  + ", ".join(f"`{f}/CASE{layout['example_ending']}`" for f in layout["channel_folders"]))
    out = "/output/" + (layout["output_subfolder"] + "/" if layout["output_subfolder"] else "")
    return f"""\
# Submission: {record['model_folder']}

nnU-Net `{record['configuration']}` model `{record['trainer']}` (plans `{record['plans']}`) of {record['dataset']},
fold(s) {', '.join(map(str, record['folds']))} (ensembled when several), mirroring
{'on' if record['use_mirroring'] else 'off'}, tile step {record['tile_step_size']}. Exported by nnunetv2-llm
{record['versions']['nnunetv2-llm']} with nnunetv2 {record['versions']['nnunetv2']}, torch {record['versions']['torch']},
transformers {record['versions']['transformers']}. {record['llm_note']}

## Build

```bash
docker build -t {record['image_name']} .
# CPU-only machine or no CUDA image at hand:
docker build --build-arg BASE_IMAGE=python:{record['python']}-slim -t {record['image_name']} .
```

## Run as the platform does

Input: every image in `/input`: {inputs}. Types: the dataset's own `{record['file_ending']}` and
{', '.join(IMAGE_ENDINGS)}; `.json` files and hidden files are ignored. Output: one label image per case in
`{out}`, with the case's name, geometry and file type. Everything is checked before the first case is predicted; a bad
input folder exits with code 2 and writes nothing. The GPU is used when one is visible, else the CPU.

```bash
docker run --rm --network none --gpus all -v "$PWD/input:/input:ro" -v "$PWD/output:/output" {record['image_name']}
```

## Check without Docker

`nnunetv2-llm export --check .` runs `predict.py` as the container would, from a fresh copy of `model.zip`, with the
network cut, the hub cache and the LLM files out of reach, and compares its labels with `nnUNetv2_predict` on the same
cases. It records the runtime per case in `check.json`.
{measured(check)}"""


def measured(check: dict | None) -> str:
    if check is None:
        return "\nExpected runtime per case: not measured yet (run the check above).\n"
    verdict = "identical to" if check["identical"] else "DIFFERENT from"
    return (f"\nMeasured by the check: {check['seconds_per_case']:.2f} s per case on {check['machine']} "
            f"({len(check['cases'])} case(s), labels {verdict} nnUNetv2_predict's; start-up of the entry point "
            f"included in its {check['entry_point_seconds']:.1f} s in all).\n")




def _check_layout(variant: TrainedRun, layout: str, channel_folders: list[str], tile_step_size: float,
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
    variant = resolve_run(trainer, plans, name, configuration)
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
