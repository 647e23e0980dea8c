"""The text files of a submission written from its record: the Dockerfile, the entry point predict.py and the
README (build, run, expected runtime).
"""
from __future__ import annotations

import sys

from .runtime import EXPORT_FILE, IMAGE_ENDINGS, MODEL_ZIP

IMAGE_ROOT = "/opt/algorithm"


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
    tied = sum(case.get("tied_voxels", 0) for case in check["cases"])
    verdict = ("identical to" if check["identical"] else
               f"equal, but for {tied} voxel(s) it scores as a tie, to" if check.get("agrees") else "DIFFERENT from")
    return (f"\nMeasured by the check: {check['seconds_per_case']:.2f} s per case on {check['machine']} "
            f"({len(check['cases'])} case(s), labels {verdict} nnUNetv2_predict's; start-up of the entry point "
            f"included in its {check['entry_point_seconds']:.1f} s in all).\n")
