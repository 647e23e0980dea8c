"""nnunetv2-llm demo: the paper's question on generated data, offline, with the stock nnU-Net CLIs.

Synthetic 2D dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train of plain nnU-Net and of
nnU-Net with the frozen SmolLM2 layer (real pretrained weights shipped in a Python package, no hub), at
the same length -> nnunetv2-llm compare of the two on the held-out cases (predicted with the stock
nnUNetv2_predict): Dice, NSD and HD95, the paired difference with its CI and p-value. Every file
goes under one folder; a rerun reuses finished steps.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import subprocess
import time
from collections import deque
from pathlib import Path

from ..core.errors import UserError
from ..core.terminal import console as make_console
from ..nnunet.environment import CPU_TRAINING_SETTINGS, cli_path, cpu_advice, nnunet_cli_env
from ..nnunet.lengths import LENGTHS
from .options import DEFAULT_PLANS, DEVICES

DEFAULT_FOLDER = "nnunetv2_llm_demo"
DEFAULT_LENGTH = "_10epochs_20its"
DATASET_ID = 501
CONFIGURATION = "2d"
FOLD = "0"
NUM_TRAIN, NUM_TEST = 20, 8
HELD_OUT = "held-out"
MARKER = ".nnunetv2-llm-demo"
EPOCH_DONE = re.compile(r"Epoch time: ")


class DemoError(UserError, RuntimeError):
    """A demo step failed or the folder cannot be used; the message says why and what to do."""


def claim_folder(folder: Path) -> None:
    """Use ``folder`` only if it is new, empty, or a previous demo's: never mix into other files."""
    if folder.exists() and not folder.is_dir():
        raise DemoError(f"--folder {folder} is a file; pass a new or empty folder.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise DemoError(f"--folder {folder} holds files that are not from a previous demo; refusing to write "
                        f"there. Pass a new or empty folder (default ./{DEFAULT_FOLDER}).")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by `nnunetv2-llm demo`; a rerun reuses the finished steps here\n")


class DemoPaths:
    """Where each step reads and writes; all of it under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        self.logs, self.cache, self.report = root / "logs", root / "cache", root / "compare"
        self.dataset = self.raw / f"Dataset{DATASET_ID:03d}_Synth2D"
        self.plans = self.preprocessed / self.dataset.name / "nnUNetPlans.json"
        self.data = self.preprocessed / self.dataset.name / f"nnUNetPlans_{CONFIGURATION}"

    def checkpoint(self, trainer: str) -> Path:
        from ..nnunet.results import FINAL_CHECKPOINT, results_folder
        return (results_folder(self.dataset.name, trainer, DEFAULT_PLANS, CONFIGURATION, self.results)
                / f"fold_{FOLD}" / FINAL_CHECKPOINT)

    def predictions(self, trainer: str) -> Path:
        """Where compare keeps a variant's predictions of the held-out cases."""
        return self.report / "external" / HELD_OUT / trainer

    def preprocessed_complete(self) -> bool:
        return self.plans.is_file() and self.data.is_dir() and len(list(self.data.glob("*.pkl"))) == NUM_TRAIN


def demo_env(paths: DemoPaths, device: str) -> dict:
    """``nnunet_cli_env`` for the demo's folders, no compile for a short run, caches inside the folder."""
    env = nnunet_cli_env(paths.raw, paths.preprocessed, paths.results, device)
    env.update({"nnUNet_compile": "f", "PYTHONDONTWRITEBYTECODE": "1", "MPLCONFIGDIR": str(paths.cache / "matplotlib")})
    return env


