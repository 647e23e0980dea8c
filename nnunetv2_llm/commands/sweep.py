"""nnunetv2-llm sweep: expand a grid of nnU-Net trainings, run it locally or on SLURM (submitit), resume it.

One job is one stock nnUNetv2_train DATASET CONFIG FOLD -tr T -p P call. A job whose fold is done (final
checkpoint and validation) is skipped, one with an unfinished validation runs --val, one with
checkpoint_latest.pth continues with --c: running sweep run again after a crash or a preemption
resumes the grid. A grid (YAML or JSON) holds:

  dataset         id or name (required)
  configurations  nnU-Net configurations (default [2d])
  folds           folds (default [0, 1, 2, 3, 4]; 'all' too)
  trainers        trainer names nnU-Net's lookup finds (required): stock, ours (`nnunetv2-llm trainers`), yours
  plans           plans identifiers (default [nnUNetPlans])
  llm             LLM plans to write first (`nnunetv2-llm plan`'s options as a mapping, or a list of them), e.g.
                  {llm: llama-3.2-1b, variant: layer-sweep} or {llm: smollm2-135m, layer: 0-29, positions: [reference,
                  rope]}; one plans file per layer and per value of a listed option
  llm_trainers    trainers of those plans (default [nnUNetTrainerLLM])
  train_args      extra nnUNetv2_train arguments, e.g. [-device, cpu]
  replicates      trainings of each (trainer, plans, configuration, fold) (default 1); 3 measures training
                  noise, which `sweep compare` then reports per training procedure. Replicate 1 trains into
                  $nnUNet_results, replicate r >= 2 into $nnUNet_results/replicates/<r> (a complete nnUNet_results
                  of its own: stock nnUNetv2_predict and nnUNetv2_find_best_configuration use it when
                  nnUNet_results points there)
  partitions      5-fold partitions of the cases (default 1: nnU-Net's own split). P >= 2 appends partitions 2..P to
                  nnUNet_preprocessed/<dataset>/splits_final.json as folds 5, 6, ... (nnU-Net's own split function
                  with seed 12345 + p - 1; the entries already there are kept byte for byte), and trains the grid's
                  folds in each: fold f of partition p is nnU-Net's fold 5(p-1)+f
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.models import DEFAULT_MODEL
from ..core.spec_options import Option
from .options import DEFAULT_PLANS, Repeatable, add_spec_arguments, layers_type, spec_options


def _options(args):
    from ..sweep.backends import RunOptions, check_options
    options = RunOptions(gpus_per_job=args.gpus_per_job, time=args.time, partition=args.partition, mem=args.mem,
                         array_parallelism=args.array_parallelism)
    check_options(options)
    return options


def compare_requests(sweep_dir: Path, jobs: list[dict], grid: dict | None = None) -> list:
    """One compare per configuration, over every trainer x plans variant of the sweep and its folds; a grid with
    LLM layers also gets the by-layer report (a line per model and wiring, Dice by layer next to plain nnU-Net).
    Fold ``all`` gets a report of its own (``compare_<c>_all``, its set in-sample) when the grid also has folds 0-4:
    it validates on the very cases the other folds validate on, out of fold. A grid's ``partitions: P`` trained folds
    5, 6, ...: they go to one compare with partition 1's, which reads them as P partitions, not one 5P-fold CV."""
    from ..evaluation.compare_request import CompareRequest
    from ..sweep.jobs import replicate
    requests = []
    for c in dict.fromkeys(j["configuration"] for j in jobs):
        mine = [j for j in jobs if j["configuration"] == c]
        variants = list(dict.fromkeys(f"{j['trainer']}__{j['plans']}" for j in mine))
        folds = sorted({str(j["fold"]) for j in mine}, key=lambda f: (f == "all", int(f) if f.isdigit() else 0))
        layer_plans = {j["plans"] for j in mine if "_sweep-" in j["plans"]}  # the plans of the grid's `llm` entries
        by_layer = "series" if (grid or {}).get("llm") and len(layer_plans) > 1 else None
        replicates = max(map(replicate, mine))
        groups = [[f for f in folds if f != "all"], ["all"]] if "all" in folds and len(folds) > 1 else [folds]
        for group in groups:
            suffix = "_all" if group == ["all"] and len(groups) > 1 else ""
            requests.append(CompareRequest(dataset=mine[0]["dataset"], configuration=c, trainers=variants,
                                           folds=group, output=str(sweep_dir / f"compare_{c}{suffix}"),
                                           by_layer=by_layer, replicates=replicates))
    return requests


