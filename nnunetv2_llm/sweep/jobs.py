"""One job of a sweep: a stock ``nnUNetv2_train`` of one fold, run, resumed or skipped, under a lock.

Done means what compare and export need: ``checkpoint_final.pth`` and nnU-Net's final validation of every case of
the fold's split; a fold with a final checkpoint but an unfinished validation runs ``--val``, one with
``checkpoint_latest.pth`` continues with ``--c``. A job holds ``locks/<job>.lock`` while it runs (filelock: across
processes and, on a shared file system, across nodes), so a second ``sweep run`` skips it, and ``status`` tells a
live job (lock held) from one whose process died (lock free). ``logs/<job>.state`` records its pid and host. It also
holds the lock of the fold it trains (:func:`fold_lock`, beside the results folders), so another sweep over the same
results folder and fold skips it too, naming the job that trains it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from ..core.files import read_json, write_json
from ..core.resolve import spec_in_plans
from ..nnunet.environment import cli_path, nnunet_env
from ..nnunet.datasets import require_folder
from ..nnunet.results import TrainedResults, replicate_prefix, replicate_root, results_folder

LOCKS = "locks"


def replicate(job: dict) -> int:
    return int(job.get("replicate", 1))  # sweeps planned before replicates: 1


def results_root(job: dict, results: str | os.PathLike | None = None) -> Path:
    """The nnUNet_results the job's nnUNetv2_train writes to (replicate r >= 2: ``<nnUNet_results>/replicates/<r>``);
    ``results`` defaults to nnUNet_results, which need not exist yet: nnU-Net creates it when the first job trains, so
    until then every job is pending; only an unset variable is refused."""
    results = results or os.environ.get("nnUNet_results") or None
    return replicate_root(results if results is not None else require_folder("nnUNet_results"), replicate(job))


def job_results(job: dict, results: str | os.PathLike | None = None) -> TrainedResults:
    root = results_root(job, results)
    return TrainedResults(job["dataset"], job["trainer"], job["plans"], job["configuration"],
                          results_folder(job["dataset"], job["trainer"], job["plans"], job["configuration"], root),
                          replicate(job))


def train_command(job: dict, resume: str | None) -> list[str]:
    """The job's stock command; ``resume``: ``--c`` (continue) or ``--val`` (validate only), or None."""
    return [cli_path("nnUNetv2_train"), job["dataset"], job["configuration"], str(job["fold"]),
            "-tr", job["trainer"], "-p", job["plans"], *job["train_args"], *([resume] if resume else [])]


def shown_command(job: dict, resume: str | None = None) -> str:
    """The job's command line as a user types it, with the replicate's nnUNet_results in front (r >= 2)."""
    import shlex
    return replicate_prefix(replicate(job)) + shlex.join(train_command(job, resume))


def resume_flag(v: TrainedResults, fold) -> str | None:
    state = v.fold_state(fold)
    if state.status == "unvalidated":
        return "--val"
    if state.status == "unfinished" and v.checkpoint(fold, "checkpoint_latest.pth").exists():
        return "--c"
    return None


def job_lock(sweep_dir: Path, job: dict) -> Path:
    return Path(sweep_dir) / LOCKS / f"{job['id']}.lock"


def fold_lock(v: TrainedResults, fold) -> Path:
    """The lock of one trained fold, shared by every sweep and every `sweep run`: results root (its replicate),
    dataset, trainer, plans, configuration and fold. It lives beside the results folders, under
    ``<results root>/.locks`` (nnU-Net's dataset lookup skips it), so no sweep creates a results folder before
    nnU-Net does."""
    return v.folder.parent.parent / ".locks" / v.folder.parent.name / v.folder.name / f"fold_{fold}.lock"


def fold_holder(lock: Path) -> str:
    """Who holds a fold lock, as its holder recorded it (a sweep folder's job, its pid and host)."""
    holder = read_json(lock.with_suffix(".json")) if lock.with_suffix(".json").is_file() else {}
    return (f"job {holder.get('job', '?')} of the sweep {holder.get('sweep', '?')} (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')})" if isinstance(holder, dict) else "another run")


def is_held(lock: Path) -> bool:
    """Whether another process holds ``lock`` now (free when it is acquired and released at once)."""
    from filelock import FileLock, Timeout
    if not Path(lock).exists():  # a holder creates it; asking must not (`sweep status` writes nothing)
        return False
    try:
        FileLock(str(lock)).acquire(timeout=0).lock.release()
    except Timeout:
        return True
    return False


def state_path(sweep_dir: Path, job: dict) -> Path:
    return Path(sweep_dir) / "logs" / f"{job['id']}.state"


