"""Bad input never gets a traceback or loses a file: each case feeds one wrong, damaged or hand-edited input
and checks the message (the value or file, and the fix), the exit code and that nothing was overwritten or
half-written. This is the place to add the next such case.
"""
import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
import torch

from nnunetv2_llm.commands import cli
from nnunetv2_llm.core.spec import LLMSpec, LLMSpecError
from nnunetv2_llm.core.resolve import model_spec


def run(capsys, *args) -> tuple[int, str]:
    """``nnunetv2-llm ARGS`` in this process: (exit code, what it printed to stderr)."""
    rc = cli.main([str(a) for a in args])
    return rc, capsys.readouterr().err


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes and mtime, to prove nothing changed."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def layer_file(tmp_path_factory, smollm2_gguf):
    out = tmp_path_factory.mktemp("layer") / "smollm2_L14.safetensors"
    assert cli.main(["extract", "--llm", "smollm2-135m", "-o", str(out)]) == 0
    return out


# ---------------------------------------------------------------- extract

@pytest.fixture
def full_disk(tmp_path):
    """A real file system of 256 KiB (a tmpfs: mounting one needs root, so the test is skipped elsewhere)."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_extract_onto_a_full_disk_says_so_and_leaves_nothing(full_disk, capsys, smollm2_gguf):
    """Issue 30 #14: a layer file larger than the disk: one line naming the disk, free space and the size needed (no
    SafetensorError traceback), and no temporary file left."""
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", full_disk / "L14.safetensors")
    assert rc == 2 and "Traceback" not in err, err
    assert re.search(rf"the disk holding {re.escape(str(full_disk))} is full \(.* free; L14.safetensors needs "
                     rf"\d+\.\d MiB\); nothing was written", err), err
    assert list(full_disk.iterdir()) == [], "nothing half-written"


def test_export_onto_a_full_disk_says_so_and_leaves_nothing(full_disk, in_process_env, dataset_2d, capsys):
    """Issue 30 #14: export onto a disk too small for the submission: one line with the size needed; no folder."""
    in_process_env.trained(dataset_2d, "nnUNetTrainer_2epochs_5its")
    rc, err = run(capsys, "export", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainer_2epochs_5its", "-f", "0",
                  "-o", full_disk / "submission")
    assert rc == 2 and "Traceback" not in err, err
    assert re.search(rf"the disk holding {re.escape(str(full_disk))} is full \(.* free; the submission needs "
                     rf"\d+\.\d MiB\); nothing was written", err), err
    assert list(full_disk.iterdir()) == [], "nothing half-written"


def test_extract_refuses_existing_files_folders_and_other_endings(tmp_path, capsys, layer_file):
    notes = tmp_path / "notes.safetensors"
    notes.write_text("my notes")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", notes)
    assert rc == 2 and f"-o {notes} exists; pass --overwrite" in err
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", notes, "--overwrite")
    assert rc == 2 and "is not a layer file written by `nnunetv2-llm extract`" in err
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", tmp_path)
    assert rc == 2 and "is a folder; name the file to write" in err
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", tmp_path / "layer.bin")
    assert rc == 2 and "must end in .safetensors" in err
    assert snapshot(tmp_path) == before, "nothing overwritten, nothing half-written"