def compare_sweep(sweep_dir: Path) -> int:
    """`nnunetv2-llm compare` of the sweep's variants, in this process (one report per configuration)."""
    from ..evaluation.compare import run_compare
    from ..evaluation.compared_runs import partition_groups
    from ..sweep.grid import load_meta
    meta = load_meta(sweep_dir)
    for request in compare_requests(sweep_dir, meta["jobs"], meta["grid"]):
        parts = len(partition_groups([f if f == "all" else int(f) for f in request.folds]))
        print(f"compare {' '.join(request.trainers)} (folds {' '.join(request.folds)}"
              f"{f': {parts} partitions' if parts > 1 else ''}) -> {request.output}")
        run_compare(request)
    return 0


def cmd_compare(args) -> int:
    from ..sweep.grid import SweepError, load_sweep
    from ..sweep.jobs import job_status
    sweep_dir = Path(args.sweep_dir).resolve()
    jobs = load_sweep(sweep_dir)
    pending = [j["id"] for j in jobs if job_status(j, sweep_dir)[0] != "done"]
    if pending:
        raise SweepError(f"{len(pending)} job(s) not done (e.g. {pending[0]}); run nnunetv2-llm sweep run first.")
    return compare_sweep(sweep_dir)


def cmd_plan(args) -> int:
    from ..sweep.grid import GRID_FILE, SweepError, check_grid, load_grid, plan_sweep, training_runs_line
    from ..sweep.jobs import shown_command
    options = spec_options(args)
    flags = [flag for flag, given in (("--llm", args.llm), ("--layer", args.layer)) if given] + \
        [Option.flag(name) for name in options]
    if args.grid and flags:
        raise SweepError(f"{'/'.join(flags)}: the LLM flags are for a grid given as flags; in a grid file write them in its "
                         f"llm entry, e.g. llm: {{llm: NAME, layer: 0-15}}.")
    beside_grid = [flag for flag, given in (("-d", args.dataset), ("-tr", args.trainers), ("--device", args.device),
                                             ("-c", args.configurations != ["2d"]),
                                             ("-f", args.folds != [0, 1, 2, 3, 4]),
                                             ("-p", args.plans != [DEFAULT_PLANS]), ("--replicates", args.replicates != 1),
                                             ("--partitions", args.partitions != 1)) if given]
    if args.grid and beside_grid:
        raise SweepError(f"{'/'.join(beside_grid)}: these flags build a grid; {args.grid} is one already: write them "
                         f"in it (dataset, trainers, configurations, folds, plans, replicates, partitions, train_args) "
                         f"or leave out the grid file.")
    if not args.llm and flags:
        raise SweepError(f"{'/'.join(flags)}: the LLM flags choose the plans of --llm; add --llm MODEL (e.g. --llm "
                         f"{DEFAULT_MODEL}).")
    if args.grid:
        grid = load_grid(args.grid)
    else:
        grid = {"dataset": args.dataset, "configurations": args.configurations, "folds": args.folds,
                "trainers": args.trainers, "plans": args.plans,
                "train_args": ["-device", args.device] if args.device else []}
        if args.replicates != 1:
            grid["replicates"] = args.replicates
        if args.partitions != 1:
            grid["partitions"] = args.partitions
        if args.llm:
            grid["llm"] = {"llm": args.llm, **({"layer": args.layer} if args.layer else {}), **options}
        check_grid(grid, "the flags")
    from ..sweep.estimate import estimate
    jobs = plan_sweep(grid, Path(args.output))
    for job in jobs:
        print(shown_command(job))
    print(f"{training_runs_line(jobs)}; written to {Path(args.output) / GRID_FILE}")
    for line in estimate(jobs).lines():
        print(line, flush=True)
    return 0


