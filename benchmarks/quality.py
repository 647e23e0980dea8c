"""Dice on the synthetic 2D tasks: plain nnU-Net against the SmolLM2 block's variants (the paper's, its controls,
and the adaptations peers use: LoRA, two layers, a zero-init gate, Pang et al.'s and MedVisionLlama's wirings).

Everything runs through the stock CLIs in a temporary nnU-Net environment: nnunetv2-llm synth,
nnUNetv2_plan_and_preprocess, nnunetv2-llm plan (for the variants without a built-in trainer), nnUNetv2_train
(fold 0) and nnUNetv2_predict on held-out test cases, scored with nnunetv2_llm.evaluation.dice, and compared per
seed with ``nnunetv2-llm compare``
(held-out cases, paired against plain nnU-Net). All trainers of one seed share the dataset, the
plans and the schedule. nnU-Net has no seed option, so a "seed" here is the synthetic dataset's
seed: each seed is a different dataset, and training itself is not seeded (runs are not
bit-reproducible). Whatever comes out is reported as is.

    python benchmarks/quality.py             # quick: 2 seeds x 4 trainers, 10 epochs of 20 iterations
    python benchmarks/quality.py --full      # 5 seeds, 20 epochs of 25 iterations
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TRAINERS = {  # label -> trainer base name (a length suffix is appended), or nnUNetTrainerLLM with a variant's plans
    "plain nnU-Net": "nnUNetTrainer",
    "+SmolLM2 frozen": "nnUNetTrainerSmolLM2",
    "+SmolLM2-shaped random init (trained)": "nnUNetTrainerSmolLM2Transformer",
    "+SmolLM2 trainable": "nnUNetTrainerSmolLM2Trainable",
    "identity control (projections only)": "nnUNetTrainerSmolLM2Identity",
    "frozen random control": "nnUNetTrainerSmolLM2FrozenRandom",
    "+SmolLM2 LoRA (rank 8)": "nnUNetTrainerSmolLM2LoRA",
    "+SmolLM2 two layers (14, 15)": "nnUNetTrainerLLM:depth2",
    "+SmolLM2 zero-init gate": "nnUNetTrainerLLM:gate",
    "+SmolLM2 Pang et al.'s wiring (layer 29)": "nnUNetTrainerLLM:pang",
    "+SmolLM2 MedVisionLlama's wiring (layer 29)": "nnUNetTrainerLLM:medvisionllama",
}
MODES = {"quick": {"seeds": 2, "length": "_10epochs_20its"}, "full": {"seeds": 5, "length": "_20epochs_25its"}}
FIRST_DATASET_ID = 650
BIN = Path(sys.executable).parent


class Env:
    """An isolated nnU-Net environment whose CLIs find our trainers; every command's output goes to a log."""

    def __init__(self, root: Path):
        from nnunetv2_llm.nnunet.environment import nnunet_cli_env
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.preprocessed, self.results, root / "logs"):
            p.mkdir(parents=True, exist_ok=True)
        self.env = nnunet_cli_env(self.raw, self.preprocessed, self.results, "cpu")

    def run(self, log_name: str, *args, extra_env: dict | None = None) -> float:
        log = self.root / "logs" / f"{log_name}.log"
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], env={**self.env, **(extra_env or {})},
                                  stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = log.read_text()[-4000:]
            raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}; log {log}:\n{tail}")
        return time.perf_counter() - start


