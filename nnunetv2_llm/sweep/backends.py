"""Where a sweep's jobs run: submitit's local executor (one job per visible GPU, one at a time on CPU) or a SLURM
job array. Both run :func:`~nnunetv2_llm.sweep.jobs.run_job` for each job."""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .grid import SweepError
from .jobs import fold_lock, is_held, job_lock, job_results, read_state, run_job, shown_command, write_state


@dataclass
class RunOptions:
    """How to run: GPUs per job, minutes per job and the SLURM parameters (submitit's names)."""

    gpus_per_job: int = 1
    time: int = 1440
    partition: str | None = None
    mem: str | None = None
    array_parallelism: int = 256


def check_options(options: RunOptions) -> None:
    for name, value, low in (("--gpus-per-job", options.gpus_per_job, 1), ("--time", options.time, 1),
                             ("--array-parallelism", options.array_parallelism, 1)):
        if value < low:
            cpu = " (jobs planned with --device cpu use no GPU whatever it says)" if name == "--gpus-per-job" else ""
            raise SweepError(f"{name} {value}: accepted are integers >= {low}{cpu}.")
    if options.mem is not None and not re.fullmatch(r"\d+[KMGT]?", options.mem):
        raise SweepError(f"--mem {options.mem!r}: give SLURM's form, e.g. 32G or 64000M.")


def import_submitit(backend: str):
    try:
        import submitit
    except ImportError:
        raise SweepError(f"the {backend} backend runs jobs through submitit, which is not installed in this "
                         f"environment ({sys.executable}); install it with: {sys.executable} -m pip install "
                         f"'submitit>=1.5'") from None
    return submitit


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
    n = gpus_per_job
    slots = [gpus[i:i + n] for i in range(0, len(gpus) - n + 1, n)]
    return slots or [[]]


def train_device(train_args: list[str]) -> str | None:
    """The job's ``nnUNetv2_train -device`` value, or None (nnU-Net then trains on ``cuda``)."""
    args = list(train_args)
    return args[args.index("-device") + 1] if "-device" in args[:-1] else None


def local_jobs(jobs: list[dict], echo=print) -> list[dict]:
    """The jobs as they run on this machine. nnUNetv2_train trains on ``cuda`` unless told otherwise, so without a
    visible GPU a job planned without ``-device`` gets ``-device cpu`` (said once), and one planned with ``-device
    cuda`` is refused before any job starts, with the fix."""
    from ..nnunet.environment import cuda_available
    if cuda_available():
        return _say_full_length_on_cpu(jobs, echo)
    cuda = [j["id"] for j in jobs if train_device(j["train_args"]) == "cuda"]
    if cuda:
        raise SweepError(f"{len(cuda)} job(s) train with -device cuda (e.g. {cuda[0]}), but torch sees no CUDA GPU "
                         f"on this machine. Run them where there is one (--backend slurm), or plan the sweep again "
                         f"with `sweep plan --device cpu` (train_args: [-device, cpu] in a grid file).")
    unset = {j["id"] for j in jobs if train_device(j["train_args"]) is None}
    if unset:
        echo(f"no CUDA GPU visible: {len(unset)} job(s) planned without a device train on the CPU (-device cpu, "
             f"with nnUNet_def_n_proc=1, nnUNet_n_proc_DA=0, OMP_WAIT_POLICY=PASSIVE unless set)")
    return _say_full_length_on_cpu([{**j, "train_args": [*j["train_args"], "-device", "cpu"]} if j["id"] in unset
                                    else j for j in jobs], echo)


