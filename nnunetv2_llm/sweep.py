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


GRID_KEYS = ("dataset", "configurations", "folds", "trainers", "plans", "llm", "llm_trainers", "train_args")


def load_grid(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"grid file {path} does not exist; write a JSON or YAML grid (see README) or use flags.")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml
            grid = yaml.safe_load(p.read_text())
        else:
            grid = json.loads(p.read_text())
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: both name the line
        raise SweepError(f"grid file {path} is not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'} "
                         f"({str(e).splitlines()[0]}); fix the file.") from None
    if not isinstance(grid, dict):
        raise SweepError(f"grid file {path} must hold a mapping with keys from {', '.join(GRID_KEYS)}.")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise SweepError(f"grid file {path} has unknown keys {unknown}; accepted keys are {', '.join(GRID_KEYS)}.")
    return grid


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def check_trainer(name: str) -> type:
    """nnU-Net's own lookup (with our trainers on nnUNet_extTrainer), before anything is submitted."""
    os.environ["nnUNet_extTrainer"] = os.pathsep.join(ext_trainer_entries())
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    import contextlib
    import io
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every folder it searches
            found = recursive_find_trainer_class_by_name(name)
    except (RuntimeError, AssertionError):
        found = None
    if found is None:
        raise SweepError(f"unknown trainer {name!r}: nnU-Net's lookup (nnunetv2 and nnUNet_extTrainer) has no class "
                         f"of that name; check the spelling or put its folder on nnUNet_extTrainer.")
    return found


def check_folds(folds: list, folder: Path) -> list:
    """Fold indices within the dataset's splits (splits_final.json, else nnU-Net's 5 folds), or 'all'."""
    splits = folder / "splits_final.json"
    n = len(json.loads(splits.read_text())) if splits.is_file() else 5
    where = f"{splits} has {n} splits" if splits.is_file() else "nnU-Net's default 5-fold split"
    out, bad = [], []
    for f in folds:
        if str(f) == "all":
            out.append("all")
        elif re.fullmatch(r"\d+", str(f)) and int(f) < n:
            out.append(int(f))
        else:
            bad.append(f)
    if bad:
        raise SweepError(f"fold(s) {bad} outside 0-{n - 1} ({where}); use folds in 0-{n - 1}, or 'all'.")
    return out


def llm_plans(dataset: str, plans: str, llm_args: list[str], weights_dir: Path) -> list[str]:
    """Run ``nnunetv2-llm plan`` (its own parser, checks and writer) and return the plans names it wrote; each
    pretrained layer is fetched once into ``weights_dir`` and the plans point at that file, pinned by sha256."""
    from .cli import build_parser
    from .planning import write_plans
    args = build_parser().parse_args(["plan", "-d", str(dataset), "-p", plans, "--overwrite", *llm_args])
    return [p.stem for p in write_plans(args, weights_dir=weights_dir)]


def job_spec(trainer: type, plans_file: Path, configuration: str):
    """The LLM spec a job trains with (a preset trainer's, or the plans' for nnUNetTrainerLLM), or None."""
    from .spec import PLANS_KEY, preset_spec, spec_from_entry
    from .trainers import nnUNetTrainerLLM
    if not issubclass(trainer, nnUNetTrainerLLM):
        return None
    if getattr(trainer, "preset", ""):
        return preset_spec(trainer.preset, **trainer.options)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    entry = PlansManager(str(plans_file)).get_configuration(configuration).configuration.get(PLANS_KEY)
    return None if entry is None else spec_from_entry(entry, f"plans {plans_file}")


def fetch_weights(spec, cache: dict) -> tuple[str | None, str | None]:
    """Read the job's pretrained layer now, once per (source, layer, revision), before any job starts: a hub
    model lands in the hub cache (the jobs then run offline). Returns (files, sha256)."""
    if spec is None or not spec.loads_pretrained:
        return None, None
    key = (spec.source, spec.layer, spec.revision)
    if key not in cache:
        from .weights import load_layer
        weights = load_layer(spec)
        if spec.sha256 is not None and weights.sha256 != spec.sha256:
            raise SweepError(f"layer {spec.layer} of {spec.source} hashes to {weights.sha256}, but the plans pin "
                             f"{spec.sha256}; restore the weights or write the plans again.")
        cache[key] = (", ".join(weights.files), weights.sha256)
    return cache[key]


