"""``nnunetv2-llm export``: a folder that builds into a challenge container which predicts with no network.

The model travels as nnU-Net's own export (``nnUNetv2_export_model_to_zip``): checkpoints of the chosen folds,
plans with the LLM spec and its sha256, dataset.json. Inference builds the network from the plans and takes the
frozen layer from the checkpoints, so the image needs neither the hub nor the LLM files. The folder holds:

  model.zip     nnU-Net's export, installed into the image at build time
  src/          this package's code, exactly as it exported (trainers for ``nnUNet_extTrainer`` included)
  export.json   what was exported, the versions that were installed, the input/output convention
  predict.py    the entry point: every case of an input folder -> one label image per case in an output folder
  Dockerfile    a PyTorch CUDA runtime base with those exact versions pinned
  README.md     build, run, expected runtime

``export --check`` runs the entry point as the container would (fresh copy of the zip, no network, no hub cache,
the LLM files out of reach) and compares its labels with the stock ``nnUNetv2_predict``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import UserError
from .files import file_sha256, honour_umask, load_checkpoint, read_json, write_json

EXPORT_FORMAT = "nnunetv2-llm-submission"
EXPORT_FILE = "export.json"
MODEL_ZIP = "model.zip"
IMAGE_ROOT = "/opt/algorithm"
# The packages whose versions decide what the model computes; the Dockerfile pins them (and our other requirements).
PINNED = ("torch", "nnunetv2", "transformers", "dynamic-network-architectures")
# Image types the entry point reads besides the dataset's own file ending.
IMAGE_ENDINGS = (".mha", ".nii.gz", ".nrrd", ".tif", ".tiff")
IGNORED_SUFFIXES = (".json",)  # platform metadata next to the images (e.g. inputs.json)
LAYOUTS = ("nnunet", "folders")
CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class ExportError(UserError, ValueError):
    """A model that cannot be exported, a submission folder that is not ours, or input the entry point cannot read."""


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


def check_llm_provenance(variant, dataset: str, folds: list) -> str:
    """Every LLM configuration must pin its tensors (sha256) and every fold's checkpoint must have trained with the
    plans' spec. Returns the line the submission's README states about the model's LLM layer."""
    from .block import EXTRA_STATE, LLMBlock
    from .spec import PLANS_KEY, describe_differences, spec_differences, spec_from_entry
    plans_file = variant.folder / "plans.json"
    entry = variant.plans_json["configurations"][variant.configuration].get(PLANS_KEY)
    if entry is None:
        return "Plain nnU-Net model (no LLM block)."
    spec = spec_from_entry(entry, str(plans_file))
    if spec.loads_pretrained and spec.sha256 is None:
        raise ExportError(
            f"{plans_file} records no sha256 for the LLM layer (layer {spec.layer} of {spec.source}), so nobody can "
            f"tell which tensors this model was trained with. Restore the record from the checkpoint with "
            f"`{variant.train_command(dataset, folds[0], ' --val')}` (version 0.1 checkpoints carry none: retrain "
            f"the folds), then export again.")
    for fold in folds:
        path = variant.folder / f"fold_{fold}" / "checkpoint_final.pth"
        state = load_checkpoint(path)["network_weights"]
        record = state.get(f"llm.{EXTRA_STATE}")
        if record is None:
            raise ExportError(f"{path} carries no LLM block: it was not trained with the plans in {plans_file}. "
                              f"Retrain fold {fold} (`{variant.train_command(dataset, fold)}`).")
        trained = LLMBlock.recorded_spec(record)
        if trained is not None:
            differences = spec_differences(spec, trained)
            if differences:
                raise ExportError(f"fold {fold} trained another LLM block than {plans_file} describes "
                                  f"({describe_differences(differences, 'plans', 'checkpoint')}); retrain the fold or "
                                  f"restore the plans it trained with.")
    return (f"LLM layer {spec.layer} of {spec.source}, pinned by sha256 {spec.sha256}; every exported fold's "
            f"checkpoint was checked against it.")