def cmd_run(args) -> int:
    import os

    from ..core.locks import exclusive
    from ..sweep.backends import array_jobs, import_submitit, run_local, sbatch_script, submit_slurm
    from ..sweep.grid import SweepError, load_sweep, lock_file
    import_submitit(args.backend)  # before anything else: a missing package is the first thing to fix
    options = _options(args)
    sweep_dir = Path(args.sweep_dir).resolve()
    with exclusive(lock_file(sweep_dir), f"the sweep {sweep_dir}") if sweep_dir.is_dir() else _nothing():
        jobs = load_sweep(sweep_dir)  # read while no `sweep plan` writes it
    if not os.environ.get("nnUNet_results"):
        raise SweepError("nnUNet_results is not set; export it (the folder nnUNetv2_train writes to).")
    if args.backend == "local":
        results = run_local(jobs, sweep_dir, options)
        done = results.count("done")
        print(f"{done}/{len(jobs)} jobs done")
        held = [j["id"] for j, r in zip(jobs, results) if r == "held"]
        failed = [j["id"] for j, r in zip(jobs, results) if r not in ("done", "held")]
        if held:
            print(f"held by another run: {', '.join(held)}; follow them with `nnunetv2-llm sweep status "
                  f"{args.sweep_dir}`, then `nnunetv2-llm sweep compare {args.sweep_dir}`", file=sys.stderr)
        if failed:
            print(f"failed: {', '.join(failed)}; see {sweep_dir / 'logs'}; run `nnunetv2-llm sweep run` again to "
                  f"resume", file=sys.stderr)
        if held or failed:
            return 1
        return compare_sweep(sweep_dir) if args.compare else 0
    jobs = array_jobs(jobs)
    if not jobs:
        print("every job is done; nothing to submit")
        return 0
    if args.dry_run:
        from ..core.files import atomic_path
        script = sbatch_script(sweep_dir, jobs, options)
        path = sweep_dir / "slurm" / "sweep.sbatch"
        with atomic_path(path) as tmp:
            Path(tmp).write_text(script)
        print(script)
        print(f"wrote {path}; nothing submitted")
        return 0
    submitted = submit_slurm(jobs, sweep_dir, options)
    print(f"submitted {len(submitted)} jobs (array {submitted[0].job_id.split('_')[0]}); follow them with "
          f"nnunetv2-llm sweep status {args.sweep_dir}, then run nnunetv2-llm sweep compare {args.sweep_dir}")
    return 0


def _nothing():
    import contextlib
    return contextlib.nullcontext()