def read_state(sweep_dir: Path, job: dict) -> dict:
    """The job's recorded state (``{"status": ...}``, with pid and host while it runs); plain text of 0.2 too."""
    path = state_path(sweep_dir, job)
    if not path.exists():
        return {"status": "pending"}
    text = path.read_text().strip()
    try:
        state = json.loads(text)
    except json.JSONDecodeError:
        return {"status": text or "pending"}
    return state if isinstance(state, dict) and "status" in state else {"status": "pending"}


def write_state(sweep_dir: Path, job: dict, status: str, **more) -> None:
    write_json(state_path(sweep_dir, job), {"status": status, "host": socket.gethostname(), "pid": os.getpid(),
                                            "time": time.strftime("%Y-%m-%d %H:%M:%S"), **more})


def trained_sha256(v: TrainedResults) -> str | None:
    """The sha256 of the layer the fold trained with, as the trainer recorded it in the results folder's plans."""
    plans = v.folder / "plans.json"
    if not plans.is_file():
        return None
    spec = spec_in_plans(read_json(plans), v.configuration, str(plans))
    return None if spec is None else spec.sha256


def weights_changed(job: dict, v: TrainedResults) -> str | None:
    """Why a fold trained with other tensors than `sweep plan` recorded, or None when they match (or none pinned)."""
    trained = trained_sha256(v) if job.get("llm_sha256") else None
    if trained is None or trained == job["llm_sha256"]:
        return None
    return (f"the job trained with LLM tensors of sha256 {trained}, but the sweep recorded {job['llm_sha256']} "
            f"({job['llm_weights']}); the weights changed since `sweep plan`")


def plans_clash(job: dict, v: TrainedResults, resume: str | None, env: dict) -> str | None:
    """Why the job's plans (nnUNet_preprocessed/<dataset>/<plans>.json now) may not train in its results folder: other
    folds there (and the job's own fold when it resumes) trained with plans that give another network or data."""
    from ..nnunet.trained_plans import new_plans_fix, trained_plans_clashes
    root = env.get("nnUNet_preprocessed")
    plans_file = Path(root) / job["dataset"] / f"{job['plans']}.json" if root else None
    if plans_file is None or not plans_file.is_file():
        return None
    plans = read_json(plans_file)
    clashes = trained_plans_clashes(v.folder, plans, job["configuration"], skip=None if resume else job["fold"])
    if not clashes:
        return None
    folds = ", ".join(clashes)
    return (f"{plans_file} differs from the plans fold(s) {folds} of {v.folder} trained with "
            f"({next(iter(clashes.values()))}; trained -> now): training fold {job['fold']} would overwrite the "
            f"folder's plans.json and fold(s) {folds} would no longer load, so nothing was started. "
            f"{new_plans_fix(job['dataset'], job['configuration'], job['plans'])}")


def split_clash(job: dict, v: TrainedResults, env: dict) -> str | None:
    """Why the job's fold may not train on the splits file as it is now, for any trainer (stock nnU-Net's would train
    a fold the file lacks on a random 80:20 split): the check our trainers make themselves."""
    from ..nnunet.datasets import ResultsError
    from ..nnunet.splits import check_fold_split
    root = env.get("nnUNet_preprocessed")
    try:
        if root:
            check_fold_split(job["trainer"], Path(root) / job["dataset"], v.folder, job["fold"])
    except ResultsError as e:
        return str(e)
    return None


def log_unwritable(log: Path) -> str | None:
    """Why the job's log cannot be written (made read-only or immutable, a folder in its place), or None: said in
    `sweep run`'s output and `sweep status`, where the trainer's output could not go."""
    try:
        with open(log, "a"):
            pass
    except OSError as e:
        return (f"cannot write the job's log {log} ({e.strerror}); make it writable (or move it away) and run "
                f"`sweep run` again")
    return None


def _stop_tree(process: subprocess.Popen) -> None:
    """Stop the trainer and everything it started (its data-augmentation and export workers)."""
    import psutil
    if process.poll() is None:
        try:
            tree = psutil.Process(process.pid)
            victims = [*tree.children(recursive=True), tree]
        except psutil.NoSuchProcess:
            victims = []
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
    process.wait()


class _TerminatedError(SystemExit):
    """SIGTERM (a cancel, a preemption) turned into an exception, so the trainer's process group is stopped."""


def _raise_on_sigterm(signum, frame):
    raise _TerminatedError(128 + signum)