def check_folds(variant, dataset: str, folds: list) -> None:
    """What nnU-Net's exporter reads of each fold must exist; say which command writes what is missing."""
    for fold in folds:
        fold_dir = variant.folder / f"fold_{fold}"
        if not (fold_dir / "checkpoint_final.pth").is_file():
            raise ExportError(f"fold {fold} of {variant.folder.name} has no checkpoint_final.pth (in {fold_dir}): "
                              f"finish its training (`{variant.train_command(dataset, fold)}`) or leave it out of -f.")
        if not (fold_dir / "validation" / "summary.json").is_file():
            raise ExportError(f"fold {fold} of {variant.folder.name} lacks validation/summary.json, which nnU-Net's "
                              f"exporter copies; write it with `{variant.train_command(dataset, fold, ' --val')}`.")
        if not (fold_dir / "progress.png").is_file():
            raise ExportError(f"fold {fold} of {variant.folder.name} lacks progress.png, which nnU-Net's exporter "
                              f"copies and only training writes; copy it back from where the fold trained, or "
                              f"retrain the fold.")


def copy_package(dest: Path) -> None:
    """This package's code as it runs here, with the trainers and presets as ordinary subpackages."""
    import importlib.util

    from .environment import trainers_folder
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = Path(__file__).parent
    shutil.copytree(package, dest / "nnunetv2_llm", ignore=ignore)
    shutil.copytree(trainers_folder(), dest / "nnunetv2_llm" / "ext_trainers", ignore=ignore, dirs_exist_ok=True)
    presets = Path(importlib.util.find_spec("nnunetv2_llm.plan_presets").submodule_search_locations[0])
    shutil.copytree(presets, dest / "nnunetv2_llm" / "plan_presets", ignore=ignore, dirs_exist_ok=True)


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
"""Challenge entry point: predict every case of the input folder into the output folder (see README.md)."""
import sys
from pathlib import Path

from nnunetv2_llm.export import container_main

if __name__ == "__main__":
    sys.exit(container_main(Path(__file__).resolve().with_name("export.json")))
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


def export_submission(dataset: str, configuration: str, trainer: str, plans: str, folds: list, output: str,
                      layout: str = "nnunet", channel_folders: list[str] | None = None, output_subfolder: str = "",
                      use_mirroring: bool = True, tile_step_size: float = 0.5, base_image: str | None = None,
                      overwrite: bool = False, echo=print) -> Path:
    """Check the model, then write the submission folder under a temporary name and move it into place."""
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from .compare import parse_folds, resolve_variant
    if not os.environ.get("nnUNet_results"):
        raise ExportError("nnUNet_results is not set; export it (see `nnunetv2-llm doctor`).")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ExportError(f"-d {dataset}: {e}") from None
    folds = parse_folds([str(f) for f in folds])
    variant = resolve_variant(trainer, plans, dataset_name, configuration)
    conf = variant.plans_json["configurations"].get(configuration, {})
    if conf.get("previous_stage") or configuration.endswith("cascade_fullres"):
        raise ExportError(f"-c {configuration} is a cascade stage: it needs the previous stage's predictions, which "
                          f"the entry point does not produce. Export a single-stage configuration (2d, 3d_fullres).")
    n_channels = len(variant.dataset_json["channel_names"])
    if layout not in LAYOUTS:
        raise ExportError(f"--layout {layout!r}: accepted are {', '.join(LAYOUTS)}.")
    channel_folders = list(channel_folders or [])
    if layout == "folders" and len(channel_folders) != n_channels:
        raise ExportError(f"--layout folders needs one --channel-folders name per input channel of the model "
                          f"({n_channels}: {', '.join(variant.dataset_json['channel_names'].values())}); got "
                          f"{len(channel_folders)}.")
    if layout == "nnunet" and channel_folders:
        raise ExportError("--channel-folders goes with --layout folders; drop it or add --layout folders.")
    if not 0 < tile_step_size <= 1:
        raise ExportError(f"--step-size {tile_step_size}: accepted is 0 < step <= 1 (nnU-Net's default 0.5).")
    check_folds(variant, dataset_name, folds)
    llm_note = check_llm_provenance(variant, dataset_name, folds)
    out = Path(output).expanduser().resolve()
    if out.exists() and not (out / EXPORT_FILE).is_file():
        raise ExportError(f"-o {output} exists and is not a submission folder written by export, so it is not "
                          f"replaced; pick another -o.")
    if out.exists() and not overwrite:
        raise ExportError(f"-o {output} exists; pass --overwrite to replace it, or pick another -o.")
    versions = package_versions()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        echo(f"exporting {variant.folder} folds {folds} (nnUNetv2_export_model_to_zip)")
        export_pretrained_model(dataset_name, str(tmp / MODEL_ZIP), configurations=(configuration,),
                                trainer=variant.trainer, plans_identifier=variant.plans, folds=tuple(folds))
        copy_package(tmp / "src")
        record = {
            "format": EXPORT_FORMAT, "dataset": dataset_name, "configuration": configuration,
            "trainer": variant.trainer, "plans": variant.plans, "folds": folds,
            "model_folder": f"{dataset_name}/{variant.folder.name}", "file_ending": variant.dataset_json["file_ending"],
            "channels": variant.dataset_json["channel_names"], "use_mirroring": use_mirroring,
            "tile_step_size": tile_step_size, "model_sha256": file_sha256(tmp / MODEL_ZIP),
            "input": {"layout": layout, "channel_folders": channel_folders, "output_subfolder": output_subfolder,
                      "example_ending": variant.dataset_json["file_ending"]},
            "versions": versions, "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "base_image": base_image or default_base_image(versions["torch"]),
            "image_name": re.sub(r"[^a-z0-9._-]+", "-", f"{dataset_name}-{variant.trainer}-{configuration}".lower()),
            "llm_note": llm_note,
        }
        write_json(tmp / EXPORT_FILE, record)
        (tmp / "predict.py").write_text(PREDICT_PY)
        (tmp / "Dockerfile").write_text(dockerfile(record))
        (tmp / "README.md").write_text(submission_readme(record))
        honour_umask(tmp, directory=True)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    echo(f"wrote {out}: {MODEL_ZIP} ({(out / MODEL_ZIP).stat().st_size / 2 ** 20:.1f} MiB), Dockerfile, predict.py, "
         f"README.md; check it with `nnunetv2-llm export --check {output}`")
    return out


