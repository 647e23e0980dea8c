"""``nnunetv2-llm sweep``: expand a grid of nnU-Net trainings, run it locally or on SLURM (submitit), resume it.

One job is one stock ``nnUNetv2_train DATASET CONFIG FOLD -tr T -p P`` call. A job whose fold has
``checkpoint_final.pth`` is skipped, one with ``checkpoint_latest.pth`` is continued with ``--c``, so running
``sweep run`` again after a crash or a preemption resumes the grid.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .environment import cli_path, ext_trainer_entries
from .errors import UserError
from .files import write_json

GRID_FILE = "sweep.json"


class SweepError(UserError, ValueError):
    """A grid, sweep folder or run option the sweep cannot use."""


def load_grid(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"grid file {path} does not exist; write a JSON or YAML grid (see README) or use flags.")
    if p.suffix in (".yaml", ".yml"):
        import yaml
        return yaml.safe_load(p.read_text())
    return json.loads(p.read_text())


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def check_trainer(name: str) -> None:
    """nnU-Net's own lookup (with our trainers on nnUNet_extTrainer), before anything is submitted."""
    os.environ["nnUNet_extTrainer"] = os.pathsep.join(ext_trainer_entries())
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    try:
        found = recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        found = None
    if found is None:
        raise SweepError(f"unknown trainer {name!r}: nnU-Net's lookup (nnunetv2 and nnUNet_extTrainer) has no class "
                         f"of that name; check the spelling or put its folder on nnUNet_extTrainer.")


def llm_plans(dataset: str, plans: str, llm_args: list[str]) -> list[str]:
    """Run ``nnunetv2-llm plan`` (its own parser and writer) and return the plans names it wrote."""
    from .cli import build_parser
    from .planning import write_plans
    args = build_parser().parse_args(["plan", "-d", str(dataset), "-p", plans, "--overwrite", *llm_args])
    return [p.stem for p in write_plans(args)]


def expand(grid: dict) -> list[dict]:
    """Validate a grid (dataset, plans, trainers, folds) and return its jobs, writing LLM plans first."""
    from .planning import dataset_folder
    if "dataset" not in grid:
        raise SweepError("the grid has no 'dataset'; give one, e.g. dataset: 501.")
    folder = dataset_folder(str(grid["dataset"]))
    configurations = _as_list(grid.get("configurations", ["2d"]))
    trainers = _as_list(grid.get("trainers"))
    if not trainers:
        raise SweepError("the grid has no 'trainers'; list at least one, e.g. trainers: [nnUNetTrainer].")
    for t in trainers:
        check_trainer(t)
    folds = [int(f) for f in _as_list(grid.get("folds", [0, 1, 2, 3, 4]))]
    bad = [f for f in folds if not 0 <= f <= 4]
    if bad:
        raise SweepError(f"fold(s) {bad} outside 0-4 (nnU-Net's 5-fold split); use folds in 0-4.")
    plans = _as_list(grid.get("plans", ["nnUNetPlans"]))
    for p in plans:
        if not (folder / f"{p}.json").is_file():
            raise SweepError(f"plans {p!r} not found in {folder}; run nnUNetv2_plan_and_preprocess or "
                             f"nnunetv2-llm plan first.")
    llm = grid.get("llm")
    llm_names = llm_plans(grid["dataset"], plans[0], [str(a) for a in _as_list(llm)]) if llm else []
    llm_trainers = _as_list(grid.get("llm_trainers", ["nnUNetTrainerLLM"])) if llm else []
    for t in llm_trainers:
        check_trainer(t)
    extra = [str(a) for a in _as_list(grid.get("train_args"))]
    combos = [(t, p) for t in trainers for p in plans] + [(t, p) for t in llm_trainers for p in llm_names]
    return [{"id": f"{c}__{t}__{p}__fold{f}", "dataset": folder.name, "configuration": c, "fold": f,
             "trainer": t, "plans": p, "train_args": extra}
            for c in configurations for t, p in combos for f in folds]


def grid_hash(grid: dict) -> str:
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()