class StepRunner:
    """Runs one CLI per step with a progress line, logging its output to ``logs/<step>.log``."""

    def __init__(self, progress, console, env: dict, logs: Path):
        self.progress, self.console, self.env, self.logs = progress, console, env, logs

    def run(self, step: str, description: str, cmd: list[str], total: int | None = None,
            extra_env: dict | None = None) -> float:
        log_path = self.logs / f"{step}.log"
        task = self.progress.add_task(description, total=total)
        start = time.monotonic()
        tail = deque(maxlen=40)
        with open(log_path, "w", buffering=1) as log, subprocess.Popen(
                cmd, env={**self.env, **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1) as proc:
            log.write("$ " + " ".join(cmd) + "\n")
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                if total is not None and EPOCH_DONE.search(line):
                    self.progress.advance(task)
            rc = proc.wait()
        elapsed = time.monotonic() - start
        self.progress.update(task, completed=total or 1, total=total or 1)
        if rc != 0:
            raise DemoError(f"{description} failed (exit code {rc}) after {elapsed:.0f} s. Last lines of "
                            f"{log_path}:\n" + "\n".join(tail))
        self.console.print(f"[green]done[/]   {description} in {elapsed:.1f} s (log: {log_path})")
        return elapsed


def run_demo(folder: Path, length: str, device: str, console) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..nnunet.synthetic import make_dataset
    if length not in LENGTHS:
        raise DemoError(f"--length {length!r} is not a trainer length; choose one of {', '.join(LENGTHS)}.")
    plain, smol = f"nnUNetTrainer{length}", f"nnUNetTrainerSmolLM2{length}"
    epochs = LENGTHS[length][0]
    claim_folder(folder)
    paths = DemoPaths(folder)
    for p in (paths.raw, paths.preprocessed, paths.results, paths.logs, paths.cache):
        p.mkdir(parents=True, exist_ok=True)
    env = demo_env(paths, device)
    console.print(f"nnunetv2-llm demo in [bold]{folder}[/]: {plain} vs {smol}, device {device}")
    start = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        steps = StepRunner(progress, console, env, paths.logs)
        if paths.dataset.is_dir():
            console.print(f"[cyan]reusing[/] dataset {paths.dataset}")
        else:
            make_dataset(paths.raw, DATASET_ID, dim=2, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0)
            console.print(f"[green]done[/]   synthetic dataset: {NUM_TRAIN} training + {NUM_TEST} held-out "
                          f"64x64 cases in {paths.dataset}")
        if paths.preprocessed_complete():
            console.print(f"[cyan]reusing[/] plans and preprocessed data in {paths.plans.parent}")
        else:
            steps.run("plan_and_preprocess", "plan and preprocess",
                      [cli_path("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
                       "-np", "1", "-npfp", "1", "--verify_dataset_integrity"])
        for trainer in (plain, smol):
            if paths.checkpoint(trainer).is_file():
                console.print(f"[cyan]reusing[/] trained model {paths.checkpoint(trainer)}")
            else:
                steps.run(f"train_{trainer}", f"train {trainer} ({epochs} epochs)",
                          [cli_path("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, FOLD, "-tr", trainer,
                           "-device", device], total=epochs,
                          extra_env=CPU_TRAINING_SETTINGS if device == "cpu" else None)
        steps.run("compare", f"predict the {NUM_TEST} held-out cases and compare",
                  [cli_path("nnunetv2-llm"), "compare", "-d", str(DATASET_ID), "-c", CONFIGURATION,
                   "-tr", plain, smol, "-f", FOLD, "--held-out", f"{HELD_OUT}={paths.dataset}",
                   "--device", device, "-np", "1", "-o", str(paths.report)])
    report = json.loads((paths.report / "report.json").read_text())
    print_summary(report, plain, smol, console)
    console.print(f"\ndemo finished in {time.monotonic() - start:.0f} s; the full report (in-domain validation "
                  f"and held-out, figures, per-case CSV) is in {paths.report}. To use these folders with the "
                  f"nnU-Net CLIs:")
    for line in export_lines(env, device, smol):
        print(line)
    console.print("\nTry next (after those exports):")
    for line in next_steps(paths, smol):
        print(f"  {line}")
    return report


def export_lines(env: dict, device: str, smol: str) -> list[str]:
    """The demo's folders for the nnU-Net CLIs and, on CPU, the settings its own runs trained with."""
    lines = [f"export {name}={shlex.quote(env[name])}"
             for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")]
    if device == "cpu":
        lines += ["# on CPU, as the demo trained (without them nnU-Net's training is several times slower):",
                  *cpu_advice(f"nnUNetv2_train {DATASET_ID} {CONFIGURATION} 1 -tr {smol} -device cpu")]
    return lines


def print_summary(report: dict, plain: str, smol: str, console) -> None:
    """Per-case Dice of both variants on the held-out cases, then the paired comparison."""
    cases = report["sets"][HELD_OUT]["cases"]
    rows = {}
    with open(Path(report["output"]) / "cases.csv") as f:
        for r in csv.DictReader(f):
            if r["set"] == HELD_OUT and r["metric"] == "Dice":
                rows[(r["variant"], r["case"])] = float(r["value"])
    console.print("\nHeld-out Dice per case (nnU-Net's metric code; predictions by nnUNetv2_predict):")
    print(f"{'case':<16} {'plain':>8} {'+SmolLM2':>9}")
    for case in cases:
        print(f"{case:<16} {rows[(plain, case)]:>8.4f} {rows[(smol, case)]:>9.4f}")
    entry = report["sets"][HELD_OUT]
    console.print(f"\n{smol} vs {plain} on {len(cases)} held-out cases (Δ = +SmolLM2 - plain, bootstrap 95% CI, "
                  f"Wilcoxon p Holm-corrected over the report's comparisons):")
    tolerance = next(iter(report["nsd_tolerance_mm"].values()))
    names = {"Dice": "Dice (higher is better)", "NSD": f"NSD at {tolerance:g} mm (higher is better)",
             "HD95": "HD95 in mm (lower is better)"}
    width = max(map(len, names.values()))
    print(f"{'metric':<{width}} {'plain':>8} {'+SmolLM2':>9} {'delta':>8} {'95% CI':>20} {'p':>7}")
    for metric in ("Dice", "NSD", "HD95"):
        c = entry["comparisons"][smol][metric]
        print(f"{names[metric]:<{width}} {entry['variants'][plain][metric]['mean']:>8.4f} "
              f"{entry['variants'][smol][metric]['mean']:>9.4f} {c['mean_difference']:>+8.4f} "
              f"{'[' + format(c['ci_low'], '+.4f') + ', ' + format(c['ci_high'], '+.4f') + ']':>20} "
              f"{c['p_holm']:>7.4f}", flush=True)
    runs = report.get("training_runs") or {}
    if not runs.get("training_noise_measured"):
        console.print(f"These numbers answer 'are these two trained models different on these cases?'. Whether "
                      f"the training procedures differ needs training noise, which one run does not measure: "
                      f"{runs.get('note', '')}.", markup=False, highlight=False)
    console.print("On this toy task and such short runs a difference, if any, says little (training on CPU is not "
                  "bit-reproducible: a rerun differs by about 0.01 Dice): the paper's gains come from real data, long "
                  "runs and LLaMA/DeepSeek layers.")


def next_steps(paths: "DemoPaths", smol: str) -> list[str]:
    """What to try after the demo, as commands that work on its folders."""
    return [
        f"open {paths.report / 'report.md'} and its figures (in-domain validation and the held-out cases)",
        f"nnunetv2-llm analyze -d {DATASET_ID} -c {CONFIGURATION} -tr {smol} -f {FOLD}   (the paper's Sec. 4: "
        "activation maps, effective rank)",
        f"nnunetv2-llm plan -d {DATASET_ID} --llm smollm2-135m --variant principled   (another wiring; train it with "
        "-tr nnUNetTrainerLLM_10epochs_20its -p the printed name)",
        "nnunetv2-llm demo --length _20epochs_25its   (longer runs; the five folds and `nnunetv2-llm compare` give "
        "more cases)",
    ]


def cmd_demo(args) -> int:
    from ..nnunet.environment import resolve_device
    run_demo(Path(args.folder).expanduser().resolve(), args.length, resolve_device(args.device), make_console())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="offline end-to-end run: synthetic data, plan, train with frozen SmolLM2, predict, Dice",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=DEFAULT_FOLDER,
                   help=f"folder for all files of the demo (default ./{DEFAULT_FOLDER}); created if missing")
    p.add_argument("--length", default=DEFAULT_LENGTH,
                   help=f"training length, a suffix of the trainers' names: {', '.join(LENGTHS)} "
                        f"(default {DEFAULT_LENGTH})")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where to train and predict (auto: a CUDA GPU when torch sees one, else CPU)")
    p.set_defaults(func=cmd_demo)