def cmd_status(args) -> int:
    from rich.table import Table

    from ..core.terminal import console
    from ..sweep.grid import load_sweep
    from ..sweep.jobs import job_status
    sweep_dir = Path(args.sweep_dir)
    table = Table("job", "status", "epoch", "detail")
    for job in load_sweep(sweep_dir):
        table.add_row(job["id"], *job_status(job, sweep_dir))
    console().print(table)
    print("done: final checkpoint and validation of every case of the split; running: a process holds the job's "
          "lock (pid and host named); died: it was running and its process is gone (`sweep run` resumes it); "
          "held jobs are skipped by other runs.")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid of nnU-Net trainings locally or on SLURM, resumable",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sweep_command", required=True, metavar="STEP")
    plan = sub.add_parser("plan", help="expand a grid into jobs (LLM plans and weights first)",
                          description="Validate a grid (a file, or these flags), write the LLM plans it asks for "
                                      "(named ..._sweep-<folder>, so they never replace plans of `nnunetv2-llm plan` "
                                      "or of another sweep) with their layers fetched once into the sweep folder, "
                                      "and write the jobs to SWEEP/sweep.json. Nothing is trained.")
    plan.add_argument("grid", nargs="?", help="GRID.json or GRID.yaml (see `nnunetv2-llm sweep --help`), or the flags")
    plan.add_argument("-o", "--output", required=True, help="sweep folder (created; must not hold another grid)")
    plan.add_argument("-d", "--dataset", help="dataset id or name")
    plan.add_argument("-c", "--configurations", action=Repeatable, default=["2d"], help="configurations (default 2d)")
    plan.add_argument("-f", "--folds", action=Repeatable, default=[0, 1, 2, 3, 4], help="folds (default 0-4; or 'all')")
    plan.add_argument("-tr", "--trainers", action=Repeatable, help="trainers (any nnU-Net's lookup finds)")
    plan.add_argument("-p", "--plans", action=Repeatable, default=[DEFAULT_PLANS],
                      help="plans identifiers (default nnUNetPlans)")
    plan.add_argument("--replicates", type=int, default=1,
                      help="trainings of each fold (default 1; 3 measures training noise, see the grid key)")
    plan.add_argument("--partitions", type=int, default=1,
                      help="5-fold partitions of the cases to train each fold on (default 1, nnU-Net's own split; "
                           "see the grid key)")
    plan.add_argument("--device", choices=["cuda", "cpu", "mps"], help="nnUNetv2_train -device for every job")
    add_spec_arguments(plan, llm_default=None, layer_parser=layers_type,
                       llm_use="also write LLM plans of this model (as `nnunetv2-llm plan --llm`) and train them with "
                               "nnUNetTrainerLLM; the layer is fetched once into the sweep folder: ",
                       layer_help="with --llm: the layer(s), e.g. 0-15 or all (one plans file and job per layer x "
                                  "fold)")
    plan.set_defaults(func=cmd_plan)
    run = sub.add_parser("run", help="run or resume the jobs of a sweep folder",
                         description="Run every job that is not done: locally through submitit's local executor (one "
                                     "at a time on CPU, one per group of --gpus-per-job visible GPUs), or as a SLURM "
                                     "array (--backend slurm). Jobs another run holds are skipped. Ctrl-C stops the "
                                     "jobs this run started; running it again resumes them. When every job is done, "
                                     "a local run calls `sweep compare`.")
    run.add_argument("sweep_dir", help="the sweep folder of `sweep plan`")
    run.add_argument("--backend", choices=["local", "slurm"], default="local", help="where jobs run (default local)")
    run.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (local: jobs run in parallel, one "
                                                                  "per group of this many visible GPUs; default 1)")
    run.add_argument("--partition", help="slurm: the partition")
    run.add_argument("--time", type=int, default=1440, help="minutes per job (default 1440)")
    run.add_argument("--mem", help="slurm: memory per job, e.g. 64G")
    run.add_argument("--array-parallelism", type=int, default=256,
                     help="slurm: array tasks running at once (default 256)")
    run.add_argument("--dry-run", action="store_true", help="slurm: write and print the sbatch script, submit nothing")
    run.add_argument("--no-compare", dest="compare", action="store_false",
                     help="do not call `sweep compare` when every job is done")
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser("compare", help="nnunetv2-llm compare over the sweep's variants (every job done)",
                             description="One `nnunetv2-llm compare` per configuration over every trainer x plans "
                                         "of the sweep and its folds; reports in SWEEP/compare_<configuration>.")
    compare.add_argument("sweep_dir", help="the sweep folder")
    compare.set_defaults(func=cmd_compare)
    status = sub.add_parser("status", help="a table of every job: pending, running, died, unfinished, failed, done",
                            description="Each job's status (done from its results folder; running while a process "
                                        "holds its lock), last epoch, and the process or last log line.")
    status.add_argument("sweep_dir", help="the sweep folder")
    status.set_defaults(func=cmd_status)