def run_seed(env: Env, seed: int, trainers: dict, length: str, num_train: int, num_test: int,
             task: str = "blobs") -> dict:
    from nnunetv2_llm.evaluation.dice import dice_per_case
    dataset_id = FIRST_DATASET_ID + seed
    env.run(f"synth-{seed}", "nnunetv2-llm", "synth", "-d", dataset_id, "--dim", "2", "--num-train", num_train,
            "--num-test", num_test, "--seed", seed, "--task", task)
    env.run(f"plan-{seed}", "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "2d", "-np", "1", "-npfp", "1")
    folder = next(env.raw.glob(f"Dataset{dataset_id:03d}_*"))
    out = {}
    for label, base in trainers.items():
        trainer, plans = variant_of(base, length)
        if plans != "nnUNetPlans":
            env.run(f"plan-{seed}-{plans}", "nnunetv2-llm", "plan", "-d", dataset_id, "--llm", "smollm2-135m",
                    "--variant", base.split(":")[1], "-o", plans)
        train_s = env.run(f"train-{seed}-{trainer}-{plans}", "nnUNetv2_train", dataset_id, "2d", "0", "-tr", trainer,
                          "-p", plans, "-device", "cpu", extra_env={"nnUNet_n_proc_DA": "0"})
        pred = env.root / "predictions" / f"{dataset_id}-{trainer}-{plans}"
        env.run(f"predict-{seed}-{trainer}-{plans}", "nnUNetv2_predict", "-i", folder / "imagesTs", "-o", pred,
                "-d", dataset_id, "-c", "2d", "-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu", "-npp", "0",
                "-nps", "0")
        summary_file = env.root / "predictions" / f"{dataset_id}-{trainer}-{plans}-summary.json"
        scores = dice_per_case(folder / "labelsTs", pred, folder / "dataset.json", summary_file=summary_file)
        summary = json.loads(summary_file.read_text())  # nnU-Net's layout: NaN (label absent) left out
        per_label = {k: v["Dice"] for k, v in summary["mean"].items()}
        fold = next(env.results.glob(f"Dataset{dataset_id:03d}_*")) / f"{trainer}__{plans}__2d" / "fold_0"
        val = json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
        out[label] = {"trainer": trainer, "plans": plans, "test_dice": summary["foreground_mean"]["Dice"],
                      "test_dice_per_label": per_label, "test_dice_per_case": scores["per_case"],
                      "objects_dice": objects_dice(folder / "labelsTs", pred),
                      "validation_dice": val, "train_seconds": train_s,
                      "checkpoint_final_bytes": (fold / "checkpoint_final.pth").stat().st_size}
        labels = " ".join(f"{k}:{v:.3f}" for k, v in per_label.items())
        print(f"  seed {seed} {label:<40} test Dice {out[label]['test_dice']:.4f} (per label {labels}; objects "
              f"regardless of class {out[label]['objects_dice']:.3f}; fold-0 validation {val:.4f}, "
              f"train {train_s:.0f}s)", flush=True)
    if len(trainers) > 1 and "plain nnU-Net" in trainers:
        out["compare"] = compare_seed(env, seed, dataset_id, folder, trainers, length)
    return out


def variant_of(base: str, length: str) -> tuple[str, str]:
    """(trainer, plans): a built-in trainer on nnU-Net's plans, or nnUNetTrainerLLM on the plans of a variant."""
    trainer, _, variant = base.partition(":")
    return trainer + length, f"nnUNetPlans_{variant}" if variant else "nnUNetPlans"


def variant_label(base: str, length: str) -> str:
    """How compare names the variant: the trainer, with __PLANS unless they are nnU-Net's."""
    trainer, plans = variant_of(base, length)
    return trainer if plans == "nnUNetPlans" else f"{trainer}__{plans}"


def compare_seed(env: Env, seed: int, dataset_id: int, folder: Path, trainers: dict, length: str) -> dict:
    """``nnunetv2-llm compare`` of every variant against plain nnU-Net on this seed's held-out cases: the paired
    Dice difference with its bootstrap CI and the Holm-corrected Wilcoxon p."""
    names = [variant_label(base, length) for base in trainers.values()]
    report_dir = env.root / f"compare-{seed}"
    env.run(f"compare-{seed}", "nnunetv2-llm", "compare", "-d", dataset_id, "-c", "2d", "-tr", *names, "-f", "0",
            "--reference", "nnUNetTrainer" + length, "--held-out", f"held-out={folder}", "--device", "cpu",
            "-np", "1", "-o", report_dir)
    held_out = json.loads((report_dir / "report.json").read_text())["sets"]["held-out"]
    out = {}
    for label, base in trainers.items():
        comparison = held_out["comparisons"].get(variant_label(base, length))
        if comparison is not None:
            c = comparison["Dice"]
            out[label] = {"cases": len(held_out["cases"]), "mean_difference": c["mean_difference"],
                          "ci": [c["ci_low"], c["ci_high"]], "p_holm": c["p_holm"]}
    return out


def objects_dice(gt_folder: Path, pred_folder: Path) -> float:
    """Mean Dice of foreground vs background, whatever class: how well objects are found, apart from
    which class they get (for the context task: the part a texture-only model can do)."""
    from PIL import Image
    values = []
    for gt_file in sorted(gt_folder.glob("*.png")):
        gt, pred = np.asarray(Image.open(gt_file)) > 0, np.asarray(Image.open(pred_folder / gt_file.name)) > 0
        values.append(2 * (gt & pred).sum() / max(gt.sum() + pred.sum(), 1))
    return float(np.mean(values))


def spread(values: list[float], digits: int = 4, signed: bool = False) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{'+' if signed else ''}.{digits}f} ± {sd:.{digits}f}"