def expand(grid: dict, sweep_dir: Path) -> list[dict]:
    """Validate a grid (dataset, plans, trainers, folds) and return its jobs, writing LLM plans first."""
    from .planning import dataset_folder
    if "dataset" not in grid or grid["dataset"] in (None, ""):
        raise SweepError("the grid has no 'dataset'; give one, e.g. dataset: 501 (or -d 501).")
    folder = dataset_folder(str(grid["dataset"]))
    configurations = _as_list(grid.get("configurations", ["2d"]))
    trainers = _as_list(grid.get("trainers"))
    if not trainers:
        raise SweepError("the grid has no 'trainers'; list at least one, e.g. trainers: [nnUNetTrainer].")
    classes = {t: check_trainer(t) for t in trainers}
    folds = check_folds(_as_list(grid.get("folds", [0, 1, 2, 3, 4])), folder)
    plans = _as_list(grid.get("plans", ["nnUNetPlans"]))
    for p in plans:
        if not (folder / f"{p}.json").is_file():
            available = sorted(f.stem for f in folder.glob("*Plans*.json"))
            raise SweepError(f"plans {p!r} not found in {folder} (available: {', '.join(available) or 'none'}); run "
                             f"nnUNetv2_plan_and_preprocess or nnunetv2-llm plan first.")
        known = json.loads((folder / f"{p}.json").read_text()).get("configurations", {})
        missing = [c for c in configurations if c not in known]
        if missing:
            raise SweepError(f"plans {p!r} have no configuration {', '.join(missing)} (they have "
                             f"{', '.join(known)}); pick configurations from those.")
    llm = grid.get("llm")
    llm_trainers = _as_list(grid.get("llm_trainers", ["nnUNetTrainerLLM"])) if llm else []
    classes.update({t: check_trainer(t) for t in llm_trainers})
    llm_names = llm_plans(grid["dataset"], plans[0], [str(a) for a in _as_list(llm)], sweep_dir / "weights") \
        if llm else []
    extra = [str(a) for a in _as_list(grid.get("train_args"))]
    combos = [(t, p) for t in trainers for p in plans] + [(t, p) for t in llm_trainers for p in llm_names]
    cache, jobs = {}, []
    for c in configurations:
        for t, p in combos:
            files, sha = fetch_weights(job_spec(classes[t], folder / f"{p}.json", c), cache)
            jobs += [{"id": f"{c}__{t}__{p}__fold{f}", "dataset": folder.name, "configuration": c, "fold": f,
                      "trainer": t, "plans": p, "train_args": extra, "llm_weights": files, "llm_sha256": sha}
                     for f in folds]
    return jobs


def grid_hash(grid: dict) -> str:
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()


def plan_sweep(grid: dict, sweep_dir: Path) -> list[dict]:
    meta = sweep_dir / GRID_FILE
    if meta.exists() and json.loads(meta.read_text())["grid_sha256"] != grid_hash(grid):
        raise SweepError(f"{sweep_dir} holds a sweep of another grid; choose a new -o folder or delete it.")
    jobs = expand(grid, sweep_dir)
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