def test_extract_overwrite_replaces_a_damaged_layer_file_and_says_so(tmp_path, capsys, layer_file):
    """Issue 21 #23: a truncated file from extract was refused as 'not a layer file written by extract' even with
    --overwrite; another writer's safetensors file is still never replaced."""
    from safetensors.torch import save_file

    from nnunetv2_llm.core.weights import load_extracted
    damaged = tmp_path / "layer.safetensors"
    damaged.write_bytes(layer_file.read_bytes()[: layer_file.stat().st_size // 2])
    assert cli.main(["extract", "--llm", "smollm2-135m", "-o", str(damaged), "--overwrite"]) == 0
    assert "is a damaged layer file of `nnunetv2-llm extract`" in capsys.readouterr().out
    assert load_extracted(damaged).sha256 == load_extracted(layer_file).sha256
    foreign = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    before = foreign.read_bytes()
    rc, err = run(capsys, "extract", "--llm", "smollm2-135m", "-o", foreign, "--overwrite")
    assert rc == 2 and "another writer's safetensors file" in err and foreign.read_bytes() == before


def test_extract_overwrites_its_own_file_and_prints_a_usable_hint(tmp_path, capsys, layer_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(layer_file, tmp_path / "mine.safetensors")
    assert cli.main(["extract", "--llm", "smollm2-135m", "-o", "mine.safetensors", "--overwrite"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("use it offline with:")][0]
    assert f"--llm {tmp_path / 'mine.safetensors'}" in hint, "absolute: valid from any directory"


# ---------------------------------------------------------------- dice

@pytest.fixture
def dice_inputs(nnunet_env, dataset_2d, tmp_path):
    dataset = nnunet_env.dataset_folder(dataset_2d)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(dataset / "labelsTs", gt)
    shutil.copytree(dataset / "labelsTs", pred)
    return dataset, gt, pred


def test_dice_names_unmatched_cases_empty_folders_and_bad_dataset_json(dice_inputs, tmp_path, capsys):
    dataset, gt, pred = dice_inputs
    shutil.copy(pred / "synth_020.png", pred / "stranger.png")
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", pred, "--dataset-json", dataset / "dataset.json")
    assert rc == 2 and "predictions without a reference" in err and "stranger.png" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", empty, "--dataset-json", dataset / "dataset.json")
    assert rc == 2 and f"prediction folder {empty} holds no files ending in '.png'" in err
    rc, err = run(capsys, "dice", "--gt", empty, "--pred", pred, "--dataset-json", dataset / "dataset.json")
    assert rc == 2 and f"reference folder {empty} holds no files" in err
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", pred, "--dataset-json", tmp_path / "missing.json")
    assert rc == 2 and f"{tmp_path / 'missing.json'} does not exist" in err
    broken = tmp_path / "dataset.json"
    broken.write_text('{"labels": {"background": 0,')
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", pred, "--dataset-json", broken)
    assert rc == 2 and f"{broken} is not valid JSON" in err and "fix the file" in err
    assert not (pred / "summary.json").exists(), "refused before anything was written"


def test_dice_names_missing_predictions_and_writes_its_summary_only_where_asked(dice_inputs, tmp_path, capsys):
    """Issue 21 #10: predictions for 2 of 4 references: the mean says over how many, the others are named;
    --require-all refuses; nothing is written into the folders (a raw dataset's labelsTs, say) unless -o says where."""
    dataset, gt, pred = dice_inputs
    cases = sorted(pred.glob("*.png"))
    for extra in cases[2:]:
        extra.unlink()
    before = snapshot(gt) | snapshot(pred)
    rc = cli.main(["dice", "--gt", str(gt), "--pred", str(pred), "--dataset-json", str(dataset / "dataset.json")])
    out = capsys.readouterr().out
    assert rc == 0 and f"(over 2 of {len(cases)} references)" in out
    assert "not scored: 2 reference(s) without a prediction" in out and cases[2].name in out and cases[3].name in out
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", pred, "--dataset-json", dataset / "dataset.json",
                  "--require-all")
    assert rc == 2 and f"2 of {len(cases)} references have no prediction" in err and cases[3].name in err
    summary = tmp_path / "scores" / "summary.json"
    assert cli.main(["dice", "--gt", str(gt), "--pred", str(pred), "--dataset-json", str(dataset / "dataset.json"),
                     "-o", str(summary)]) == 0
    written = json.loads(summary.read_text())
    assert len(written["metric_per_case"]) == 2 and set(written["mean"]) == {"1"}
    assert snapshot(gt) | snapshot(pred) == before, "nothing written next to the references or predictions"


def test_dice_says_which_cases_it_left_out_of_the_mean(dice_inputs, capsys):
    """Issue 38 #8: a case whose reference and prediction hold no label has no Dice (NaN): the mean leaves it out
    and says so ("over 3 of 4", naming it), not "over 4 of 4"."""
    from PIL import Image
    dataset, gt, pred = dice_inputs
    cases = sorted(gt.glob("*.png"))
    for folder in (gt, pred):
        size = Image.open(folder / cases[0].name).size
        Image.new("L", size).save(folder / cases[0].name)
    rc = cli.main(["dice", "--gt", str(gt), "--pred", str(pred), "--dataset-json", str(dataset / "dataset.json")])
    out = capsys.readouterr().out
    assert rc == 0 and f"(over {len(cases) - 1} of {len(cases)} references)" in out, out
    assert (f"not scored: 1 case(s) whose reference and prediction hold no label (Dice undefined, left out of the "
            f"mean): {cases[0].name[:-4]}") in out


def test_dice_refuses_a_prediction_of_another_shape(dice_inputs, tmp_path, capsys):
    """Issue 21 #22: a broadcast ValueError before."""
    from PIL import Image
    dataset, gt, pred = dice_inputs
    victim = sorted(pred.glob("*.png"))[0]
    Image.new("L", (20, 30)).save(victim)
    rc, err = run(capsys, "dice", "--gt", gt, "--pred", pred, "--dataset-json", dataset / "dataset.json")
    assert rc == 2 and f"{victim} has shape" in err and "its reference" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["dice", "compare", "info"])
def test_a_dataset_json_that_is_a_list_is_named(in_process_env, dataset_2d, dice_inputs, tmp_path, capsys, command):
    """Issue 21 #19."""
    dataset, gt, pred = dice_inputs
    run_folder = in_process_env.results / in_process_env.dataset_folder(dataset_2d).name / \
        "nnUNetTrainerListed__nnUNetPlans__2d"
    run_folder.mkdir(parents=True)
    shutil.copy(in_process_env.preprocessed_folder(dataset_2d) / "nnUNetPlans.json", run_folder / "plans.json")
    listed = run_folder / "dataset.json"
    listed.write_text("[1, 2]")
    args = {"dice": ["dice", "--gt", gt, "--pred", pred, "--dataset-json", listed],
            "compare": ["compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerListed", "-f", "0",
                        "-o", tmp_path / "report"],
            "info": ["info", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerListed"]}[command]
    try:
        rc, err = run(capsys, *args)
    finally:
        shutil.rmtree(run_folder)
    assert rc == 2 and str(listed) in err and "dataset.json" in err and "Traceback" not in err, err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["compare", "export", "info", "analyze"])
def test_a_dataset_that_is_neither_an_id_nor_a_name(in_process_env, dataset_2d, tmp_path, capsys, command):
    """Issue 21 #16: nnU-Net's ValueError traceback before; now the value, the datasets there and the closest."""
    args = {"compare": ["compare", "-c", "2d", "-tr", "nnUNetTrainer", "-o", tmp_path / "r"],
            "export": ["export", "-c", "2d", "-o", tmp_path / "s"],
            "info": ["info", "-c", "2d"], "analyze": ["analyze", "-c", "2d", "-tr", "nnUNetTrainer"]}[command]
    rc, err = run(capsys, *args, "-d", "abc")
    assert rc == 2 and "-d 'abc' is neither a dataset id" in err and "Dataset501_Synth2D" in err
    rc, err = run(capsys, *args, "-d", "Dataset501_Synth2d")
    assert rc == 2 and "Did you mean 'Dataset501_Synth2D'" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_mistyped_trainer_gets_the_closest_names(in_process_env, dataset_2d, capsys):
    """Issue 22: `info -tr nnUNetTrainerSmolLM` answered only that it is neither ours nor trained."""
    rc, err = run(capsys, "info", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerSmolLM")
    assert rc == 2 and "Did you mean 'nnUNetTrainerSmolLM2'" in err and "nnunetv2-llm trainers" in err


def test_compare_refuses_a_results_folder_of_another_dataset(in_process_env, dataset_2d, tmp_path, capsys):
    """Issue 21 #4: -d 501 with a results folder of Dataset502 reported 502's cases under 501's title."""
    other = in_process_env.results / "Dataset502_Other" / "nnUNetTrainer__nnUNetPlans__2d"
    other.mkdir(parents=True)
    (other / "plans.json").write_text("{}")
    (other / "dataset.json").write_text("{}")
    try:
        rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", other, "-f", "0", "-o", tmp_path / "r")
    finally:
        shutil.rmtree(other.parent)
    assert rc == 2 and "belongs to Dataset502_Other, not to -d Dataset501_Synth2D" in err
    assert not (tmp_path / "r").exists()


def test_a_results_plans_json_without_the_configuration(in_process_env, dataset_2d, tmp_path, capsys):
    """Issue 21 #20: plans.json of {"configurations": {}} failed after scoring and left cache/ behind."""
    run_folder = in_process_env.results / in_process_env.dataset_folder(dataset_2d).name / \
        "nnUNetTrainerEmpty__nnUNetPlans__2d"
    run_folder.mkdir(parents=True)
    (run_folder / "plans.json").write_text('{"configurations": {}}')
    (run_folder / "dataset.json").write_text(json.dumps(in_process_env.dataset_json(dataset_2d)))
    try:
        rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerEmpty", "-f", "0",
                      "-o", tmp_path / "report")
    finally:
        shutil.rmtree(run_folder)
    assert rc == 2 and "holds no configuration '2d'" in err
    assert not (tmp_path / "report").exists(), "refused before anything is written"


@pytest.mark.parametrize("value", ["0", "-5", "99"])
def test_compare_checks_the_bootstrap_range_first(in_process_env, dataset_2d, tmp_path, capsys, value):
    """Issue 21 #21: scipy's ValueError after scoring before."""
    rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainer", "--bootstrap", value,
                  "-o", tmp_path / "report")
    assert rc == 2 and f"--bootstrap {value}: accepted are 100..1000000" in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("option, expected", [
    (["--primary", "Foo"], "--primary Foo: accepted are Dice, IoU, NSD, HD95"),
    (["--bootstrap", "5"], "--bootstrap 5: accepted are 100..1000000"),
    (["-np", "0"], "-np 0: give at least 1 process"),
    (["--replicates", "0"], "--replicates 0: give 1 or more training replicates per fold"),
    (["-p", "A", "B", "C"], "-p takes one plans name for all variants or one per -tr (2); got 3"),
])
def test_compare_checks_its_options_before_reading_any_file(in_process_env, tmp_path, capsys, option, expected):
    """Issue 40: a bad --primary was reported only after the dataset lookup (a missing dataset came first); each
    option value is checked before the dataset, the results or the report folder are read."""
    rc, err = run(capsys, "compare", "-d", "987", "-c", "2d", "-tr", "nnUNetTrainer", "-tr", "nnUNetTrainerOther",
                  *option, "-o", tmp_path / "report")
    assert rc == 2 and expected in err and "Traceback" not in err, err
    assert "987" not in err, err
    assert not (tmp_path / "report").exists()


def test_check_refuses_an_input_folder_that_does_not_exist(tmp_path, capsys):
    """Issue 21 #18: FileNotFoundError before."""
    from nnunetv2_llm.submission.runtime import EXPORT_FORMAT
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "export.json").write_text(json.dumps({"format": EXPORT_FORMAT}))
    rc, err = run(capsys, "export", "--check", submission, "-i", tmp_path / "nonexistent")
    assert rc == 2 and f"-i {tmp_path / 'nonexistent'} is not a folder" in err


def test_a_damaged_export_json_is_not_said_to_come_back_by_itself(tmp_path, capsys):
    """Issue 21 #23 (second half): its message tells to export again, not that nnU-Net writes it."""
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "export.json").write_text("{garbage")
    rc, err = run(capsys, "export", "--check", submission)
    assert rc == 2 and "export.json is not valid JSON" in err and "export the model again" in err
    assert "nnU-Net writes it again" not in err


