"""Training noise, measured: plain nnU-Net, +SmolLM2 frozen and the identity control on a synthetic 2D task, every
fold trained several times (a sweep grid's ``replicates``), then ``nnunetv2-llm compare`` at both levels: these
models on these cases (paired over cases) and this training procedure against that one (unit = training run).

Everything runs through the stock CLIs in one nnU-Net environment (``--work-dir``, kept, so a rerun resumes the
sweep): nnunetv2-llm synth, nnUNetv2_plan_and_preprocess, nnunetv2-llm sweep plan/run (local backend, CPU), and
nnunetv2-llm compare. The JSON keeps the compare report's numbers of both levels.

    python benchmarks/replicates.py --work-dir runs/replicates                     # 5 folds x 3 replicates
    python benchmarks/replicates.py --work-dir runs/replicates --replicates 2      # compare what is trained
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from quality import Env  # noqa: E402

TRAINERS = {"plain nnU-Net": "nnUNetTrainer", "+SmolLM2 frozen": "nnUNetTrainerSmolLM2",
            "identity control (projections only)": "nnUNetTrainerSmolLM2Identity"}
DATASET_ID = 670
CPU_ENV = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


def prepare(env: Env, args) -> None:
    """The dataset and nnU-Net's plans, once (a rerun reuses them)."""
    if not any(env.raw.glob(f"Dataset{DATASET_ID}_*")):
        env.run("synth", "nnunetv2-llm", "synth", "-d", DATASET_ID, "--dim", "2", "--num-train", args.num_train,
                "--num-test", 2, "--seed", args.seed, "--task", args.task)
    if not any(env.preprocessed.glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json")):
        env.run("plan", "nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "2d", "-np", "1", "-npfp", "1")


def train(env: Env, args) -> Path:
    """The sweep: every trainer x fold x replicate, one stock nnUNetv2_train each, replicate by replicate."""
    grid = {"dataset": DATASET_ID, "configurations": ["2d"], "folds": list(range(args.folds)),
            "trainers": [t + args.length for t in args.trainers], "train_args": ["-device", "cpu"],
            "replicates": args.replicates_to_train}
    sweep = env.root / f"sweep-{args.folds}x{args.replicates_to_train}-{'-'.join(args.trainers)}"
    grid_file = env.root / "grid.json"
    grid_file.write_text(json.dumps(grid))
    env.run("sweep-plan", "nnunetv2-llm", "sweep", "plan", grid_file, "-o", sweep, extra_env=CPU_ENV)
    env.run("sweep-run", "nnunetv2-llm", "sweep", "run", sweep, "--backend", "local", "--no-compare",
            extra_env=CPU_ENV)
    return sweep


def compare(env: Env, args) -> dict:
    out = env.root / f"compare-{args.folds}x{args.replicates}"
    names = [t + args.length for t in args.trainers]
    env.run(f"compare-{args.folds}x{args.replicates}", "nnunetv2-llm", "compare", "-d", DATASET_ID, "-c", "2d",
            "-tr", *names, "-f", *map(str, range(args.folds)), "--replicates", args.replicates, "-np", "1",
            "-o", out, extra_env=CPU_ENV)
    return {**json.loads((out / "report.json").read_text()), "run_means": run_means(out)}


def run_means(report_dir: Path) -> dict:
    """Mean in-domain Dice of every training run (variant -> "fold f, replicate r" -> Dice), from cases.csv."""
    import csv
    from statistics import mean
    values: dict = {}
    with open(report_dir / "cases.csv") as f:
        for row in csv.DictReader(f):
            if row["set"] == "in-domain" and row["metric"] == "Dice" and row["value"] not in ("", "nan"):
                key = f"fold {row['fold']}, replicate {row['replicate']}"
                values.setdefault(row["variant"], {}).setdefault(key, []).append(float(row["value"]))
    return {v: {k: mean(x) for k, x in sorted(runs.items())} for v, runs in values.items()}


def summarize(report: dict) -> dict:
    """Per variant against plain nnU-Net and metric: both levels' intervals and widths, the variance components."""
    entry = report["sets"]["in-domain"]
    out = {}
    for variant, by_metric in entry["comparisons"].items():
        out[variant] = {}
        for metric, c in by_metric.items():
            proc = c.get("procedure") or {}
            out[variant][metric] = {
                "cases_level": {k: c[k] for k in ("n", "mean_difference", "ci_low", "ci_high", "p", "p_holm")},
                "cases_level_width": c["ci_high"] - c["ci_low"],
                "procedure_level": proc,
                "procedure_level_width": (proc["ci_high"] - proc["ci_low"]) if proc.get("ci_high") is not None
                else None}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from nnunetv2_llm.nnunet.synthetic import TASKS
    parser.add_argument("--work-dir", type=Path, required=True, help="the nnU-Net folders (kept; a rerun resumes)")
    parser.add_argument("--task", default="blobs", choices=list(TASKS), help="synthetic task (default blobs)")
    parser.add_argument("--length", default="_10epochs_20its", help="trainer length suffix (default _10epochs_20its)")
    parser.add_argument("--folds", type=int, default=5, help="folds 0..N-1 (default 5)")
    parser.add_argument("--replicates", type=int, default=3, help="replicates to compare (default 3)")
    parser.add_argument("--train", type=int, dest="replicates_to_train",
                        help="replicates to train (default: --replicates); 0 trains nothing, compares what is there")
    parser.add_argument("--trainers", nargs="+", choices=list(TRAINERS.values()), default=list(TRAINERS.values()),
                        help="trainer bases (default: all three; the first is the reference)")
    parser.add_argument("--train-only", action="store_true", help="train (or resume), compare nothing")
    parser.add_argument("--num-train", type=int, default=25, help="training cases (default 25)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/replicates-<task>-FxR.json)")
    args = parser.parse_args(argv)
    if args.replicates_to_train is None:
        args.replicates_to_train = args.replicates
    args.work_dir.mkdir(parents=True, exist_ok=True)
    env = Env(args.work_dir.resolve())
    machine = common.machine("cpu")
    print(common.describe_machine(machine), flush=True)
    prepare(env, args)
    if args.replicates_to_train:
        train(env, args)
    if args.train_only:
        return 0
    report = compare(env, args)
    results = {"task": args.task, "length": args.length, "folds": args.folds, "replicates": args.replicates,
               "num_train": args.num_train, "seed": args.seed,
               "trainers": {k: v for k, v in TRAINERS.items() if v in args.trainers}, "machine": machine,
               "reference": report["reference"], "command": " ".join(["python benchmarks/replicates.py",
                                                                      *map(str, argv or sys.argv[1:])]),
               "comparisons": summarize(report),
               "training_runs": report.get("training_runs"), "dice_per_run": report["run_means"]}
    name = f"replicates-{args.task}"
    common.save(results, name, f"{args.folds}x{args.replicates}", args.out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
