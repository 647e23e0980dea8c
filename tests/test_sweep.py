"""nnunetv2-llm sweep: grid expansion, bad input, SLURM dry-run, and a real local run that resumes."""
import json
import shutil

import pytest

from conftest import NNUNetEnv


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
    assert "nnUNetv2_train Dataset501_Synth2D 2d 1 -tr nnUNetTrainerSmolLM2_2epochs_5its -p nnUNetPlans" in proc.stdout
    other = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0",
                          "-tr", "nnUNetTrainer_2epochs_5its", check=False)
    assert other.returncode == 2 and "another grid" in other.stderr


@pytest.mark.parametrize("flags,message", [
    (["-tr", "nnUNetTrainerNoSuch"], "unknown trainer 'nnUNetTrainerNoSuch'"),
    (["-tr", "nnUNetTrainer", "-f", "5"], "outside 0-4"),
    (["-tr", "nnUNetTrainer", "-p", "NoPlans"], "plans 'NoPlans' not found"),
])
def test_plan_bad_input(sweep_env, tmp_path, flags, message):
    proc = sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", tmp_path / "s", "-d", "501", *flags, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "s").exists()


def test_layer_range_grid(sweep_env, tmp_path, smollm2_gguf):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"dataset: 501\ntrainers: [nnUNetTrainer]\nfolds: [0, 1]\n"
                    f"llm: [--llm, '{smollm2_gguf}', --layer, 0-2]\n")
    sweep_env.run("nnunetv2-llm", "sweep", "plan", grid, "-o", tmp_path / "s")
    jobs = json.loads((tmp_path / "s" / "sweep.json").read_text())["jobs"]
    llm_plans = sorted({j["plans"] for j in jobs if j["trainer"] == "nnUNetTrainerLLM"})
    assert len(llm_plans) == 3 and all((sweep_env.preprocessed_folder(501) / f"{p}.json").is_file()
                                       for p in llm_plans)
    assert len([j for j in jobs if j["trainer"] == "nnUNetTrainerLLM"]) == 6


def test_slurm_dry_run(sweep_env, tmp_path):
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0", "1", "2",
                  "-tr", "nnUNetTrainer_2epochs_5its")
    proc = sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "slurm", "--dry-run",
                         "--partition", "gpu", "--gpus-per-job", "2", "--time", "600", "--array-parallelism", "2")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=600",
                 "#SBATCH --array=0-2%2"):
        assert line in proc.stdout


@pytest.mark.slow
def test_local_run_resumes_and_skips(sweep_env, tmp_path):
    out = tmp_path / "sweep"
    sweep_env.run("nnunetv2-llm", "sweep", "plan", "-o", out, "-d", "501", "-f", "0",
                  "-tr", "nnUNetTrainer_2epochs_5its", "--device", "cpu")
    sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", "--no-compare")
    log = next((out / "logs").glob("*.log"))
    first = log.read_text()
    assert first.count("$ ") == 1
    fold = sweep_env.results_folder(501, "nnUNetTrainer_2epochs_5its") / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    sweep_env.run("nnunetv2-llm", "sweep", "run", out, "--backend", "local", "--no-compare")
    assert log.read_text() == first
    status = sweep_env.run("nnunetv2-llm", "sweep", "status", out)
    assert "done" in status.stdout


def test_compare_command(sweep_env, tmp_path):
    from nnunetv2_llm.sweep import compare_commands
    jobs = [{"dataset": "Dataset501_Synth2D", "configuration": "2d", "fold": f, "trainer": t, "plans": "nnUNetPlans"}
            for t in ("nnUNetTrainer_2epochs_5its", "nnUNetTrainerSmolLM2_2epochs_5its") for f in (1, 0)]
    (command,) = compare_commands(tmp_path, jobs)
    assert command[1:] == ["compare", "-d", "Dataset501_Synth2D", "-c", "2d", "-tr",
                           "nnUNetTrainer_2epochs_5its__nnUNetPlans", "nnUNetTrainerSmolLM2_2epochs_5its__nnUNetPlans",
                           "-f", "0", "1", "-o", str(tmp_path / "compare_2d")]