def summary(results: dict) -> list[dict]:
    """Per variant over the seeds: test Dice per seed, its difference to plain nnU-Net's per seed (None for plain
    or without it), each seed's `compare` against plain, and the mean / median of the other figures."""
    seeds, labels = list(results["seeds"]), list(results["trainers"])
    per_seed = lambda label, key: [results["seeds"][s][label].get(key, float("nan")) for s in seeds]  # noqa: E731
    plain = per_seed("plain nnU-Net", "test_dice") if "plain nnU-Net" in labels else None
    rows = []
    for label in labels:
        dice = per_seed(label, "test_dice")
        rows.append({"label": label, "dice": dice,
                     "minus_plain": [d - p for d, p in zip(dice, plain)] if plain and label != "plain nnU-Net"
                     else None,
                     "compared": [c for s in seeds if (c := results["seeds"][s].get("compare", {}).get(label))],
                     "objects": statistics.mean(per_seed(label, "objects_dice")),
                     "train": statistics.median(per_seed(label, "train_seconds")),
                     "checkpoint": statistics.median(per_seed(label, "checkpoint_final_bytes"))})
    return rows


def paired(compared: list[dict], sep: str) -> str:
    return sep.join(f"{c['mean_difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] p={c['p_holm']:.2g}"
                    for c in compared) or "-"


def report(results: dict) -> None:
    rows = [[r["label"], variant_label(results["trainers"][r["label"]], results["length"]),
             " ".join(f"{d:.3f}" for d in r["dice"]), spread(r["dice"]),
             "-" if r["minus_plain"] is None else spread(r["minus_plain"]), paired(r["compared"], " "), f"{r['objects']:.3f}",
             f"{r['train']:.0f}", common.mib(r["checkpoint"])] for r in summary(results)]
    print(f"\nTest Dice on held-out synthetic 2D cases ({results['num_test']} per seed; seeds = dataset seeds "
          f"{list(results['seeds'])}; mean ± sample std over seeds)")
    print(common.table(["variant", "trainer", "Dice per seed", "mean ± std", "minus plain (paired over seeds)",
                        "compare per seed: Δ case Dice [95% CI] p (Holm)", "objects Dice (any class)",
                        "train s (median)", "checkpoint MiB"], rows))


