"""``export --check``: run a submission's entry point as its container would, offline, and compare its labels with
the stock ``nnUNetv2_predict`` on the same cases.

Before it runs, every file whose sha256 export recorded (model.zip, Dockerfile, predict.py, src/) must be unchanged.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.errors import UserError
from ..core.files import file_sha256, read_json, write_json
from .hashes import RECORDED, record_sha256, recorded_hashes
from .templates import submission_readme
from ..nnunet.image_names import CHANNEL
from .runtime import MODEL_ZIP, ExportError, load_record


def verify_recorded(folder: Path, record: dict) -> None:
    """The submission must be what export wrote: refuse one whose recorded files changed, naming them."""
    recorded = record.get("sha256")
    if not isinstance(recorded, dict) or set(recorded) != set(RECORDED) or "record_sha256" not in record:
        raise ExportError(f"{folder / 'export.json'} records no sha256 of {', '.join(RECORDED)} (a submission of "
                          f"nnunetv2-llm 0.2 or an edited record); export it again with `nnunetv2-llm export ... "
                          f"--overwrite`.")
    if record.get("record_sha256") != record_sha256(record):
        raise ExportError(f"{folder / 'export.json'} was edited after export (its content no longer hashes to the "
                          f"record_sha256 it holds): the container would not run what was exported and checked. "
                          f"Export again (`nnunetv2-llm export ... --overwrite`) rather than editing the record.")
    missing = [name for name in RECORDED if not (folder / name).exists()]
    if missing:
        raise ExportError(f"{folder} lacks {', '.join(missing)}, which export wrote; export it again.")
    now = recorded_hashes(folder)
    changed = [name for name in RECORDED if now[name] != recorded[name]]
    if changed:
        raise ExportError(f"{', '.join(changed)} of {folder} changed since export (sha256 differs from export.json): "
                          f"the container would not run what was exported and checked. Export again (`nnunetv2-llm "
                          f"export ... --overwrite`), or restore {' and '.join(changed)}.")


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
    from ..core.resolve import spec_in_plans
    plans = model_folder / "plans.json"
    spec = spec_in_plans(read_json(plans), record["configuration"], str(plans))
    if spec is None:
        return []
    from ..core.weights import local_source_path
    try:
        path = local_source_path(spec.source)
    except UserError:  # not here at all: out of reach already
        return []
    return [str(path)] if path is not None and path.exists() else []


def stage_inputs(cases_dir: Path, record: dict, staged: Path) -> tuple[list[str], dict[str, str]]:
    """Copy nnU-Net-named cases (CASE_0000.ext) into the platform layout the submission was exported for; the case
    names, and each staged copy's original (so a message about a copy names the user's file)."""
    ending = record["file_ending"]
    files = sorted(p for p in cases_dir.iterdir() if p.name.endswith(ending) and CHANNEL.match(p.name[: -len(ending)]))
    if not files:
        found = sorted({".nii.gz" if p.name.endswith(".nii.gz") else p.suffix or "(none)"
                        for p in cases_dir.iterdir() if p.is_file()})
        raise ExportError(f"no cases named CASE_0000{ending} in {cases_dir}: --check compares with nnUNetv2_predict, "
                          f"which reads the file ending the model was trained on ({ending}); the folder holds "
                          f"{'files ending in ' + ', '.join(found) if found else 'no files'}. Pass -i with {ending} "
                          f"images in nnU-Net's naming (CASE_0000{ending}; convert them first).")
    cases = sorted({CHANNEL.match(p.name[: -len(ending)])["case"] for p in files})
    layout = record["input"]
    origins = {}
    for path in files:
        match = CHANNEL.match(path.name[: -len(ending)])
        if layout["layout"] == "folders":
            target = staged / layout["channel_folders"][int(match["channel"])] / f"{match['case']}{ending}"
        else:
            target = staged / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        origins[str(target)] = str(path)
    return cases, origins


def originals(text: str, origins: dict[str, str]) -> str:
    """``text`` with every staged copy's path replaced by the user's file it was copied from."""
    for staged in sorted(origins, key=len, reverse=True):
        text = text.replace(staged, origins[staged])
    return text


class OfflineRun:
    """The entry point of a submission run as its container runs it: the model installed from a fresh copy of the
    zip into an empty nnU-Net tree, the submission's own copy of this package, hub offline with an empty cache,
    no network (a namespace without interfaces where the system allows one), and an audit hook that makes any
    connection, name lookup or opening of the LLM files, the hub cache or the original results fail loudly."""

    def __init__(self, folder: str | os.PathLike, work: Path, device: str = "cpu"):
        from ..nnunet.environment import nnunet_cli_env, run_nnunet
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
        installed = run_nnunet("nnUNetv2_install_pretrained_model_from_zip", [work / MODEL_ZIP], env=self.host_env)
        if installed.returncode != 0:
            raise ExportError(f"nnUNetv2_install_pretrained_model_from_zip failed (exit {installed.returncode}):\n"
                              f"{installed.stderr[-3000:]}")
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


TIE = 1e-3  # a voxel whose two most probable classes are this close is decided by floating-point summation order


def same_labels(ours: Path, theirs: Path, probabilities: Path | None = None) -> dict:
    """Voxels that differ, how many of them the stock run scores as a tie (its two top class probabilities, from
    ``nnUNetv2_predict --save_probabilities``, within :data:`TIE`), and whether size, spacing, origin and direction
    agree. Two processes may sum in another order (thread scheduling, MKL's code paths), which flips a tied voxel and
    nothing else."""
    import numpy as np
    import SimpleITK as sitk
    a, b = sitk.ReadImage(str(ours)), sitk.ReadImage(str(theirs))
    geometry = (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
                and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))
    if a.GetSize() != b.GetSize():
        return {"differing_voxels": -1, "tied_voxels": 0, "same_geometry": False}
    differs = sitk.GetArrayFromImage(a) != sitk.GetArrayFromImage(b)
    tied = 0
    if probabilities is not None and differs.any():
        stock = np.load(probabilities)["probabilities"]
        stock = stock.reshape(stock.shape[0], *differs.shape)
        top_two = np.sort(stock[:, differs], axis=0)[-2:]
        tied = int(np.sum(top_two[1] - top_two[0] < TIE))
    return {"differing_voxels": int(differs.sum()), "tied_voxels": tied, "same_geometry": bool(geometry)}


def agrees(case: dict) -> bool:
    """Same geometry, and every differing voxel a tie in the stock prediction."""
    return case["same_geometry"] and case["differing_voxels"] == case["tied_voxels"]


def check_submission(folder: str, input_dir: str | None = None, device: str = "cpu", echo=print) -> dict:
    """Run the entry point as the container would and compare it with ``nnUNetv2_predict``; raise on any difference."""
    from ..nnunet.environment import run_nnunet
    folder = Path(folder).expanduser().resolve()
    record = load_record(folder)
    if input_dir is not None and not Path(input_dir).is_dir():
        raise ExportError(f"-i {input_dir} is not a folder; pass a folder of cases in nnU-Net's naming "
                          f"(CASE_0000.ext), or leave -i out to use the dataset's imagesTs.")
    verify_recorded(folder, record)
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
        cases, origins = stage_inputs(Path(input_dir), record, work / "input")
        echo(f"entry point: {len(cases)} case(s), network "
             f"{'namespace without interfaces' if offline.netns else 'guarded'}, hub cache and LLM files out of reach")
        start = time.perf_counter()
        proc = offline.run(work / "input", work / "output", work / "timings.json")
        wall = time.perf_counter() - start
        if offline.refused:
            raise ExportError(f"the entry point reached for the network or for files it must not need: "
                              f"{offline.refused[:5]}. It must predict from the model zip alone.")
        if proc.returncode != 0:
            stderr = originals(proc.stderr, origins)
            raise ExportError(f"the entry point failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        timings = read_json(work / "timings.json")
        if not Path(timings["package"]).is_relative_to(folder / "src"):
            raise ExportError(f"the entry point imported nnunetv2_llm from {timings['package']}, not from the "
                              f"submission's copy in {folder / 'src'}; check PYTHONPATH.")
        stock = work / "stock"
        predict = ["-i", input_dir, "-o", stock, "-d", record["dataset"], "-c", record["configuration"],
                   "-tr", record["trainer"], "-p", record["plans"], "-f", *record["folds"],
                   "-step_size", record["tile_step_size"], "-device", device, "-npp", "1", "-nps", "1",
                   "--save_probabilities", *([] if record["use_mirroring"] else ["--disable_tta"])]
        stock_proc = run_nnunet("nnUNetv2_predict", predict, env=offline.host_env)
        if stock_proc.returncode != 0:
            raise ExportError(f"nnUNetv2_predict failed (exit {stock_proc.returncode}):\n{stock_proc.stderr[-3000:]}")
        out_dir = work / "output" / record["input"]["output_subfolder"]
        ending = record["file_ending"]
        compared = [{"case": case, **same_labels(out_dir / f"{case}{ending}", stock / f"{case}{ending}",
                                                 stock / f"{case}.npz")} for case in cases]
        bad = [c for c in compared if not agrees(c)]
        tied = sum(c["tied_voxels"] for c in compared)
        seconds = [t["seconds"] for t in timings["cases"]]
        report = {"cases": compared, "identical": not bad and not tied, "agrees": not bad, "tie": TIE,
                  "network": "namespace" if offline.netns else "audit guard",
                  "entry_point_seconds": round(wall, 2), "seconds_per_case": round(sum(seconds) / len(seconds), 3),
                  "device": device, "machine": f"{os.cpu_count()} CPU cores" if device == "cpu" else device}
        write_json(folder / "check.json", report)
        (folder / "README.md").write_text(submission_readme(record, report))
        if bad:
            raise ExportError(f"the entry point's labels differ from nnUNetv2_predict's beyond ties for {len(bad)} of "
                              f"{len(compared)} case(s): {bad[:3]}")
        same = "identical to nnUNetv2_predict" if not tied else (
            f"equal to nnUNetv2_predict but for {tied} voxel(s) it scores as a tie (top two probabilities within "
            f"{TIE:g})")
        echo(f"check passed: {len(compared)} case(s) {same}, geometry kept, no network; "
             f"{report['seconds_per_case']:.2f} s per case on {device} (entry point {wall:.1f} s in all, with start-up)")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


