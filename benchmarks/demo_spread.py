"""The demo's spread, measured: ``nnunetv2-llm demo``'s protocol run N times (N >= 8), the distribution of both
held-out Dice values and of their difference written to a JSON that the README quotes (scripts/docs_tables.py).

Each run is the demo's own code (``run_demo_steps``) in its own folder under ``--work-dir``: run 1 makes the dataset
and nnU-Net's plans, later runs start from a copy of them (both are deterministic), so what varies between runs is
what varies between a user's reruns: the two trainings and the prediction. The JSON is rewritten after every run and
says how many finished; a rerun reuses the runs whose report is there.

    nice -n 15 python benchmarks/demo_spread.py --work-dir runs/demo_spread            # 8 runs, CPU
    python benchmarks/demo_spread.py --readme-figures benchmarks/results/demo_spread-8.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

MIN_RUNS = 8


def held_out(report: dict, plain: str, smol: str) -> dict:
    """One run's held-out Dice of both variants, their paired difference and its Holm p, from compare's report."""
    from nnunetv2_llm.nnunet.demo import HELD_OUT
    entry = report["sets"][HELD_OUT]
    c = entry["comparisons"][smol]["Dice"]
    return {"plain": entry["variants"][plain]["Dice"]["mean"], "smollm2": entry["variants"][smol]["Dice"]["mean"],
            "delta": c["mean_difference"], "p_holm": c["p_holm"], "p_test": p_test(c), "cases": len(entry["cases"])}


WILCOXON = "Wilcoxon signed-rank"  # compare's case-level test before 0.4, and so of runs saved without p_test


def p_test(comparison: dict) -> str:
    """The case-level test behind a comparison's p: report.json has held the Wilcoxon p as ``p_wilcoxon`` since
    ``p`` became the sign-flip permutation test (0.4)."""
    return "sign-flip permutation" if "p_wilcoxon" in comparison else WILCOXON


def seed_folder(first: Path, folder: Path) -> None:
    """A later run's folder with run 1's dataset and plans (the demo reuses them), nothing trained."""
    from nnunetv2_llm.nnunet.demo import MARKER
    if folder.exists():
        return
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(first / MARKER, staging / MARKER)
    for name in ("raw", "preprocessed"):
        shutil.copytree(first / name, staging / name)
    staging.rename(folder)


def distribution(values: list[float]) -> dict:
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "values": values}


def summarize(runs: list[dict]) -> dict:
    return {key: distribution([r[key] for r in runs]) for key in ("plain", "smollm2", "delta")} | {
        "holm_p_below_0.05": sum(r["p_holm"] < 0.05 for r in runs),
        "seconds": distribution([r["seconds"] for r in runs if r.get("seconds") is not None] or [float("nan")])}


def readme_figures(results: dict) -> str:
    """The README's sentences about the demo's spread and time (scripts/docs_tables.py puts them there), from a
    saved run."""
    s, n, runs = results["summary"], results["runs"], results["per_run"]

    def spread(d, signed=False):
        f = "+.3f" if signed else ".3f"
        return f"{format(d['mean'], f)} ± {d['sd']:.3f} (range {format(d['min'], f)} to {format(d['max'], f)})"
    seconds = sorted(r["seconds"] for r in runs[1:]) or [runs[0]["seconds"]]  # run 1 also plans and preprocesses
    loads = [r["load_average"][0] for r in runs]
    tests = sorted({r.get("p_test", WILCOXON) for r in runs})
    return (f"Over {n} runs of its protocol on this project's 2-core machine (`benchmarks/demo_spread.py`, "
            f"torch {results['machine']['torch']} on the CPU), held-out Dice was {spread(s['plain'])} for plain "
            f"nnU-Net and {spread(s['smollm2'])} with SmolLM2: Δ = {spread(s['delta'], signed=True)}, Holm p < 0.05 in "
            f"{s['holm_p_below_0.05']} of {n} runs ({' and '.join(tests)} test of the {runs[0]['cases']} held-out "
            f"cases). Training on the CPU is not bit-reproducible, so one run lands "
            f"anywhere in those ranges. A rerun's training and comparison took {seconds[0]:.0f} to {seconds[-1]:.0f} s "
            f"there (load average {min(loads):.1f} to {max(loads):.1f}: other work on the cores slows it most).")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, help="one demo folder per run (kept; a rerun reuses finished runs)")
    parser.add_argument("--runs", type=int, default=MIN_RUNS, help=f"runs of the demo (default {MIN_RUNS})")
    parser.add_argument("--readme-figures", type=Path, metavar="JSON", help="print the README's sentence and exit")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/demo_spread-<runs>.json)")
    args = parser.parse_args(argv)
    if args.readme_figures:
        print(readme_figures(json.loads(args.readme_figures.read_text())))
        return 0
    if args.work_dir is None:
        parser.error("--work-dir is required to run the demo (or pass --readme-figures JSON)")
    from rich.console import Console

    from nnunetv2_llm.nnunet.demo import DEFAULT_LENGTH, run_demo_steps
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    machine = common.machine("cpu")
    print(common.describe_machine(machine), flush=True)
    console = Console(highlight=False)
    runs = []
    for i in range(1, args.runs + 1):
        folder = work / f"run-{i}"
        if i > 1:
            seed_folder(work / "run-1", folder)
        done = folder / "spread.json"
        if done.is_file():
            runs.append(json.loads(done.read_text()))
            continue
        run = run_demo_steps(folder, DEFAULT_LENGTH, "cpu", console)
        result = {"run": i, **held_out(run.report, run.plain, run.smol), "seconds": run.seconds,
                  "load_average": [round(x, 2) for x in os.getloadavg()]}
        done.write_text(json.dumps(result))
        runs.append(result)
        print(f"run {i}: plain {result['plain']:.4f}, +SmolLM2 {result['smollm2']:.4f}, "
              f"delta {result['delta']:+.4f} in {run.seconds:.0f} s", flush=True)
        results = {"protocol": f"nnunetv2-llm demo (length {DEFAULT_LENGTH}, device cpu), dataset and plans of run 1 "
                               "reused", "runs_requested": args.runs, "runs": len(runs), "machine": machine,
                   "summary": summarize(runs) if len(runs) > 1 else None, "per_run": runs}
        common.save(results, "demo_spread", str(args.runs), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