def plan_sweep(grid: dict, sweep_dir: Path) -> list[dict]:
    meta = sweep_dir / GRID_FILE
    if meta.exists() and json.loads(meta.read_text())["grid_sha256"] != grid_hash(grid):
        raise SweepError(f"{sweep_dir} holds a sweep of another grid; choose a new -o folder or delete it.")
    jobs = expand(grid)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(meta, {"grid": grid, "grid_sha256": grid_hash(grid), "jobs": jobs})
    return jobs


def load_sweep(sweep_dir: Path) -> list[dict]:
    meta = sweep_dir / GRID_FILE
    if not meta.is_file():
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {GRID_FILE}); run nnunetv2-llm sweep plan first.")
    return json.loads(meta.read_text())["jobs"]


def fold_folder(job: dict, results: str) -> Path:
    return (Path(results) / job["dataset"] / f"{job['trainer']}__{job['plans']}__{job['configuration']}"
            / f"fold_{job['fold']}")


def train_command(job: dict, resume: bool) -> list[str]:
    return [cli_path("nnUNetv2_train"), job["dataset"], job["configuration"], str(job["fold"]),
            "-tr", job["trainer"], "-p", job["plans"], *job["train_args"], *(["--c"] if resume else [])]


def run_job(job: dict, sweep_dir: str, env: dict | None = None) -> str:
    """Run (or resume, or skip) one job; module-level so submitit can pickle it."""
    env = dict(os.environ if env is None else env)
    env["nnUNet_extTrainer"] = os.pathsep.join(ext_trainer_entries(env.get("nnUNet_extTrainer", "")))
    if "cpu" in job["train_args"]:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["nnUNet_n_proc_DA"] = "0"
    folder = fold_folder(job, env["nnUNet_results"])
    logs = Path(sweep_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = logs / f"{job['id']}.state"
    if (folder / "checkpoint_final.pth").exists():
        state.write_text("done")
        return "done"
    command = train_command(job, (folder / "checkpoint_latest.pth").exists())
    state.write_text("running")
    with open(logs / f"{job['id']}.log", "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        rc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    result = "done" if rc == 0 and (folder / "checkpoint_final.pth").exists() else "failed"
    state.write_text(result)
    return result


def job_status(job: dict, sweep_dir: Path) -> tuple[str, str, str]:
    log = sweep_dir / "logs" / f"{job['id']}.log"
    state = sweep_dir / "logs" / f"{job['id']}.state"
    text = log.read_text(errors="replace") if log.exists() else ""
    epochs = re.findall(r"Epoch (\d+)", text)
    status = state.read_text() if state.exists() else "pending"
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "") if status == "failed" else ""
    return status, epochs[-1] if epochs else "-", last


def sbatch_script(sweep_dir: Path, n_jobs: int, args) -> str:
    from submitit.slurm.slurm import _make_sbatch_string
    return _make_sbatch_string(
        command=f"{sys.executable} -u -m submitit.core._submit {sweep_dir / 'slurm'}", folder=sweep_dir / "slurm" / "%j",
        job_name="nnunetv2-llm-sweep", partition=args.partition, time=args.time, gpus_per_node=args.gpus_per_job,
        mem=args.mem, array_parallelism=args.array_parallelism, map_count=n_jobs)


def compare_commands(sweep_dir: Path, jobs: list[dict]) -> list[list[str]]:
    """One ``nnunetv2-llm compare`` per configuration, over every trainer x plans variant of the sweep."""
    commands = []
    for c in dict.fromkeys(j["configuration"] for j in jobs):
        mine = [j for j in jobs if j["configuration"] == c]
        variants = list(dict.fromkeys(f"{j['trainer']}__{j['plans']}" for j in mine))
        folds = sorted({str(j["fold"]) for j in mine}, key=int)
        commands.append([cli_path("nnunetv2-llm"), "compare", "-d", mine[0]["dataset"], "-c", c, "-tr", *variants,
                         "-f", *folds, "-o", str(sweep_dir / f"compare_{c}")])
    return commands


def run_compare(sweep_dir: Path, jobs: list[dict]) -> int:
    rc = 0
    for command in compare_commands(sweep_dir, jobs):
        print("$ " + " ".join(command))
        rc = max(rc, subprocess.run(command).returncode)
    return rc


def cmd_compare(args) -> int:
    sweep_dir = Path(args.sweep_dir).resolve()
    jobs = load_sweep(sweep_dir)
    pending = [j["id"] for j in jobs if job_status(j, sweep_dir)[0] != "done"]
    if pending:
        raise SweepError(f"{len(pending)} job(s) not done (e.g. {pending[0]}); run nnunetv2-llm sweep run first.")
    return run_compare(sweep_dir, jobs)


def cmd_plan_sweep(args) -> int:
    if args.grid:
        grid = load_grid(args.grid)
    else:
        grid = {"dataset": args.dataset, "configurations": args.configurations, "folds": args.folds,
                "trainers": args.trainers, "plans": args.plans,
                "train_args": ["-device", args.device] if args.device else []}
    jobs = plan_sweep(grid, Path(args.output))
    for job in jobs:
        print(" ".join(train_command(job, False)))
    print(f"{len(jobs)} jobs written to {Path(args.output) / GRID_FILE}")
    return 0


def cmd_run(args) -> int:
    sweep_dir = Path(args.sweep_dir).resolve()
    jobs = load_sweep(sweep_dir)
    if args.backend == "local":
        results = [run_job(job, str(sweep_dir)) for job in jobs]
        print(f"{results.count('done')}/{len(jobs)} jobs done")
        if not all(r == "done" for r in results):
            return 1
        return run_compare(sweep_dir, jobs) if args.compare else 0
    try:
        import submitit
    except ImportError:
        raise SweepError("the slurm backend needs submitit: pip install submitit") from None
    if args.dry_run:
        print(sbatch_script(sweep_dir, len(jobs), args))
        return 0
    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm", cluster="slurm")
    executor.update_parameters(slurm_partition=args.partition, timeout_min=args.time, gpus_per_node=args.gpus_per_job,
                               slurm_mem=args.mem, slurm_array_parallelism=args.array_parallelism)
    submitted = executor.map_array(run_job, jobs, [str(sweep_dir)] * len(jobs))
    print(f"submitted {len(submitted)} jobs (array {submitted[0].job_id.split('_')[0]})")
    return 0


def cmd_status(args) -> int:
    from rich.table import Table
    from .environment import console
    sweep_dir = Path(args.sweep_dir)
    table = Table("job", "status", "epoch", "last log line")
    for job in load_sweep(sweep_dir):
        table.add_row(job["id"], *job_status(job, sweep_dir))
    console().print(table)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid of nnU-Net trainings locally or on SLURM, resumable",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sweep_command", required=True)
    plan = sub.add_parser("plan", help="expand a grid into jobs")
    plan.add_argument("grid", nargs="?", help="GRID.json or GRID.yaml (or give the grid as flags)")
    plan.add_argument("-o", "--output", required=True, help="sweep folder")
    plan.add_argument("-d", "--dataset")
    plan.add_argument("-c", "--configurations", nargs="+", default=["2d"])
    plan.add_argument("-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    plan.add_argument("-tr", "--trainers", nargs="+")
    plan.add_argument("-p", "--plans", nargs="+", default=["nnUNetPlans"])
    plan.add_argument("--device", choices=["cuda", "cpu", "mps"], help="nnUNetv2_train -device for every job")
    plan.set_defaults(func=cmd_plan_sweep)
    run = sub.add_parser("run", help="run or resume the jobs of a sweep folder")
    run.add_argument("sweep_dir")
    run.add_argument("--backend", choices=["local", "slurm"], default="local")
    run.add_argument("--gpus-per-job", type=int, default=1)
    run.add_argument("--partition")
    run.add_argument("--time", type=int, default=1440, help="minutes per job")
    run.add_argument("--mem")
    run.add_argument("--array-parallelism", type=int, default=256)
    run.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    run.add_argument("--no-compare", dest="compare", action="store_false",
                     help="do not call nnunetv2-llm compare when every job is done")
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser("compare", help="nnunetv2-llm compare over the sweep's variants (all jobs done)")
    compare.add_argument("sweep_dir")
    compare.set_defaults(func=cmd_compare)
    status = sub.add_parser("status", help="a table of every job")
    status.add_argument("sweep_dir")
    status.set_defaults(func=cmd_status)