def load_record(folder: Path) -> dict:
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        raise ExportError(f"{folder} is not a submission folder ({EXPORT_FILE} missing); write one with "
                          f"`nnunetv2-llm export -d D -c C -tr T -f F -o {folder}`.")
    record = read_json(path)
    if record.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} was not written by `nnunetv2-llm export`; export the model again.")
    return record


# ---------------------------------------------------------------- the entry point

def _ending(name: str, endings: list[str]) -> str | None:
    return next((e for e in sorted(endings, key=len, reverse=True) if name.lower().endswith(e)), None)


def find_cases(input_dir: Path, record: dict) -> dict[str, list[Path]]:
    """Case name -> its channel files in the model's order; any unreadable type or missing channel is an error that
    names the file or case, before anything is predicted."""
    n_channels = len(record["channels"])
    endings = sorted({record["file_ending"].lower(), *IMAGE_ENDINGS})
    layout = record["input"]

    def image_files(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise ExportError(f"input folder {folder} does not exist; mount the images there.")
        found = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.name.lower().endswith(IGNORED_SUFFIXES):
                continue
            ending = _ending(path.name, endings) if path.is_file() else None
            if ending is None:
                raise ExportError(f"{path}: not an image this model reads ({'a folder' if path.is_dir() else 'type'}"
                                  f"); accepted are files ending in {', '.join(endings)}. Convert it or remove it.")
            found[path.name[: -len(ending)]] = path
        return found

    cases: dict[str, list[Path]] = {}
    if layout["layout"] == "folders":
        per_channel = []
        for name in layout["channel_folders"]:
            per_channel.append(image_files(input_dir / name))
        names = set().union(*per_channel)
        for name in sorted(names):
            missing = [f for f, files in zip(layout["channel_folders"], per_channel) if name not in files]
            if missing:
                raise ExportError(f"case {name!r} has no image in channel folder(s) {', '.join(missing)}; every case "
                                  f"needs one file per channel ({', '.join(layout['channel_folders'])}).")
            cases[name] = [files[name] for files in per_channel]
    else:
        grouped: dict[str, dict[int, Path]] = {}
        for stem, path in image_files(input_dir).items():
            match = CHANNEL.match(stem)
            if match is None and n_channels == 1:
                grouped.setdefault(stem, {})[0] = path
            elif match is None:
                raise ExportError(f"{path}: the model takes {n_channels} channels, so files are named CASE_0000, "
                                  f"CASE_0001, ... (nnU-Net's naming); rename it.")
            else:
                grouped.setdefault(match["case"], {})[int(match["channel"])] = path
        for name, files in sorted(grouped.items()):
            if sorted(files) != list(range(n_channels)):
                expected = ", ".join(f"_{c:04d}" for c in range(n_channels))
                got = ", ".join(f"_{c:04d}" for c in sorted(files))
                raise ExportError(f"case {name!r} has channel files {got}; the model takes {n_channels} channel(s): "
                                  f"{expected} ({', '.join(record['channels'].values())}). Add or rename the files.")
            cases[name] = [files[c] for c in range(n_channels)]
    if not cases:
        raise ExportError(f"no images in {input_dir}; accepted are files ending in {', '.join(endings)}.")
    import SimpleITK as sitk
    for name, files in cases.items():
        endings_used = {_ending(f.name, endings) for f in files}
        if len(endings_used) > 1:
            raise ExportError(f"case {name!r} mixes file types {sorted(endings_used)}; give all its channels one type.")
        for path in files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise ExportError(f"{path} cannot be read as an image (damaged, or not what its name says); replace "
                                  f"it with a readable {_ending(path.name, endings)} file.") from None
    return cases


def reader_writer(ending: str, example: Path, dataset_json: dict, dims: int):
    """nnU-Net's reader/writer for a file: the dataset's own for its file ending (as nnUNetv2_predict reads it),
    otherwise the one nnU-Net picks for that ending (TIFFs by the model's dimensionality)."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.reader_writer_registry import (determine_reader_writer_from_dataset_json,
                                                         determine_reader_writer_from_file_ending)
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO
    if ending == dataset_json["file_ending"].lower():
        return determine_reader_writer_from_dataset_json(dataset_json, str(example), verbose=False)
    if ending in (".tif", ".tiff"):
        return NaturalImage2DIO if dims == 2 else Tiff3DIO
    return determine_reader_writer_from_file_ending(ending, str(example), verbose=False)


def predict_folder(record: dict, model_folder: Path, input_dir: Path, output_dir: Path, device: str = "auto",
                   echo=print) -> list[dict]:
    """The entry point's work: check every input, then predict case by case; each label image appears only
    complete (written under a hidden name, then renamed)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from .environment import ensure_trainer_lookup
    cases = find_cases(input_dir, record)
    output_dir = output_dir / record["input"]["output_subfolder"] if record["input"]["output_subfolder"] else output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    ensure_trainer_lookup()
    predictor = nnUNetPredictor(tile_step_size=record["tile_step_size"], use_gaussian=True,
                                use_mirroring=record["use_mirroring"], perform_everything_on_device=device == "cuda",
                                device=torch.device(device), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), tuple(record["folds"]), "checkpoint_final.pth")
    dims = len(predictor.configuration_manager.patch_size)
    endings = sorted({record["file_ending"].lower(), *IMAGE_ENDINGS})
    timings = []
    for name, files in cases.items():
        start = time.perf_counter()
        ending = _ending(files[0].name, endings)
        io = reader_writer(ending, files[0], predictor.dataset_json, dims)()
        image, properties = io.read_images([str(f) for f in files])
        segmentation = predictor.predict_single_npy_array(image, properties, None, None, False)
        target = output_dir / f"{name}{ending}"
        tmp = output_dir / f".{name}.partial{ending}"
        io.write_seg(segmentation, str(tmp), properties)
        os.replace(tmp, target)
        seconds = time.perf_counter() - start
        timings.append({"case": name, "seconds": round(seconds, 3), "output": target.name})
        echo(f"{name}: {target} ({seconds:.1f} s on {device})")
    return timings