def _say_full_length_on_cpu(jobs: list[dict], echo) -> list[dict]:
    """Before anything starts: how many CPU jobs train nnU-Net's full length (weeks on a CPU)."""
    from ..nnunet.lengths import NNUNET_LENGTH, run_length
    full = [j["id"] for j in jobs if train_device(j["train_args"]) == "cpu" and run_length(j["trainer"]) == NNUNET_LENGTH]
    if full:
        echo(f"{len(full)} job(s) train nnU-Net's full length ({NNUNET_LENGTH[0]} epochs of {NNUNET_LENGTH[1]} "
             f"iterations) on the CPU (e.g. {full[0]}); `sweep plan` printed their estimated time. Stop "
             f"with Ctrl-C and use a GPU (--backend slurm) or a short trainer (`nnunetv2-llm trainers` lists them).")
    return jobs


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def run_local(jobs: list[dict], sweep_dir: Path, options: RunOptions, echo=print) -> list[str]:
    """Run the jobs through submitit's local executor: one at a time on CPU, one per GPU slot in parallel. A job
    another process holds is skipped (``held``). On SIGINT or SIGTERM the jobs started here are stopped (their
    trainers too) before this returns; a rerun resumes them."""
    submitit = import_submitit("local")
    jobs = local_jobs(jobs, echo)
    executor = submitit.LocalExecutor(folder=sweep_dir / "local" / "%j")
    # The job controllers write to their own log, not to this terminal (a Ctrl-C there would print their traceback).
    (sweep_dir / "local").mkdir(parents=True, exist_ok=True)
    setup = [f"exec 2>>{shlex.quote(str(sweep_dir / 'local' / 'controllers.log'))}"]
    slots = local_slots(jobs, options.gpus_per_job)
    results, todo, running = {}, list(jobs), {}

    def stop(signum, frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while todo or running:
            for i, slot in enumerate(slots):
                while i not in running and todo:
                    job = todo.pop(0)
                    v = job_results(job)
                    if v.fold_state(job["fold"]).done or is_held(job_lock(sweep_dir, job)) \
                            or is_held(fold_lock(v, job["fold"])):
                        results[job["id"]] = run_job(job, str(sweep_dir))  # marks done, or held; starts nothing
                        if results[job["id"]] == "held":
                            state = read_state(sweep_dir, job)
                            who = state.get("holder") or f"pid {state.get('pid', '?')} on {state.get('host', '?')}"
                            echo(f"{job['id']}: held by another run ({who}); skipped")
                        continue
                    executor.update_parameters(timeout_min=options.time, gpus_per_node=len(slot), visible_gpus=slot,
                                               setup=setup)
                    running[i] = (job, executor.submit(run_job, job, str(sweep_dir)))
                    echo(f"started {job['id']}" + (f" on GPU {','.join(map(str, slot))}" if slot else ""))
            for i, (job, submitted) in list(running.items()):
                if submitted.done():
                    try:
                        results[job["id"]] = submitted.result()
                    except Exception as e:  # the job process died: submitit reports it, the log has the rest
                        write_state(sweep_dir, job, "failed")
                        results[job["id"]] = "failed"
                        text = str(e).strip()
                        echo(f"{job['id']}: {text.splitlines()[-1] if text else type(e).__name__}")
                    state = read_state(sweep_dir, job) if results[job["id"]] in ("failed", "held") else {}
                    why = state.get("error") or state.get("holder")
                    echo(f"{job['id']}: {results[job['id']]}" + (f": {why}" if why else ""))
                    del running[i]
            if running:
                time.sleep(1)
    except _Stop as e:
        stop_descendants()
        for job, _ in running.values():
            write_state(sweep_dir, job, "interrupted")
        raise KeyboardInterrupt(f"stopped by signal {e.signum}: {len(running)} running job(s) stopped") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [results[j["id"]] for j in jobs]


def stop_descendants(timeout: float = 30) -> None:
    """SIGTERM to every process this one started (job controllers, jobs, their trainers): each job stops its
    trainer's process tree; whatever is left after ``timeout`` seconds is killed."""
    import psutil
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def slurm_parameters(options: RunOptions) -> dict:
    """submitit SlurmExecutor parameters (the names of its sbatch writer) from the run options: one source for
    both the real submission and ``--dry-run``."""
    params = {"job_name": "nnunetv2-llm-sweep", "time": options.time, "gpus_per_node": options.gpus_per_job,
              "ntasks_per_node": 1, "array_parallelism": options.array_parallelism}
    if options.partition:
        params["partition"] = options.partition
    if options.mem:
        params["mem"] = options.mem
    return params


def slurm_folder(sweep_dir: Path) -> Path:
    return sweep_dir / "slurm" / "%j"


def array_jobs(jobs: list[dict], echo=print) -> list[dict]:
    """The jobs a SLURM array gets: those whose fold is not done (a done job's task would only skip it); the
    dry run's script and the submission list the same ones, in the same order."""
    todo = [j for j in jobs if not job_results(j).fold_state(j["fold"]).done]
    if len(todo) < len(jobs):
        echo(f"{len(jobs) - len(todo)} job(s) already done, left out of the array")
    return todo


def sbatch_script(sweep_dir: Path, jobs: list[dict], options: RunOptions) -> str:
    """The sbatch array script submitit submits for these jobs (its own writer, its own quoting of the command),
    and each array task's stock command."""
    from submitit.slurm.slurm import _make_sbatch_string
    folder = slurm_folder(sweep_dir).expanduser().absolute()
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    script = _make_sbatch_string(command=command, folder=folder, map_count=len(jobs), **slurm_parameters(options))
    tasks = [f"#   {i}: {shown_command(job)}" for i, job in enumerate(jobs)]
    return (script.rstrip("\n") + "\n\n# Each array task runs one job (nnunetv2_llm.sweep.jobs.run_job), i.e. the "
            "stock command below\n# (replicate r >= 2 of a grid's `replicates` trains into $nnUNet_results/replicates/<r>;\n# with --c when the fold has checkpoint_latest.pth, --val when only its validation "
            "is unfinished;\n# skipped when it is done):\n" + "\n".join(tasks) + "\n")


def submit_slurm(jobs: list[dict], sweep_dir: Path, options: RunOptions) -> list:
    submitit = import_submitit("slurm")
    try:
        executor = submitit.SlurmExecutor(folder=slurm_folder(sweep_dir))
    except RuntimeError as e:
        raise SweepError(f"{e} The slurm backend submits with sbatch from a SLURM login node; use --dry-run to "
                         f"see the script here, or --backend local.") from None
    executor.update_parameters(**slurm_parameters(options))
    return executor.map_array(run_job, jobs, [str(sweep_dir)] * len(jobs))