def run_job(job: dict, sweep_dir: str, env: dict | None = None) -> str:
    """Run (or resume, or validate, or skip) one job; module-level so submitit can pickle it. Returns ``done``,
    ``failed`` or ``held`` (another process runs it)."""
    from filelock import FileLock, Timeout
    # `sweep plan` fetched the layer (llm_sha256): no job touches the hub
    env = nnunet_env(env, "cpu" if "cpu" in job["train_args"] else None, training=True,
                     offline=bool(job.get("llm_sha256")))
    v = job_results(job, env.get("nnUNet_results") or None)  # unset: refused, naming the variable to export
    env["nnUNet_results"] = str(v.folder.parent.parent)  # the replicate's own results root
    sweep_dir = Path(sweep_dir)
    logs = sweep_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(job_lock(sweep_dir, job)))
    job_lock(sweep_dir, job).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return "held"
    trained = fold_lock(v, job["fold"])  # another sweep over this results folder, or a second `sweep run`
    trained.parent.mkdir(parents=True, exist_ok=True)
    fold = FileLock(str(trained))
    try:
        fold.acquire(timeout=0)
    except Timeout:
        write_state(sweep_dir, job, "held", holder=f"fold {job['fold']} of {v.folder} is trained by "
                                                  f"{fold_holder(trained)}; run `sweep run` again when it is done")
        lock.release()
        return "held"
    write_json(trained.with_suffix(".json"), {"sweep": str(sweep_dir.resolve()), "job": job["id"],
                                              "pid": os.getpid(), "host": socket.gethostname()})
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    process = None
    try:
        if v.fold_state(job["fold"]).done:
            changed = weights_changed(job, v)
            if changed:  # a finished job's log is left as it is
                with open(logs / f"{job['id']}.log", "a") as log:
                    log.write(f"error: {changed}.\n")
            write_state(sweep_dir, job, "failed" if changed else "done")
            return "failed" if changed else "done"
        unwritable = log_unwritable(logs / f"{job['id']}.log")
        if unwritable:
            write_state(sweep_dir, job, "failed", error=unwritable)
            return "failed"
        resume = resume_flag(v, job["fold"])
        clash = plans_clash(job, v, resume, env) or split_clash(job, v, env)
        if clash:  # any trainer, stock nnU-Net's too: nothing starts that would overwrite the folder's plans.json
            with open(logs / f"{job['id']}.log", "a") as log:
                log.write(f"error: {clash}\n")
            write_state(sweep_dir, job, "failed")
            return "failed"
        command = train_command(job, resume)
        with open(logs / f"{job['id']}.log", "a") as log:
            log.write(f"$ {shown_command(job, resume)}\n")  # what reproduces the job, the replicate's root in front
            log.flush()
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            write_state(sweep_dir, job, "running", trainer_pid=process.pid)
            try:
                rc = process.wait()
            finally:
                _stop_tree(process)  # on Ctrl-C, SIGTERM or a cancel from submitit, no trainer is left behind
            result = "done" if rc == 0 and v.fold_state(job["fold"]).done else "failed"
            changed = weights_changed(job, v)
            if changed:
                log.write(f"error: {changed}.\n")
                result = "failed"
            elif job.get("llm_sha256") and result == "done":
                log.write(f"LLM tensors sha256 {job['llm_sha256']}, as recorded by `sweep plan`\n")
        write_state(sweep_dir, job, result, exit_code=rc)
        return result
    except BaseException:
        write_state(sweep_dir, job, "interrupted", **({"trainer_pid": process.pid} if process is not None else {}))
        raise
    finally:
        fold.release()
        lock.release()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def job_status(job: dict, sweep_dir: Path, results: str | None = None) -> tuple[str, str, str]:
    """(status, last epoch, detail) of a job: ``done`` from the results folder itself; ``running`` while a process
    holds its lock (pid and host named); ``died`` when it was running and no process holds it any more;
    ``unfinished`` when it was recorded done and its fold has lost part of it since."""
    import re
    log = Path(sweep_dir) / "logs" / f"{job['id']}.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    epochs = re.findall(r"Epoch (\d+)", text)
    epoch = epochs[-1] if epochs else "-"
    state = read_state(sweep_dir, job)
    held = is_held(job_lock(sweep_dir, job))
    v = job_results(job, results)
    if v.fold_state(job["fold"]).done and not held:
        changed = weights_changed(job, v)
        return ("failed", epoch, changed) if changed else ("done", epoch, "")
    if held:
        return "running", epoch, f"pid {state.get('pid', '?')} on {state.get('host', '?')}"
    status = state["status"]
    if status == "done":
        fold = v.fold_state(job["fold"])
        gap = f" ({fold.validation_gap})" if fold.status == "unvalidated" else ""
        return "unfinished", epoch, f"recorded done, but the fold is {fold.status} now{gap}; `sweep run` resumes it"
    if status == "running":
        return "died", epoch, (f"its process (pid {state.get('pid', '?')} on {state.get('host', '?')}) ended without "
                               f"finishing; `sweep run` resumes it")
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "") if status == "failed" else ""
    return status, epoch, state.get("error") or state.get("holder") or last
