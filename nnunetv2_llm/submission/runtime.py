"""The container's entry point: every case of an input folder -> one label image per case in an output folder.

This is what ``predict.py`` in a submission imports; it needs nnU-Net, the model installed from the zip and this
package's trainers, and nothing else (no hub, no LLM files, no network).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.files import read_json
from ..nnunet.image_names import CHANNEL

EXPORT_FORMAT = "nnunetv2-llm-submission"
EXPORT_FILE = "export.json"
MODEL_ZIP = "model.zip"
# Image types the entry point reads besides the dataset's own file ending.
IMAGE_ENDINGS = (".mha", ".nii.gz", ".nrrd", ".tif", ".tiff")
IGNORED_SUFFIXES = (".json",)  # platform metadata next to the images (e.g. inputs.json)
LAYOUTS = ("nnunet", "folders")


class ExportError(UserError, ValueError):
    """A model that cannot be exported, a submission folder that is not ours, or input the entry point cannot read."""


def inside_folder(value: str, option: str) -> str:
    """A subfolder the record names (labels go to /output/VALUE, channels come from /input/VALUE) must stay inside
    its folder: an absolute path or one with ``..`` would let the container write or read elsewhere."""
    if Path(value).is_absolute() or ".." in Path(value).parts:
        raise ExportError(f"{option} {value!r} leaves its folder (absolute, or with '..'): the container may only "
                          f"write inside /output and read inside /input. Give a relative path such as "
                          f"'images/segmentation', or leave it out.")
    return value


def labels_folder(output_dir: Path, subfolder: str) -> Path:
    """``output_dir/subfolder`` with every symbolic link on the way followed: refused when it leaves ``output_dir``
    (the container writes only inside /output; a link such as /output/images -> /elsewhere would lead out)."""
    base = Path(output_dir).resolve()
    target = (base / subfolder).resolve() if subfolder else base
    if target != base and base not in target.parents:
        raise ExportError(f"output_subfolder {subfolder!r} leads to {target} through a symbolic link, outside the "
                          f"output folder {output_dir}: the container writes only inside it. Replace the link by a "
                          f"folder, or export with another --output-subfolder.")
    return target


def check_record_paths(record: dict, where: Path) -> None:
    """The record's subfolders stay inside /input and /output (an edited or hand-made export.json included)."""
    layout = record.get("input") or {}
    try:
        inside_folder(layout.get("output_subfolder") or "", "output_subfolder")
        for name in layout.get("channel_folders") or []:
            inside_folder(name, "channel folder")
    except ExportError as e:
        raise ExportError(f"{where / EXPORT_FILE}: {e}") from None


def load_record(folder: Path) -> dict:
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        raise ExportError(f"{folder} is not a submission folder ({EXPORT_FILE} missing); write one with "
                          f"`nnunetv2-llm export -d D -c C -tr T -f F -o {folder}`.")
    record = read_json(path, fix="export the model again (`nnunetv2-llm export ... --overwrite`)")
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} was not written by `nnunetv2-llm export`; export the model again.")
    check_record_paths(record, Path(folder))
    return record


def endings_read(record: dict) -> list[str]:
    return sorted({record["file_ending"].lower(), *IMAGE_ENDINGS})


def _ending(name: str, endings: list[str]) -> str | None:
    return next((e for e in sorted(endings, key=len, reverse=True) if name.lower().endswith(e)), None)


def _image_files(folder: Path, endings: list[str]) -> dict[str, Path]:
    """Stem -> image file of a folder; anything else there (but metadata and hidden files) is an error."""
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


def _cases_in_channel_folders(input_dir: Path, record: dict, endings: list[str]) -> dict[str, list[Path]]:
    folders = record["input"]["channel_folders"]
    per_channel = [_image_files(input_dir / name, endings) for name in folders]
    cases = {}
    for name in sorted(set().union(*per_channel)):
        missing = [f for f, files in zip(folders, per_channel) if name not in files]
        if missing:
            raise ExportError(f"case {name!r} has no image in channel folder(s) {', '.join(missing)}; every case "
                              f"needs one file per channel ({', '.join(folders)}).")
        cases[name] = [files[name] for files in per_channel]
    return cases


