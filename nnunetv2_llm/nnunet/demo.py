"""The demo's steps: the paper's question on generated data, offline, with the stock nnU-Net CLIs.

Synthetic 2D dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train of plain nnU-Net and of nnU-Net with the
frozen SmolLM2 layer, at the same length -> nnunetv2-llm compare of the two on the held-out cases. Every file goes
under one folder; a rerun reuses finished steps. ``nnunetv2-llm demo`` runs them and prints the result.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from .environment import CPU_TRAINING_SETTINGS, cli_path, cpu_advice, nnunet_cli_env
from .lengths import LENGTHS
from .results import DEFAULT_PLANS

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
        from .results import results_folder
        from .trained_plans import FINAL_CHECKPOINT
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


PSEUDO_DICE = re.compile(r"Pseudo dice \[(.*)\]")
ERROR_LINE = re.compile(r"^(error: |[\w.]*(Error|Exception|Interrupt)\b)")


def failing_line(lines) -> str:
    """The line of a failed CLI's output that says what failed: the last exception or ``error:`` line, else the last
    line with text."""
    lines = [line.strip() for line in lines if line.strip()]
    return next((line for line in reversed(lines) if ERROR_LINE.match(line)), lines[-1] if lines else "no output")


class TrainingProgress:
    """Epoch i/N, elapsed, time left and nnU-Net's latest pseudo-Dice of one training, from the lines of its log."""

    def __init__(self, epochs: int):
        self.epochs, self.done, self.dice = epochs, 0, None
        self.start = time.monotonic()

    def read(self, line: str) -> bool:
        """Take one log line; True when it ends an epoch."""
        found = PSEUDO_DICE.search(line)
        if found:
            values = [float(v) for v in re.findall(r"\d+\.\d+(?:e-?\d+)?", found.group(1))]
            self.dice = sum(values) / len(values) if values else None
        if EPOCH_DONE.search(line):
            self.done += 1
            return True
        return False

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.epochs - self.done)
        dice = "" if self.dice is None else f", pseudo-Dice {self.dice:.4f}"
        return f"epoch {self.done}/{self.epochs}, {elapsed:.0f} s elapsed, about {left:.0f} s left{dice}"


class StepRunner:
    """Runs one CLI per step, logging its output to ``logs/<step>.log``: a progress bar on a terminal, a plain line
    per epoch elsewhere (a log file, CI), and on failure the failing line with the fix."""

    def __init__(self, progress, console, env: dict, logs: Path):
        self.progress, self.console, self.env, self.logs = progress, console, env, logs

    def run(self, step: str, description: str, cmd: list[str], total: int | None = None,
            extra_env: dict | None = None) -> float:
        log_path = self.logs / f"{step}.log"
        self.console.print(f"[cyan]start[/]  {description} (log: {log_path})")
        task = self.progress.add_task(description, total=total, status="")
        start = time.monotonic()
        tail = deque(maxlen=40)
        progress = TrainingProgress(total) if total else None
        with open(log_path, "w", buffering=1) as log, subprocess.Popen(
                cmd, env={**self.env, **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1) as proc:
            log.write("$ " + " ".join(cmd) + "\n")
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                if progress is not None and progress.read(line):
                    self.progress.update(task, completed=progress.done, status=progress.line())
                    if not self.console.is_terminal:
                        self.console.print(f"       {description}: {progress.line()}", highlight=False)
            rc = proc.wait()
        elapsed = time.monotonic() - start
        self.progress.update(task, completed=total or 1, total=total or 1)
        if rc != 0:
            raise DemoError(f"{description} failed (exit code {rc}) after {elapsed:.0f} s: {failing_line(tail)}\n"
                            f"Its log: {log_path}. Run `nnunetv2-llm doctor`: it checks what training imports, the "
                            f"trainers and the models, and names the fix for each problem.")
        self.console.print(f"[green]done[/]   {description} in {elapsed:.1f} s (log: {log_path})")
        return elapsed


@dataclass
class DemoRun:
    """What the demo's steps left: its folders, compare's report and the environment its CLIs ran in."""

    paths: DemoPaths
    report: dict
    plain: str
    smol: str
    env: dict
    seconds: float


def run_demo_steps(folder: Path, length: str, device: str, console) -> DemoRun:
    """Every step of the demo that is not done yet (each logged to ``logs/<step>.log``), then its report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .synthetic import make_dataset
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
               TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
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
    return DemoRun(paths, report, plain, smol, env, time.monotonic() - start)


def export_lines(env: dict, device: str, smol: str) -> list[str]:
    """The demo's folders for the nnU-Net CLIs and, on CPU, the settings its own runs trained with."""
    lines = [f"export {name}={shlex.quote(env[name])}"
             for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")]
    if device == "cpu":
        lines += ["# on CPU, as the demo trained (without them nnU-Net's training is several times slower):",
                  *cpu_advice(f"nnUNetv2_train {DATASET_ID} {CONFIGURATION} 1 -tr {smol} -device cpu")]
    return lines


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