def container_main(record_file: Path, argv=None) -> int:
    """``predict.py``: input and output folders from the arguments, else $INPUT_FOLDER/$OUTPUT_FOLDER, else the
    platforms' /input and /output."""
    parser = argparse.ArgumentParser(description="Predict every case of the input folder (see README.md).")
    parser.add_argument("--input", default=os.environ.get("INPUT_FOLDER", "/input"))
    parser.add_argument("--output", default=os.environ.get("OUTPUT_FOLDER", "/output"))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--timings", help="write the per-case runtimes to this JSON file")
    args = parser.parse_args(argv)
    try:
        record = load_record(record_file.parent)
        results = os.environ.get("nnUNet_results")
        if not results:
            raise ExportError("nnUNet_results is not set; the Dockerfile sets it to where the model is installed.")
        model_folder = Path(results) / record["model_folder"]
        if not (model_folder / "plans.json").is_file():
            raise ExportError(f"no model in {model_folder}; install it with `nnUNetv2_install_pretrained_model_from_zip "
                              f"{MODEL_ZIP}` (the Dockerfile does this at build time).")
        timings = predict_folder(record, model_folder, Path(args.input), Path(args.output), args.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.timings:
        write_json(args.timings, {"package": str(Path(__file__).resolve().parent), "cases": timings})
    return 0


# ---------------------------------------------------------------- --check

GUARD = '''\
import os, runpy, socket, sys
forbidden = [os.path.realpath(p) for p in os.environ.pop("NNUNETV2_LLM_FORBIDDEN", "").split(os.pathsep) if p]
log = os.environ.pop("NNUNETV2_LLM_ATTEMPTS")

def refuse(what):
    with open(log, "a") as f:
        f.write(what + "\\n")
    raise PermissionError(f"offline check: {what}")

def hook(event, args):
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        refuse(f"network connection to {args[1]!r}")
    elif event == "socket.getaddrinfo" and args[0] not in (None, "localhost", "127.0.0.1", "::1"):
        refuse(f"name lookup of {args[0]!r}")
    elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and forbidden:
        path = os.path.realpath(os.fsdecode(args[0]))
        if any(path == p or path.startswith(p + os.sep) for p in forbidden):
            refuse(f"opened {path}")

sys.addaudithook(hook)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''


def network_namespace_prefix() -> list[str]:
    """``unshare --net`` where this system lets the process have a network namespace of its own (no interfaces but
    loopback, which is down), else nothing: the audit-hook guard still makes every connection attempt fail loudly."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for prefix in ([unshare, "--net"], [unshare, "--user", "--map-root-user", "--net"]):
        probe = subprocess.run([*prefix, sys.executable, "-c", "import socket; socket.getaddrinfo('localhost', 1)"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return []


def llm_sources(record: dict, model_folder: Path) -> list[str]:
    """The local LLM files the plans name (what the image must not need)."""
    from .spec import PLANS_KEY
    entry = read_json(model_folder / "plans.json")["configurations"][record["configuration"]].get(PLANS_KEY) or {}
    if not entry.get("source"):
        return []
    from .weights import local_source_path
    try:
        path = local_source_path(entry["source"])
    except UserError:  # not here at all: out of reach already
        return []
    return [str(path)] if path is not None and path.exists() else []


def stage_inputs(cases_dir: Path, record: dict, staged: Path) -> list[str]:
    """Copy nnU-Net-named cases (CASE_0000.ext) into the platform layout the submission was exported for."""
    ending = record["file_ending"]
    files = sorted(p for p in cases_dir.iterdir() if p.name.endswith(ending) and CHANNEL.match(p.name[: -len(ending)]))
    if not files:
        raise ExportError(f"no cases named CASE_0000{ending} in {cases_dir}; pass -i with images in nnU-Net's naming.")
    cases = sorted({CHANNEL.match(p.name[: -len(ending)])["case"] for p in files})
    layout = record["input"]
    for path in files:
        match = CHANNEL.match(path.name[: -len(ending)])
        if layout["layout"] == "folders":
            target = staged / layout["channel_folders"][int(match["channel"])] / f"{match['case']}{ending}"
        else:
            target = staged / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return cases


class OfflineRun:
    """The entry point of a submission run as its container runs it: the model installed from a fresh copy of the
    zip into an empty nnU-Net tree, the submission's own copy of this package, hub offline with an empty cache,
    no network (a namespace without interfaces where the system allows one), and an audit hook that makes any
    connection, name lookup or opening of the LLM files, the hub cache or the original results fail loudly."""

    def __init__(self, folder: str | os.PathLike, work: Path, device: str = "cpu"):
        from .environment import cli_path, nnunet_cli_env
        self.folder = Path(folder).expanduser().resolve()
        self.record = load_record(self.folder)
        self.work, self.device = work, device
        zip_file = self.folder / MODEL_ZIP
        if not zip_file.is_file() or file_sha256(zip_file) != self.record["model_sha256"]:
            raise ExportError(f"{zip_file} is missing or differs from the one exported (sha256 "
                              f"{self.record['model_sha256']}); export again.")
        self.results = work / "nnUNet_results"
        for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "hf_home"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(zip_file, work / MODEL_ZIP)
        self.host_env = nnunet_cli_env(work / "nnUNet_raw", work / "nnUNet_preprocessed", self.results, device)
        subprocess.run([cli_path("nnUNetv2_install_pretrained_model_from_zip"), str(work / MODEL_ZIP)],
                       env=self.host_env, check=True, capture_output=True)
        (work / MODEL_ZIP).unlink()
        from huggingface_hub import constants
        original = os.environ.get("nnUNet_results")
        self.forbidden = [*llm_sources(self.record, self.results / self.record["model_folder"]),
                          constants.HF_HUB_CACHE, *([str(Path(original) / self.record["dataset"])] if original else [])]
        self.attempts = work / "offline_attempts.log"
        self.guard = work / "guard.py"
        self.guard.write_text(GUARD)
        self.netns = network_namespace_prefix()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "nnUNet_", "PYTHONPATH"))}
        env.update({
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(self.work / "hf_home"),
            "nnUNet_raw": str(self.work / "nnUNet_raw"), "nnUNet_preprocessed": str(self.work / "nnUNet_preprocessed"),
            "nnUNet_results": str(self.results), "PYTHONPATH": str(self.folder / "src"),
            "nnUNet_extTrainer": str(self.folder / "src" / "nnunetv2_llm" / "ext_trainers"), "PYTHONUNBUFFERED": "1",
            "NNUNETV2_LLM_FORBIDDEN": os.pathsep.join(self.forbidden), "NNUNETV2_LLM_ATTEMPTS": str(self.attempts),
        })
        if self.device == "cpu":
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def run(self, input_dir: Path, output_dir: Path, timings: Path | None = None) -> subprocess.CompletedProcess:
        """One run of predict.py; ``.attempts`` lists what the guard refused (empty when it stayed offline)."""
        self.attempts.write_text("")
        command = [*self.netns, sys.executable, str(self.guard), str(self.folder / "predict.py"),
                   "--input", str(input_dir), "--output", str(output_dir), "--device", self.device,
                   *(["--timings", str(timings)] if timings else [])]
        return subprocess.run(command, env=self.env(), capture_output=True, text=True, cwd=self.work)

    @property
    def refused(self) -> list[str]:
        return self.attempts.read_text().splitlines()


def same_labels(ours: Path, theirs: Path) -> dict:
    """Voxels that differ, and whether size, spacing, origin and direction agree."""
    import numpy as np
    import SimpleITK as sitk
    a, b = sitk.ReadImage(str(ours)), sitk.ReadImage(str(theirs))
    differing = int(np.sum(sitk.GetArrayFromImage(a) != sitk.GetArrayFromImage(b))) if a.GetSize() == b.GetSize() \
        else -1
    geometry = (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
                and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))
    return {"differing_voxels": differing, "same_geometry": bool(geometry)}


def check_submission(folder: str, input_dir: str | None = None, device: str = "cpu", echo=print) -> dict:
    """Run the entry point as the container would and compare it with ``nnUNetv2_predict``; raise on any difference."""
    from .environment import cli_path
    folder = Path(folder).expanduser().resolve()
    record = load_record(folder)
    if input_dir is None:
        raw = os.environ.get("nnUNet_raw")
        candidate = Path(raw) / record["dataset"] / "imagesTs" if raw else None
        if candidate is None or not candidate.is_dir():
            raise ExportError("no test images: pass -i FOLDER with cases in nnU-Net's naming (CASE_0000.ext), or set "
                              f"nnUNet_raw so that {record['dataset']}/imagesTs is found.")
        input_dir = str(candidate)
    work = Path(tempfile.mkdtemp(prefix="nnunetv2-llm-check-"))
    try:
        offline = OfflineRun(folder, work, device)
        cases = stage_inputs(Path(input_dir), record, work / "input")
        echo(f"entry point: {len(cases)} case(s), network "
             f"{'namespace without interfaces' if offline.netns else 'guarded'}, hub cache and LLM files out of reach")
        start = time.perf_counter()
        proc = offline.run(work / "input", work / "output", work / "timings.json")
        wall = time.perf_counter() - start
        if offline.refused:
            raise ExportError(f"the entry point reached for the network or for files it must not need: "
                              f"{offline.refused[:5]}. It must predict from the model zip alone.")
        if proc.returncode != 0:
            raise ExportError(f"the entry point failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        timings = read_json(work / "timings.json")
        if not Path(timings["package"]).is_relative_to(folder / "src"):
            raise ExportError(f"the entry point imported nnunetv2_llm from {timings['package']}, not from the "
                              f"submission's copy in {folder / 'src'}; check PYTHONPATH.")
        stock = work / "stock"
        predict = [cli_path("nnUNetv2_predict"), "-i", str(input_dir), "-o", str(stock),
                   "-d", record["dataset"], "-c", record["configuration"], "-tr", record["trainer"],
                   "-p", record["plans"], "-f", *map(str, record["folds"]), "-step_size", str(record["tile_step_size"]),
                   "-device", device, "-npp", "1", "-nps", "1", *([] if record["use_mirroring"] else ["--disable_tta"])]
        stock_proc = subprocess.run(predict, env=offline.host_env, capture_output=True, text=True)
        if stock_proc.returncode != 0:
            raise ExportError(f"nnUNetv2_predict failed (exit {stock_proc.returncode}):\n{stock_proc.stderr[-3000:]}")
        out_dir = work / "output" / record["input"]["output_subfolder"]
        ending = record["file_ending"]
        compared = [{"case": case, **same_labels(out_dir / f"{case}{ending}", stock / f"{case}{ending}")}
                    for case in cases]
        bad = [c for c in compared if c["differing_voxels"] or not c["same_geometry"]]
        seconds = [t["seconds"] for t in timings["cases"]]
        report = {"cases": compared, "identical": not bad, "network": "namespace" if offline.netns else "audit guard",
                  "entry_point_seconds": round(wall, 2), "seconds_per_case": round(sum(seconds) / len(seconds), 3),
                  "device": device, "machine": f"{os.cpu_count()} CPU cores" if device == "cpu" else device}
        write_json(folder / "check.json", report)
        (folder / "README.md").write_text(submission_readme(record, report))
        if bad:
            raise ExportError(f"the entry point's labels differ from nnUNetv2_predict's for {len(bad)} of "
                              f"{len(compared)} case(s): {bad[:3]}")
        echo(f"check passed: {len(compared)} case(s) identical to nnUNetv2_predict, geometry kept, no network; "
             f"{report['seconds_per_case']:.2f} s per case on {device} (entry point {wall:.1f} s in all, with start-up)")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_export(args) -> int:
    if args.check:
        check_submission(args.check, args.input, args.device)
        return 0
    missing = [flag for flag, value in (("-d", args.dataset), ("-c", args.configuration), ("-o", args.output))
               if value is None]
    if missing:
        raise ExportError(f"export needs {', '.join(missing)} (or --check FOLDER to check a submission).")
    export_submission(args.dataset, args.configuration, args.trainer, args.plans, args.folds, args.output,
                      layout=args.layout, channel_folders=args.channel_folders, output_subfolder=args.output_subfolder,
                      use_mirroring=not args.disable_tta, tile_step_size=args.step_size, base_image=args.base_image,
                      overwrite=args.overwrite)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a challenge container folder that predicts offline; --check it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", help="dataset id or name")
    p.add_argument("-c", "--configuration", help="nnU-Net configuration (single-stage: 2d, 3d_fullres, 3d_lowres)")
    p.add_argument("-tr", "--trainer", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to ensemble")
    p.add_argument("-o", "--output", help="submission folder to write (must not exist)")
    p.add_argument("--layout", default="nnunet", choices=LAYOUTS,
                   help="input layout: nnunet (CASE_0000.ext per channel) or folders (one subfolder per channel)")
    p.add_argument("--channel-folders", nargs="+", help="with --layout folders: one subfolder name per channel")
    p.add_argument("--output-subfolder", default="", help="write the labels into /output/THIS (default: /output)")
    p.add_argument("--disable-tta", action="store_true", help="predict without mirroring (as nnUNetv2_predict's)")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window tile step (default 0.5)")
    p.add_argument("--base-image", help="Docker base image (default: the PyTorch CUDA runtime of the installed torch)")
    p.add_argument("--overwrite", action="store_true", help="replace a submission folder written by export")
    p.add_argument("--check", metavar="FOLDER", help="run FOLDER's entry point offline and compare with nnUNetv2_predict")
    p.add_argument("-i", "--input", help="with --check: cases in nnU-Net's naming (default: the dataset's imagesTs)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="with --check: device (default cpu)")
    p.set_defaults(func=cmd_export)