def _cases_in_nnunet_naming(input_dir: Path, record: dict, endings: list[str]) -> dict[str, list[Path]]:
    n_channels = len(record["channels"])
    grouped: dict[str, dict[int, Path]] = {}
    for stem, path in _image_files(input_dir, endings).items():
        match = CHANNEL.match(stem)
        if match is None and n_channels == 1:
            grouped.setdefault(stem, {})[0] = path
        elif match is None:
            raise ExportError(f"{path}: the model takes {n_channels} channels, so files are named CASE_0000, "
                              f"CASE_0001, ... (nnU-Net's naming); rename it.")
        else:
            grouped.setdefault(match["case"], {})[int(match["channel"])] = path
    cases = {}
    for name, files in sorted(grouped.items()):
        if sorted(files) != list(range(n_channels)):
            expected = ", ".join(f"_{c:04d}" for c in range(n_channels))
            got = ", ".join(f"_{c:04d}" for c in sorted(files))
            raise ExportError(f"case {name!r} has channel files {got}; the model takes {n_channels} channel(s): "
                              f"{expected} ({', '.join(record['channels'].values())}). Add or rename the files.")
        cases[name] = [files[c] for c in range(n_channels)]
    return cases


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without its pixels."""
    path: Path
    dimension: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    components: int

    @classmethod
    def read(cls, path: Path, ending: str) -> "ImageHeader":
        import SimpleITK as sitk
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ExportError(f"{path} cannot be read as an image (damaged, or not what its name says); replace "
                              f"it with a readable {ending} file.") from None
        return cls(path, reader.GetDimension(), tuple(reader.GetSize()), tuple(reader.GetSpacing()),
                   reader.GetNumberOfComponents())


def _check_header(header: ImageHeader, dims: int) -> None:
    """One file is one channel: a scalar 2D or 3D image (3D for a 3D model; a 2D model predicts a 3D image slice by
    slice)."""
    accepted = "3D" if dims == 3 else "2D or 3D"
    if header.dimension not in ((3,) if dims == 3 else (2, 3)):
        raise ExportError(f"{header.path} is a {header.dimension}D image (size {header.size}); the model takes "
                          f"{accepted} images, one file per channel. Split it into one {accepted} file per channel.")
    if header.components != 1:
        raise ExportError(f"{header.path} has {header.components} components per pixel (a vector or colour "
                          f"image); the model takes one scalar image per channel. Save each component as its own "
                          f"channel file (CASE_0000, CASE_0001, ...), or convert it to grey values.")


def _check_readable(cases: dict[str, list[Path]], endings: list[str], dims: int) -> None:
    """Every file's header, before anything is predicted: readable, one scalar 2D/3D image per channel, and the
    channels of a case on one grid (nnU-Net refuses them otherwise, with a traceback)."""
    for name, files in cases.items():
        used = {_ending(f.name, endings) for f in files}
        if len(used) > 1:
            raise ExportError(f"case {name!r} mixes file types {sorted(used)}; give all its channels one type.")
        headers = [ImageHeader.read(path, _ending(path.name, endings)) for path in files]
        for header in headers:
            _check_header(header, dims)
        first = headers[0]
        for other in headers[1:]:
            if other.size != first.size or not all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8)
                                                   for a, b in zip(other.spacing, first.spacing)):
                raise ExportError(f"case {name!r}: its channel files differ in shape or spacing ({first.path.name}: "
                                  f"size {first.size}, spacing {first.spacing}; {other.path.name}: size "
                                  f"{other.size}, spacing {other.spacing}); all channels of a case must share one "
                                  f"grid. Resample them onto the first channel's grid.")


def find_cases(input_dir: Path, record: dict, dims: int) -> dict[str, list[Path]]:
    """Case name -> its channel files in the model's order; any unreadable type, missing channel or header the model
    cannot take (``dims``: the model's dimensionality) is an error that names the file or case, before anything
    is predicted."""
    endings = endings_read(record)
    by_layout = _cases_in_channel_folders if record["input"]["layout"] == "folders" else _cases_in_nnunet_naming
    cases = by_layout(input_dir, record, endings)
    if not cases:
        raise ExportError(f"no images in {input_dir}; accepted are files ending in {', '.join(endings)}.")
    _check_readable(cases, endings, dims)
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


def model_dims(model_folder: Path, configuration: str) -> int:
    """2 or 3: the dimensionality of the installed model's configuration (its patch size)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = read_json(model_folder / "plans.json", fix="install the model again from model.zip")
    return len(PlansManager(plans).get_configuration(configuration).patch_size)


def predict_folder(record: dict, model_folder: Path, input_dir: Path, output_dir: Path, device: str = "auto",
                   echo=print) -> list[dict]:
    """The entry point's work: check every input, then predict case by case; each label image appears only
    complete (written under a hidden name, then renamed)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from ..nnunet.environment import ensure_trainer_lookup, resolve_device
    dims = model_dims(model_folder, record["configuration"])
    cases = find_cases(input_dir, record, dims)
    output_dir = labels_folder(output_dir, record["input"]["output_subfolder"])
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    ensure_trainer_lookup()
    predictor = nnUNetPredictor(tile_step_size=record["tile_step_size"], use_gaussian=True,
                                use_mirroring=record["use_mirroring"], perform_everything_on_device=device == "cuda",
                                device=torch.device(device), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), tuple(record["folds"]), "checkpoint_final.pth")
    endings = endings_read(record)
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


def run_container(record_file: Path, input_dir: Path, output_dir: Path, device: str = "auto",
                  timings_file: Path | None = None) -> int:
    """What ``predict.py`` runs: the model installed where the Dockerfile put it, every case of ``input_dir``
    predicted into ``output_dir``; exit code 2 and one line for bad input or a model that is not installed."""
    from ..core.files import write_json
    try:
        record = load_record(record_file.parent)
        results = os.environ.get("nnUNet_results")
        if not results:
            raise ExportError("nnUNet_results is not set; the Dockerfile sets it to where the model is installed.")
        model_folder = Path(results) / record["model_folder"]
        if not (model_folder / "plans.json").is_file():
            raise ExportError(f"no model in {model_folder}; install it with `nnUNetv2_install_pretrained_model_from_zip "
                              f"{MODEL_ZIP}` (the Dockerfile does this at build time).")
        timings = predict_folder(record, model_folder, input_dir, output_dir, device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if timings_file:
        write_json(timings_file, {"package": str(Path(__file__).resolve().parents[1]), "cases": timings})
    return 0
