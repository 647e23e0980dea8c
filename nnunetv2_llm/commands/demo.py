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
from pathlib import Path

from ..core.terminal import console as make_console
from ..evaluation.formatting import fmt
from ..nnunet.demo import DEFAULT_FOLDER, DEFAULT_LENGTH, HELD_OUT, export_lines, next_steps, run_demo_steps
from ..nnunet.lengths import LENGTHS
from .options import DEVICES


def run_demo(folder: Path, length: str, device: str, console) -> dict:
    run = run_demo_steps(folder, length, device, console)
    print_summary(run.report, run.plain, run.smol, console)
    console.print(f"\ndemo finished in {run.seconds:.0f} s; the full report (in-domain validation and held-out, "
                  f"figures, per-case CSV) is in {run.paths.report}. To use these folders with the nnU-Net CLIs:")
    for line in export_lines(run.env, device, run.smol):
        print(line)
    console.print("\nTry next (after those exports):")
    for line in next_steps(run.paths, run.smol):
        print(f"  {line}")
    return run.report


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
                  f"p = sign-flip test of the mean difference, Holm-corrected over the report's secondary tests):")
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
              f"{fmt(c['p_holm'], 4):>7}", flush=True)
    runs = report.get("training_runs") or {}
    if not runs.get("training_noise_measured"):
        console.print(f"These numbers answer 'are these two trained models different on these cases?'. Whether "
                      f"the training procedures differ needs training noise, which one run does not measure: "
                      f"{runs.get('note', '')}.", markup=False, highlight=False)
    console.print("On this toy task and such short runs a difference, if any, says little (training on CPU is not "
                  "bit-reproducible: reruns differ, by the spread the README gives for repeated demo runs): the "
                  "paper's gains come from real data, long runs and LLaMA/DeepSeek layers.")


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