# ---------------------------------------------------------------- damaged GGUF files

@pytest.mark.parametrize("damage", ["random bytes", "truncated", "very short"])
def test_damaged_gguf_names_the_file_and_how_to_get_a_good_copy(damage, smollm2_gguf, tmp_path, capsys):
    data = smollm2_gguf.read_bytes()
    content = {"random bytes": os.urandom(4096), "truncated": data[: len(data) // 2], "very short": data[:100]}
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content[damage])
    out = tmp_path / "layer.safetensors"
    rc, err = run(capsys, "extract", "--llm", bad, "--layer", "14", "-o", out)
    assert rc == 2 and f"{bad} is not a readable GGUF file" in err
    assert "truncated, damaged or not a GGUF file" in err and "Get a good copy" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


# ---------------------------------------------------------------- hand-edited llm entries

@pytest.mark.parametrize("field,value,expected", [
    ("residual", "false", "residual='false' must be bool (JSON true/false, not a string)"),
    ("layer", "14", "layer='14' must be int"),
    ("stage", 1.5, "stage=1.5 must be int"),
])
def test_mistyped_spec_fields_are_refused(field, value, expected):
    entry = model_spec("smollm2-135m").to_dict()
    entry[field] = value
    with pytest.raises(LLMSpecError, match=re.escape(expected)):
        LLMSpec.from_dict(entry)


def test_a_config_edit_that_breaks_the_model_names_the_field():
    spec = model_spec("deepseek-r1-distill-qwen-1.5b")
    config = copy.deepcopy(spec.config)
    config["hidden_size"] = 1540
    with pytest.raises(LLMSpecError, match=r"hidden_size=1540 .* is not a multiple of num_attention_heads=12"):
        spec.replace(config=config)
    config = copy.deepcopy(spec.config)
    config["num_key_value_heads"] = 5
    with pytest.raises(LLMSpecError, match=r"num_attention_heads=12 .* not a multiple of num_key_value_heads=5"):
        spec.replace(config=config)


def test_plans_errors_name_the_plans(in_process_env, dataset_2d, capsys):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM
    plans = in_process_env.plans(dataset_2d)
    entry = model_spec("smollm2-135m").to_dict()
    entry["residual"] = "false"
    plans["configurations"]["2d"]["llm"] = entry
    manager = PlansManager(plans)
    with pytest.raises(LLMSpecError, match=r"the 'llm' entry of plans 'nnUNetPlans' of Dataset501_Synth2D .*"
                                           r"residual='false' must be bool"):
        nnUNetTrainerLLM.build_network_architecture(manager, manager.get_configuration("2d"), 1, 2, False)


def test_info_names_a_plans_file_that_is_not_json(in_process_env, dataset_2d, capsys):
    folder = in_process_env.preprocessed_folder(dataset_2d)
    broken = folder / "nnUNetPlans_broken.json"
    broken.write_text('{"plans_name": \n')
    try:
        rc, err = run(capsys, "info", "-d", dataset_2d, "-c", "2d", "-p", "nnUNetPlans_broken")
    finally:
        broken.unlink()
    assert rc == 2 and f"{broken} is not valid JSON" in err


@pytest.mark.parametrize("command", ["info", "compare", "export"])
def test_a_results_plans_json_that_is_not_json_is_named(in_process_env, dataset_2d, capsys, tmp_path, command):
    """The issue's case: a hand-edited results plans.json used to print only 'Expecting value: line 2 column 1'."""
    run_folder = in_process_env.results / in_process_env.dataset_folder(dataset_2d).name / \
        "nnUNetTrainerBroken__nnUNetPlans__2d"
    run_folder.mkdir(parents=True)
    broken = run_folder / "plans.json"
    broken.write_text('{"plans_name": \n')
    (run_folder / "dataset.json").write_text(json.dumps(in_process_env.dataset_json(dataset_2d)))
    args = {"info": ["info", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerBroken"],
            "compare": ["compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerBroken", "-f", "0",
                        "-o", tmp_path / "report"],
            "export": ["export", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerBroken", "-f", "0",
                       "-o", tmp_path / "submission"]}[command]
    try:
        rc, err = run(capsys, *args)
    finally:
        shutil.rmtree(run_folder)
    assert rc == 2 and f"{broken} is not valid JSON" in err and "Expecting value" in err
    assert not (tmp_path / "report").exists() and not (tmp_path / "submission").exists()


# ---------------------------------------------------------------- synth, file modes

def test_synth_refuses_a_dataset_id_that_is_taken(in_process_env, dataset_2d, capsys):
    before = sorted(p.name for p in in_process_env.raw.iterdir())
    rc, err = run(capsys, "synth", "-d", dataset_2d, "--dim", "3")
    assert rc == 2 and "dataset id 501 is taken by" in err and "Dataset501_Synth2D" in err
    assert sorted(p.name for p in in_process_env.raw.iterdir()) == before


def test_written_files_honour_the_umask(in_process_env, dataset_2d, layer_file, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "layer.safetensors"
        assert cli.main(["extract", "--llm", "smollm2-135m", "-o", str(out)]) == 0
        assert cli.main(["plan", "-d", str(dataset_2d), "--llm", "smollm2-135m", "-o", "nnUNetPlans_umask",
                         "--overwrite"]) == 0
        assert cli.main(["synth", "-d", "777", "--dim", "2", "--num-train", "5", "--num-test", "1",
                         "--raw", str(tmp_path / "raw")]) == 0
    finally:
        os.umask(old)
    plans = in_process_env.preprocessed_folder(dataset_2d) / "nnUNetPlans_umask.json"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(plans.stat().st_mode) == 0o644
    assert stat.S_IMODE(next((tmp_path / "raw").glob("Dataset777_*")).stat().st_mode) == 0o755
    plans.unlink()


# ---------------------------------------------------------------- damaged checkpoints

def test_analyze_and_pretrained_weights_name_a_damaged_checkpoint(in_process_env, dataset_2d, tmp_path, capsys):
    from nnunetv2_llm.core.errors import UserError
    from nnunetv2_llm.nnunet.pretrained import load_pretrained_weights
    trained = in_process_env.trained(dataset_2d, "nnUNetTrainer_2epochs_5its")
    copy_dir = trained.parent / "nnUNetTrainerDamaged__nnUNetPlans__2d"
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(trained, copy_dir)
    checkpoint = copy_dir / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    rc, err = run(capsys, "analyze", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerDamaged", "-f", "0",
                  "-o", tmp_path / "analysis")
    assert rc == 2 and f"checkpoint {checkpoint} cannot be read" in err and "truncated or damaged" in err
    assert not (tmp_path / "analysis").exists()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match=rf"checkpoint {checkpoint} cannot be read: it is truncated or damaged"):
        load_pretrained_weights(net, str(checkpoint))
    with pytest.raises(UserError, match=rf"checkpoint {tmp_path / 'none.pth'} does not exist"):
        load_pretrained_weights(net, str(tmp_path / "none.pth"))
    shutil.rmtree(copy_dir)


# ---------------------------------------------------------------- plans from an extracted layer file

def test_plan_takes_the_layer_from_an_extracted_file_and_stores_it_absolute(in_process_env, dataset_2d, layer_file,
                                                                            tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(layer_file.parent)
    folder = in_process_env.preprocessed_folder(dataset_2d)
    rc, err = run(capsys, "plan", "-d", dataset_2d, "--llm", f"./{layer_file.name}", "--layer", "3",
                  "-o", "nnUNetPlans_fromfile")
    assert rc == 2 and "holds only layer 14" in err and "not --layer 3" in err
    assert not (folder / "nnUNetPlans_fromfile.json").exists()
    assert cli.main(["plan", "-d", str(dataset_2d), "--llm", f"./{layer_file.name}", "-o", "nnUNetPlans_fromfile"]) == 0
    plans = folder / "nnUNetPlans_fromfile.json"
    entry = json.loads(plans.read_text())["configurations"]["2d"]["llm"]
    plans.unlink()
    assert entry["layer"] == 14 and entry["source"] == str(layer_file), "absolute: trains from any directory"


def test_suggested_trainers_are_names_tr_accepts_of_runs_that_finished_an_epoch(in_process_env, dataset_2d,
                                                                                 tmp_path, capsys):
    """Issue 32 #5/#6: compare suggested a results folder name that -tr rejects, and runs that never trained;
    analyze suggested training a trainer that does not exist, with no "did you mean"."""
    root = in_process_env.results / "Dataset501_Synth2D"
    trained, started = root / "nnUNetTrainerProbeLM2_2epochs__nnUNetPlans__2d", root / "nnUNetTrainerProbeLM2_1epoch__nnUNetPlans__2d"
    for folder in (trained, started):
        (folder / "fold_0").mkdir(parents=True)
        (folder / "plans.json").write_text("{}")
        (folder / "dataset.json").write_text("{}")
    (trained / "fold_0" / "progress.png").write_bytes(b"")  # nnU-Net draws it after every epoch
    try:
        rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerProbeLM", "-f", "0",
                      "-o", tmp_path / "r")
        assert rc == 2 and "Did you mean 'nnUNetTrainerProbeLM2_2epochs'" in err, err
        assert "__nnUNetPlans__2d'" not in err and "nnUNetTrainerProbeLM2_1epoch" not in err
        rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerProbeLM2_2epochs", "-f",
                      "0", "-o", tmp_path / "r")
        assert "no trained results" not in err and "Did you mean" not in err, "the suggestion is accepted by -tr"
        rc, err = run(capsys, "analyze", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainerProbeLM", "-f", "0")
        assert rc == 2 and "Did you mean 'nnUNetTrainerProbeLM2_2epochs'" in err and "nnUNetv2_train" not in err, err
    finally:
        shutil.rmtree(trained)
        shutil.rmtree(started)


def test_extract_names_a_mistyped_model_before_asking_for_a_layer(tmp_path, capsys):
    rc, err = run(capsys, "extract", "--llm", "lama-3.2-1b", "-o", tmp_path / "x.safetensors")
    assert rc == 2 and "Did you mean 'llama-3.2-1b'?" in err and "--layer is required" not in err


def test_info_takes_a_model_file_like_plan(in_process_env, dataset_2d, layer_file, smollm2_gguf, capsys):
    """Issue 32 #10: info --llm accepted only the named models."""
    import json
    for source in (layer_file, smollm2_gguf):
        rc = cli.main(["info", "-d", str(dataset_2d), "-c", "2d", "--llm", str(source), "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert json.loads(out.out)["nnunet_llm"]["hidden_size"] == 576
    rc, err = run(capsys, "info", "-d", dataset_2d, "-c", "2d", "--llm", "smollm2-13m")
    assert rc == 2 and "Did you mean 'smollm2-135m'?" in err


def test_info_says_where_its_spec_came_from(in_process_env, dataset_2d, capsys):
    """Issue 39 #6: without --llm, info said "LLM spec from --llm"."""
    from nnunetv2_llm.core.models import DEFAULT_MODEL
    assert cli.main(["info", "-d", str(dataset_2d), "-c", "2d"]) == 0
    out = capsys.readouterr().out
    assert f"LLM spec from the default model {DEFAULT_MODEL} (no --llm given)" in out
    assert cli.main(["info", "-d", str(dataset_2d), "-c", "2d", "--llm", DEFAULT_MODEL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["llm_from"] == f"--llm {DEFAULT_MODEL}"


def test_plan_refuses_a_damaged_layer_file_and_one_without_its_suffix(in_process_env, dataset_2d, layer_file,
                                                                      tmp_path, capsys):
    """Issue 30 #15: plan verifies an extracted file's sha256 (training from a damaged file it accepted ended in a
    traceback inside nnUNetv2_train); and a layer file renamed to .bak is not called missing (issue 30, smaller)."""
    folder = in_process_env.preprocessed_folder(dataset_2d)
    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(layer_file.read_bytes())
    data[-1000:-900] = bytes(100)  # tensor bytes; the header (and its recorded sha256) intact
    damaged.write_bytes(bytes(data))
    rc, err = run(capsys, "plan", "-d", dataset_2d, "--llm", damaged, "-o", "nnUNetPlans_damaged")
    assert rc == 2 and f"{damaged} is corrupted: its tensors hash to" in err and "Extract the layer again" in err
    assert not (folder / "nnUNetPlans_damaged.json").exists()
    renamed = tmp_path / "L14.bak"
    shutil.copy(layer_file, renamed)
    rc, err = run(capsys, "plan", "-d", dataset_2d, "--llm", renamed, "-o", "nnUNetPlans_renamed")
    assert rc == 2 and "is a file, but neither .gguf nor .safetensors" in err and "L14.bak.safetensors" in err
    assert "neither an existing file" not in err and not (folder / "nnUNetPlans_renamed.json").exists()


def test_extract_after_a_sigkill_removes_what_the_killed_run_left(tmp_path, capsys, layer_file):
    """Issue 30 (smaller): a writer killed with SIGKILL mid-write leaves its temporary file beside the output; the
    rerun removes it (this host, a writer that no longer runs) and writes the file."""
    import signal
    import sys
    target = tmp_path / "L14.safetensors"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from nnunetv2_llm.core.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'wb').write(bytes(1 << 20))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"), str(target)])
    assert killed.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].stat().st_size == 1 << 20 and not target.exists()
    assert cli.main(["extract", "--llm", "smollm2-135m", "-o", str(target)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name], "the killed run's temporary file is gone"


def test_a_refusal_inside_nnunetv2_train_is_the_message_alone(nnunet_env, dataset_2d, tmp_path):
    """Issue 38 #7: an error our trainer raises on purpose inside nnU-Net's own process (here hand-edited plans whose
    layer is the string "3"; a built-in trainer's layer out of reach offline) reaches the user as one line and a
    non-zero exit status, with no traceback; a bug of ours still keeps its traceback (the hook chains to the one
    before)."""
    plans = nnunet_env.plans(dataset_2d)
    plans.pop("continue_training")
    entry = model_spec("smollm2-135m").to_dict()
    entry["layer"] = "3"
    plans["configurations"]["2d"]["llm"] = entry
    plans["plans_name"] = "nnUNetPlans_layer_text"
    path = nnunet_env.preprocessed_folder(dataset_2d) / "nnUNetPlans_layer_text.json"
    path.write_text(json.dumps(plans))
    try:
        proc = nnunet_env.train(dataset_2d, "2d", "0", "-tr", "nnUNetTrainerLLM", "-p", "nnUNetPlans_layer_text",
                                check=False)
    finally:
        path.unlink()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: the 'llm' entry of plans 'nnUNetPlans_layer_text' of "
                                                    "Dataset501_Synth2D (nnUNet_preprocessed/Dataset501_Synth2D/"
                                                    "nnUNetPlans_layer_text.json for training, the results folder's "
                                                    "plans.json for prediction): layer='3' must be int; fix the llm "
                                                    "entry."), proc.stderr
    offline = nnunet_env.train(dataset_2d, "2d", "0", "-tr", "nnUNetTrainerLLaMA", check=False,
                               extra_env={"HF_HOME": str(tmp_path / "empty_hub_cache"), "HF_HUB_OFFLINE": "1"})
    assert offline.returncode != 0 and "Traceback" not in offline.stderr, offline.stderr  # issue 39 #5's 41 lines
    last = offline.stderr.strip().splitlines()[-1]  # its wording is issue 39's; here: one line, ours
    assert last.startswith("error: ") and "nnUNetTrainerLLaMA" in last, offline.stderr
    bug = subprocess.run([sys.executable, "-c",
                          "import nnunetv2_llm.nnunet.trainers; raise KeyError('a bug')"],
                         capture_output=True, text=True, env=nnunet_env.env)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'a bug'" in bug.stderr


def test_every_list_option_keeps_every_repetition(in_process_env, dataset_2d, tmp_path, capsys):
    """Issue 38 #4: a repeated list option (``--held-out a=X --held-out b=Y``) keeps every value, not only the last;
    checked for every option of every command, and through compare, which now sees both sets given (here under one
    name, which it refuses)."""
    import argparse

    from nnunetv2_llm.commands.options import Repeatable

    def actions(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from actions(sub)
            else:
                yield parser.prog, action
    lists = [(prog, a) for prog, a in actions(cli.build_parser()) if a.nargs in ("+", "*")]
    assert len(lists) >= 13 and [(prog, a.dest) for prog, a in lists if not isinstance(a, Repeatable)] == []
    args = cli.build_parser().parse_args(["compare", "-d", "501", "-c", "2d", "-tr", "A", "-tr", "B", "C", "-o", "o",
                                          "--held-out", "a=X", "--held-out", "b=Y"])
    assert (args.trainers, args.held_out) == (["A", "B", "C"], ["a=X", "b=Y"])
    assert args.folds is None  # not given: compare's own default (folds 0-4, CompareRequest) applies
    assert cli.build_parser().parse_args(["sweep", "plan", "-o", "x", "-c", "3d_fullres"]).configurations == \
        ["3d_fullres"], "the first use replaces the default"
    in_process_env.trained(dataset_2d, "nnUNetTrainer_2epochs_5its")
    raw = in_process_env.dataset_folder(dataset_2d)
    rc, err = run(capsys, "compare", "-d", dataset_2d, "-c", "2d", "-tr", "nnUNetTrainer_2epochs_5its", "-f", "0",
                  "--held-out", f"same={raw}", "--held-out", f"same={raw}", "-o", tmp_path / "report")
    assert rc == 2 and "--external / --held-out: each NAME must be unique" in err, err