def readme_table(results: dict) -> str:
    """The docs' markdown table of a saved run (docs/benchmarks-and-results.md; scripts/docs_tables.py puts it
    there): the terminal table's figures at three decimals, the paired difference signed, without the trainer
    and checkpoint columns, and without a column the run did not record (older runs have no objects Dice and
    no compare)."""
    rows = summary(results)
    columns = [
        ("variant", [r["label"] for r in rows]),
        ("test Dice per seed", [" ".join(f"{d:.3f}" for d in r["dice"]) for r in rows]),
        ("mean ± std", [spread(r["dice"], 3) for r in rows]),
        ("minus plain (over seeds)",
         ["-" if r["minus_plain"] is None else spread(r["minus_plain"], 3, signed=True) for r in rows]),
        ("compare, seeds " + " / ".join(results["seeds"]) + ": Δ [95% CI], Holm p",
         [paired(r["compared"], " / ") for r in rows] if any(r["compared"] for r in rows) else None),
        ("objects Dice, any class",
         [f"{r['objects']:.3f}" for r in rows] if not all(np.isnan(r["objects"]) for r in rows) else None),
        ("train s", [f"{r['train']:.0f}" for r in rows]),
    ]
    columns = [(header, cells) for header, cells in columns if cells is not None]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cells[i] for _, cells in columns) + " |" for i in range(len(rows))]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme-table", type=Path, metavar="JSON",
                        help="print the docs' markdown table of a saved run and exit")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="2 seeds, 10 epochs of 20 iterations (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="5 seeds, 20 epochs of 25 iterations")
    from nnunetv2_llm.nnunet.synthetic import TASKS
    parser.add_argument("--task", default="blobs", choices=list(TASKS),
                        help="blobs: local texture decides the label; context: a distant cue decides it (synth --task)")
    parser.add_argument("--seeds", type=int, help="number of dataset seeds (0..N-1)")
    parser.add_argument("--length", help="trainer length suffix, e.g. _2epochs_5its, _10epochs_20its, _100epochs")
    parser.add_argument("--trainers", nargs="+", choices=sorted(TRAINERS.values()),
                        help="subset of trainer bases (default: all)")
    parser.add_argument("--num-train", type=int, default=20, help="training cases per dataset (default 20)")
    parser.add_argument("--num-test", type=int, default=10, help="held-out test cases per dataset (default 10)")
    parser.add_argument("--work-dir", type=Path, help="keep the nnU-Net folders here (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/quality-<mode>.json)")
    args = parser.parse_args(argv)
    if args.readme_table:
        try:
            table = readme_table(json.loads(args.readme_table.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            parser.error(f"--readme-table {args.readme_table}: not a JSON this script saved ({type(e).__name__}: "
                         f"{e}); pass one of benchmarks/results/quality*.json")
        print(table)
        return 0
    args.mode = args.mode or "quick"
    seeds = args.seeds or MODES[args.mode]["seeds"]
    length = args.length if args.length is not None else MODES[args.mode]["length"]
    trainers = {k: v for k, v in TRAINERS.items() if not args.trainers or v in args.trainers}

    from nnunetv2_llm.nnunet import trainers as our_trainers
    unknown = [variant_of(b, length)[0] for b in trainers.values()
               if variant_of(b, length)[0] not in our_trainers.__all__]
    if unknown:
        parser.error(f"--length {length!r}: no trainers {unknown}; choose one of {sorted(our_trainers.LENGTHS)}")
    machine = common.machine("cpu")
    print(common.describe_machine(machine))
    print(f"mode --{args.mode}: {seeds} dataset seeds x {len(trainers)} trainers, length {length}, "
          f"{args.num_train} training cases (fold 0: 80% train / 20% validation), {args.num_test} test cases, 64x64")
    if args.work_dir:
        if args.work_dir.exists() and any(args.work_dir.iterdir()):
            parser.error(f"--work-dir {args.work_dir} is not empty; pass a new or empty folder")
        root, cleanup = args.work_dir, False
    else:
        root, cleanup = Path(tempfile.mkdtemp(prefix="nnunetv2-llm-quality-")), True
    try:
        env = Env(root)
        results = {"mode": args.mode, "task": args.task, "machine": machine, "length": length, "trainers": trainers,
                   "num_train": args.num_train, "num_test": args.num_test, "seeds": {}}
        for seed in range(seeds):
            results["seeds"][seed] = run_seed(env, seed, trainers, length, args.num_train, args.num_test,
                                              args.task)
    finally:
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    common.save(results, "quality" if args.task == "blobs" else f"quality-{args.task}", args.mode, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