def trained_sha256(folder: Path) -> str | None:
    """The sha256 the trainer logged for the layer it loaded, from the fold's newest nnU-Net training log."""
    logs = sorted(folder.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        found = re.findall(r"LLM block: .*\(sha256 ([0-9a-f]{64}) from", log.read_text(errors="replace"))
        if found:
            return found[-1]
    return None


def run_job(job: dict, sweep_dir: str, env: dict | None = None) -> str:
    """Run (or resume, or skip) one job; module-level so submitit can pickle it."""
    env = dict(os.environ if env is None else env)
    env["nnUNet_extTrainer"] = os.pathsep.join(ext_trainer_entries(env.get("nnUNet_extTrainer", "")))
    if job.get("llm_sha256"):
        env["HF_HUB_OFFLINE"] = "1"  # `sweep plan` fetched the layer: no job touches the hub
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
        trained = trained_sha256(folder) if job.get("llm_sha256") else None
        if trained is not None and trained != job["llm_sha256"]:
            log.write(f"error: the job trained with LLM tensors of sha256 {trained}, but the sweep recorded "
                      f"{job['llm_sha256']} ({job['llm_weights']}); the weights changed since `sweep plan`.\n")
            result = "failed"
        elif trained is not None:
            log.write(f"LLM tensors sha256 {trained}, as recorded by `sweep plan`\n")
    state.write_text(result)
    return result


def visible_gpus() -> list[int]:
    """The GPUs local jobs may use: CUDA_VISIBLE_DEVICES (integer indices), else every device torch sees."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", value):
        return [int(v) for v in value.split(",")]
    if value is not None and not value.strip():
        return []
    import torch
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def local_slots(jobs: list[dict], gpus_per_job: int) -> list[list[int]]:
    """One slot per group of ``gpus_per_job`` visible GPUs (jobs run in parallel, one per slot, each with its
    own CUDA_VISIBLE_DEVICES); a single GPU-less slot when the jobs run on CPU or no GPU is visible."""
    gpus = [] if any("cpu" in j["train_args"] for j in jobs) else visible_gpus()
    n = max(1, gpus_per_job)
    slots = [gpus[i:i + n] for i in range(0, len(gpus) - n + 1, n)]
    return slots or [[]]


def run_local(jobs: list[dict], sweep_dir: Path, args) -> list[str]:
    """Run the jobs through submitit's local executor: one at a time on CPU, one per GPU slot in parallel."""
    import time
    submitit = import_submitit("local")
    executor = submitit.LocalExecutor(folder=sweep_dir / "local" / "%j")
    slots = local_slots(jobs, args.gpus_per_job)
    results = {}
    todo, running = list(jobs), {}
    while todo or running:
        for i, slot in enumerate(slots):
            while i not in running and todo:
                job = todo.pop(0)
                if (fold_folder(job, os.environ["nnUNet_results"]) / "checkpoint_final.pth").exists():
                    results[job["id"]] = run_job(job, str(sweep_dir))  # marks it done, starts nothing
                    continue
                executor.update_parameters(timeout_min=args.time, gpus_per_node=len(slot), visible_gpus=slot)
                running[i] = (job, executor.submit(run_job, job, str(sweep_dir)))
                print(f"started {job['id']}" + (f" on GPU {','.join(map(str, slot))}" if slot else ""), flush=True)
        for i, (job, submitted) in list(running.items()):
            if submitted.done():
                try:
                    results[job["id"]] = submitted.result()
                except Exception as e:  # the job process died: submitit reports it, the log has the rest
                    (sweep_dir / "logs" / f"{job['id']}.state").write_text("failed")
                    results[job["id"]] = "failed"
                    print(f"{job['id']}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
                print(f"{job['id']}: {results[job['id']]}", flush=True)
                del running[i]
        if running:
            time.sleep(1)
    return [results[j["id"]] for j in jobs]


def job_status(job: dict, sweep_dir: Path) -> tuple[str, str, str]:
    log = sweep_dir / "logs" / f"{job['id']}.log"
    state = sweep_dir / "logs" / f"{job['id']}.state"
    text = log.read_text(errors="replace") if log.exists() else ""
    epochs = re.findall(r"Epoch (\d+)", text)
    status = state.read_text() if state.exists() else "pending"
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "") if status == "failed" else ""
    return status, epochs[-1] if epochs else "-", last


def import_submitit(backend: str):
    try:
        import submitit
    except ImportError:
        raise SweepError(f"the {backend} backend runs jobs through submitit, which is not installed in this "
                         f"environment ({sys.executable}); install it with: {sys.executable} -m pip install "
                         f"'submitit>=1.5'") from None
    return submitit


def slurm_parameters(args) -> dict:
    """submitit SlurmExecutor parameters (the names of its sbatch writer) from the run options: one source for
    both the real submission and ``--dry-run``."""
    params = {"job_name": "nnunetv2-llm-sweep", "time": args.time, "gpus_per_node": args.gpus_per_job,
              "ntasks_per_node": 1, "array_parallelism": args.array_parallelism}
    if args.partition:
        params["partition"] = args.partition
    if args.mem:
        params["mem"] = args.mem
    return params


def sbatch_script(sweep_dir: Path, jobs: list[dict], args) -> str:
    """The sbatch array script submitit submits for these jobs, and each array task's stock command."""
    from submitit.slurm.slurm import _make_sbatch_string
    folder = sweep_dir / "slurm" / "%j"
    command = f"{sys.executable} -u -m submitit.core._submit {folder}"
    script = _make_sbatch_string(command=command, folder=folder, map_count=len(jobs), **slurm_parameters(args))
    tasks = [f"#   {i}: {' '.join(train_command(job, False))}" for i, job in enumerate(jobs)]
    return (script.rstrip("\n") + "\n\n# Each array task runs one job (nnunetv2_llm.sweep.run_job), i.e. the stock "
            "command below\n# (with --c when the fold has checkpoint_latest.pth; skipped when it has "
            "checkpoint_final.pth):\n" + "\n".join(tasks) + "\n")


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
    if args.grid and (args.llm or args.layer):
        raise SweepError("--llm/--layer are flags for a grid given as flags; in a grid file write "
                         "llm: [--llm, NAME, --layer, 0-15].")
    if args.grid:
        grid = load_grid(args.grid)
    else:
        grid = {"dataset": args.dataset, "configurations": args.configurations, "folds": args.folds,
                "trainers": args.trainers, "plans": args.plans,
                "train_args": ["-device", args.device] if args.device else []}
        if args.llm:
            grid["llm"] = ["--llm", args.llm, *(["--layer", args.layer] if args.layer else [])]
    jobs = plan_sweep(grid, Path(args.output))
    for job in jobs:
        print(" ".join(train_command(job, False)))
    print(f"{len(jobs)} jobs written to {Path(args.output) / GRID_FILE}")
    return 0


def cmd_run(args) -> int:
    submitit = import_submitit(args.backend)  # before anything else: a missing package is the first thing to fix
    sweep_dir = Path(args.sweep_dir).resolve()
    jobs = load_sweep(sweep_dir)
    if not os.environ.get("nnUNet_results"):
        raise SweepError("nnUNet_results is not set; export it (the folder nnUNetv2_train writes to).")
    if args.backend == "local":
        results = run_local(jobs, sweep_dir, args)
        print(f"{results.count('done')}/{len(jobs)} jobs done")
        if not all(r == "done" for r in results):
            failed = [j["id"] for j, r in zip(jobs, results) if r != "done"]
            print(f"failed: {', '.join(failed)}; see {sweep_dir / 'logs'}; run `nnunetv2-llm sweep run` again to "
                  f"resume", file=sys.stderr)
            return 1
        return run_compare(sweep_dir, jobs) if args.compare else 0
    if args.dry_run:
        script = sbatch_script(sweep_dir, jobs, args)
        path = sweep_dir / "slurm" / "sweep.sbatch"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        print(script)
        print(f"wrote {path}; nothing submitted")
        return 0
    try:
        executor = submitit.SlurmExecutor(folder=sweep_dir / "slurm" / "%j")
    except RuntimeError as e:
        raise SweepError(f"{e} The slurm backend submits with sbatch from a SLURM login node; use --dry-run to "
                         f"see the script here, or --backend local.") from None
    executor.update_parameters(**slurm_parameters(args))
    submitted = executor.map_array(run_job, jobs, [str(sweep_dir)] * len(jobs))
    print(f"submitted {len(submitted)} jobs (array {submitted[0].job_id.split('_')[0]}); follow them with "
          f"nnunetv2-llm sweep status {args.sweep_dir}, then run nnunetv2-llm sweep compare {args.sweep_dir}")
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
    plan.add_argument("-f", "--folds", nargs="+", default=[0, 1, 2, 3, 4], help="folds (0-4 or 'all')")
    plan.add_argument("-tr", "--trainers", nargs="+")
    plan.add_argument("-p", "--plans", nargs="+", default=["nnUNetPlans"])
    plan.add_argument("--device", choices=["cuda", "cpu", "mps"], help="nnUNetv2_train -device for every job")
    plan.add_argument("--llm", help="also write LLM plans (nnunetv2-llm plan --llm) and train them with "
                                    "nnUNetTrainerLLM; the layer is fetched once into the sweep folder")
    plan.add_argument("--layer", help="with --llm: the layer(s), e.g. 0-15 (one plans file and job per layer x fold)")
    plan.set_defaults(func=cmd_plan_sweep)
    run = sub.add_parser("run", help="run or resume the jobs of a sweep folder")
    run.add_argument("sweep_dir")
    run.add_argument("--backend", choices=["local", "slurm"], default="local")
    run.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (local: jobs run in parallel, one "
                                                                  "per group of this many visible GPUs)")
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
