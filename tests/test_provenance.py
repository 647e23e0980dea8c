"""Provenance: the layer that trained is the layer that predicts, in every fold, resume and loader.

The trained spec travels inside the network's state dict (the LLM block's extra state), so every loader
(nnUNetv2_predict, nnUNetPredictor, --c, --val, -pretrained_weights) can compare it with the plans.
"""
import json
import shutil
import warnings
from pathlib import Path

import nnunetv2.run.load_pretrained_weights
import nnunetv2.run.run_training
import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from safetensors.torch import save_file

from nnunetv2_llm.core.files import load_checkpoint
from nnunetv2_llm.core.spec import LLMSpecError
from nnunetv2_llm.core.resolve import model_spec
from nnunetv2_llm.nnunet import pretrained
from nnunetv2_llm.nnunet.pretrained import load_pretrained_weights
from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM, nnUNetTrainerSmolLM2
from nnunetv2_llm.core.weights import EXTRACT_FORMAT, LLMWeightsError, load_layer, tensors_sha256

SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"
PLAIN = "nnUNetTrainer_2epochs_5its"


def _llm_entry(folder, configuration="2d"):
    return json.loads((folder / "plans.json").read_text())["configurations"][configuration]["llm"]


def _net_from_results_plans(folder, configuration="2d"):
    """The net as nnU-Net's predictor builds it: from the results folder's plans.json."""
    manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    return nnUNetTrainerLLM.build_network_architecture(manager, manager.get_configuration(configuration), 1, 2,
                                                      False)


@pytest.mark.slow
@pytest.mark.parametrize("field,value", [("positions", "rope"), ("layer", 13), ("sha256", "0" * 64),
                                         ("attention", "bidirectional"), ("lora_rank", 4)])
def test_prediction_refuses_plans_that_disagree_with_the_checkpoint(nnunet_env, dataset_2d, field, value):
    out = nnunet_env.trained(dataset_2d, SMOL)
    state = load_checkpoint(out / "fold_0" / "checkpoint_final.pth")["network_weights"]
    plans = json.loads((out / "plans.json").read_text())
    backup = json.dumps(plans, indent=4)
    plans["configurations"]["2d"]["llm"][field] = value
    (out / "plans.json").write_text(json.dumps(plans))
    try:
        with pytest.raises(LLMSpecError, match=rf"trained with a different LLM block than the plans describe "
                                               rf"\({field}: plans {value!r}"):
            _net_from_results_plans(out).load_state_dict(state)
    finally:
        (out / "plans.json").write_text(backup)
    _net_from_results_plans(out).load_state_dict(state)  # the restored plans load strictly


@pytest.mark.slow
def test_the_stock_predict_cli_refuses_an_edited_plans_json(nnunet_env, dataset_2d, tmp_path):
    out = nnunet_env.trained(dataset_2d, SMOL)
    backup = (out / "plans.json").read_text()
    plans = json.loads(backup)
    plans["configurations"]["2d"]["llm"]["positions"] = "rope"
    (out / "plans.json").write_text(json.dumps(plans))
    try:
        proc = nnunet_env.run("nnUNetv2_predict", "-i", nnunet_env.dataset_folder(dataset_2d) / "imagesTs",
                              "-o", tmp_path / "pred", "-d", dataset_2d, "-c", "2d", "-tr", SMOL, "-f", "0",
                              "-device", "cpu", "-npp", "0", "-nps", "0", check=False)
    finally:
        (out / "plans.json").write_text(backup)
    assert proc.returncode != 0 and "positions: plans 'rope', trained 'reference'" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # issue 30 #15, 38 #7: the whole message, no traceback before it
    assert "positions: plans 'rope', trained 'reference'" in last and "restore plans.json" in last, last
    assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert not list((tmp_path / "pred").glob("*.png"))


@pytest.mark.slow
def test_checkpoints_of_version_0_1_load_with_a_warning(nnunet_env, dataset_2d):
    out = nnunet_env.trained(dataset_2d, SMOL)
    state = load_checkpoint(out / "fold_0" / "checkpoint_final.pth")["network_weights"]
    old = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
    net = _net_from_results_plans(out)
    with pytest.warns(UserWarning, match="nnunetv2-llm 0.1"):
        net.load_state_dict(old)
    torch.testing.assert_close(net.llm.proj_in.weight, state["llm.proj_in.weight"])


# ---------------------------------------------------------------- training-side pins

@pytest.fixture
def results_plans(in_process_env, dataset_2d):
    """The results folder of nnUNetTrainerSmolLM2 (no fold trained yet) with a plans.json we can write."""
    folder = in_process_env.results_folder(dataset_2d, "nnUNetTrainerSmolLM2")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder / "plans.json"
    shutil.rmtree(folder)


@pytest.mark.parametrize("field,value,message", [
    ("sha256", "f" * 64, "sha256: now '[0-9a-f]{64}', there 'f{64}'"),
    ("layer", 13, "layer: now 14, there 13"),
])
def test_a_fold_refuses_tensors_or_wiring_other_than_the_first_folds(in_process_env, dataset_2d, smollm2_gguf,
                                                                     results_plans, field, value, message):
    plans = in_process_env.plans(dataset_2d)
    recorded = model_spec("smollm2-135m").to_dict()
    recorded[field] = value
    written = json.loads(json.dumps(plans))
    written["configurations"]["2d"]["llm"] = recorded
    results_plans.write_text(json.dumps(written))
    trainer = nnUNetTrainerSmolLM2(plans, "2d", 1, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))
    with pytest.raises(LLMWeightsError, match=rf"{results_plans} records folds trained with a different LLM block "
                                              rf"\({message}\).*another name"):
        trainer.initialize()


def test_a_random_init_fold_refuses_a_wiring_other_than_the_first_folds(in_process_env, dataset_2d):
    """Folds with nothing pretrained to pin still share one wiring: a changed option is refused."""
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerSmolLM2FrozenRandom
    plans = in_process_env.plans(dataset_2d)
    plans["plans_name"] = "nnUNetPlans_randomwiring"  # a results folder of its own
    folder = in_process_env.results_folder(dataset_2d, "nnUNetTrainerSmolLM2FrozenRandom", plans=plans["plans_name"])
    folder.mkdir(parents=True)
    recorded = model_spec("smollm2-135m", init="random", trainable=False, positions="rope").to_dict()
    written = json.loads(json.dumps(plans))
    written["configurations"]["2d"]["llm"] = recorded
    (folder / "plans.json").write_text(json.dumps(written))
    trainer = nnUNetTrainerSmolLM2FrozenRandom(plans, "2d", 1, in_process_env.dataset_json(dataset_2d),
                                               torch.device("cpu"))
    try:
        with pytest.raises(LLMWeightsError, match=r"records folds trained with a different LLM block \(positions"):
            trainer.initialize()
    finally:
        shutil.rmtree(folder)


def test_the_plans_sha256_pins_the_tensors(in_process_env, dataset_2d, smollm2_gguf):
    plans = in_process_env.plans(dataset_2d)
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m", sha256="e" * 64).to_dict()
    plans["plans_name"] = "nnUNetPlans_pinned"
    trainer = nnUNetTrainerLLM(plans, "2d", 0, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))
    with pytest.raises(LLMWeightsError, match=r"hashes to [0-9a-f]{64}, but the plans pin e{64}: the weights "
                                              r"changed"):
        trainer.initialize()


def test_preset_trainers_refuse_plans_with_another_llm(in_process_env, dataset_2d):
    plans = in_process_env.plans(dataset_2d)
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m", layer=3).to_dict()
    with pytest.raises(LLMSpecError, match=r"nnUNetTrainerSmolLM2 trains its built-in smollm2-135m layer, but plans "
                                           r"'nnUNetPlans' carry another LLM spec \(layer: built-in 14, plans 3\)\. "
                                           r"Train these plans with -tr nnUNetTrainerLLM -p nnUNetPlans"):
        nnUNetTrainerSmolLM2(plans, "2d", 0, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))
    plans = in_process_env.plans(dataset_2d)
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m").to_dict()
    nnUNetTrainerSmolLM2(plans, "2d", 0, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))


def test_an_all_zero_pretrained_layer_is_an_error(in_process_env, dataset_2d, smollm2_gguf, tmp_path):
    weights = load_layer(model_spec("smollm2-135m"))
    zeros = {k: torch.zeros_like(v) for k, v in weights.tensors.items()}
    path = tmp_path / "zeros.safetensors"
    save_file(zeros, str(path), metadata={"format": EXTRACT_FORMAT, "source": "zeros", "revision": "", "layer": "14",
                                          "sha256": tensors_sha256(zeros), "config": json.dumps(weights.config)})
    plans = in_process_env.plans(dataset_2d)
    plans["plans_name"] = "nnUNetPlans_zeros"
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m").replace(source=str(path)).to_dict()
    trainer = nnUNetTrainerLLM(plans, "2d", 0, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))
    with pytest.raises(LLMWeightsError, match=r"layer 14 of .* loaded as all zeros: the block would skip it and be "
                                              r"a plain linear bottleneck"):
        trainer.initialize()


def test_one_all_zero_layer_of_two_is_an_error(in_process_env, dataset_2d, smollm2_gguf, tmp_path):
    from nnunetv2_llm.core.weights import LayerWeights, load_layers, write_extracted
    good, bad = load_layers(model_spec("smollm2-135m", layer=14, depth=2))
    bad = LayerWeights({k: torch.zeros_like(v) for k, v in bad.tensors.items()}, bad.config, "zeros", bad.layer)
    path = write_extracted([good, bad], tmp_path / "half-zeros.safetensors")
    plans = in_process_env.plans(dataset_2d)
    plans["plans_name"] = "nnUNetPlans_halfzeros"
    plans["configurations"]["2d"]["llm"] = model_spec("smollm2-135m", layer=14, depth=2).replace(
        source=str(path)).to_dict()
    trainer = nnUNetTrainerLLM(plans, "2d", 0, in_process_env.dataset_json(dataset_2d), torch.device("cpu"))
    with pytest.raises(LLMWeightsError, match=r"layer 15 of .* loaded as all zeros: the block would skip it\. "):
        trainer.initialize()


# ---------------------------------------------------------------- -pretrained_weights

def test_pretrained_weights_loader_is_chained_when_a_trainer_is_built_not_on_import(in_process_env, dataset_2d):
    """Importing the package (info, doctor, sweep import the trainers) patches nothing of nnU-Net; constructing an LLM
    trainer chains our loader in front of the one that was there, once."""
    import subprocess
    import sys
    probe = ("import nnunetv2.run.run_training as rt, nnunetv2.run.load_pretrained_weights as lp; "
             "import nnunetv2_llm.nnunet.trainers, nnunetv2_llm.commands.cli; "
             "assert rt.load_pretrained_weights is lp.load_pretrained_weights, 'patched on import'")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    nnunet_env = in_process_env
    nnUNetTrainerSmolLM2(nnunet_env.plans(dataset_2d), "2d", 0, nnunet_env.dataset_json(dataset_2d),
                         torch.device("cpu"))
    assert nnunetv2.run.run_training.load_pretrained_weights is load_pretrained_weights
    assert pretrained._previous_loader is nnunetv2.run.load_pretrained_weights.load_pretrained_weights
    pretrained.install()
    assert pretrained._previous_loader is nnunetv2.run.load_pretrained_weights.load_pretrained_weights, "idempotent"


@pytest.mark.slow
def test_pretrained_weights_take_the_llm_block_only_from_a_matching_file(in_process_env, dataset_2d, smollm2_gguf,
                                                                         tmp_path, capsys):
    plain = in_process_env.trained(dataset_2d, PLAIN) / "fold_0" / "checkpoint_final.pth"
    smol = in_process_env.trained(dataset_2d, SMOL) / "fold_0" / "checkpoint_final.pth"
    trainer = nnUNetTrainerSmolLM2(in_process_env.plans(dataset_2d), "2d", 2, in_process_env.dataset_json(dataset_2d),
                                   torch.device("cpu"))
    trainer.initialize()
    net = trainer.network
    fresh = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("llm.") and torch.is_tensor(v)}
    pretrained_layer = load_layer(model_spec("smollm2-135m")).tensors

    load_pretrained_weights(net, str(plain))
    file_state = load_checkpoint(plain)["network_weights"]
    encoder_key = next(k for k in file_state if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(net.state_dict()[encoder_key], file_state[encoder_key])
    for key, value in fresh.items():
        torch.testing.assert_close(net.state_dict()[key], value, msg=f"{key} kept from initialize()")
    q = "self_attn.q_proj.weight"
    torch.testing.assert_close(net.llm.layer.state_dict()[q], pretrained_layer[q].float())
    assert "the file has no LLM block" in capsys.readouterr().out
    assert "the file has no LLM block" in Path(trainer.log_file).read_text(), "issue 30: in the training log too"

    # issue 30 #15: another dataset's channel count is named in one line (the last line of nnU-Net's traceback)
    two = load_checkpoint(plain)
    first = next(k for k in two["network_weights"] if k.startswith("encoder.stages.0.") and k.endswith("weight"))
    two["network_weights"][first] = torch.cat([two["network_weights"][first]] * 2, dim=1)
    torch.save(two, tmp_path / "two_channels.pth")
    with pytest.raises(LLMSpecError, match=r"was trained on 2 input channel\(s\); this dataset has 1 .*pretrain on "
                                           r"a dataset with 1 channel\(s\), or train without") as raised:
        load_pretrained_weights(net, str(tmp_path / "two_channels.pth"))
    assert "\n" not in str(raised.value)

    load_pretrained_weights(net, str(smol))
    smol_state = load_checkpoint(smol)["network_weights"]
    torch.testing.assert_close(net.state_dict()["llm.proj_in.weight"], smol_state["llm.proj_in.weight"])
    assert "trained with the same spec" in capsys.readouterr().out

    other = load_checkpoint(smol)
    other["network_weights"]["llm._extra_state"]["nnunetv2_llm_spec"]["positions"] = "axial"
    other["network_weights"]["llm.proj_in.weight"] = torch.zeros_like(smol_state["llm.proj_in.weight"])
    torch.save(other, tmp_path / "other.pth")
    before = net.state_dict()["llm.proj_in.weight"].clone()
    load_pretrained_weights(net, str(tmp_path / "other.pth"), verbose=True)
    torch.testing.assert_close(net.state_dict()["llm.proj_in.weight"], before)
    printed = capsys.readouterr().out
    assert "the file's LLM block differs (positions: this net 'reference', the file 'axial')" in printed
    assert f"  {encoder_key}: " in printed, "verbose lists what was loaded"
    warnings.simplefilter("default")


def test_plan_overwrite_refuses_a_plans_name_that_trained_folds(in_process_env, dataset_2d, capsys):
    from nnunetv2_llm.commands import cli
    nnunet_env = in_process_env
    name = "nnUNetPlans_provenance"
    assert cli.main(["plan", "-d", str(dataset_2d), "--llm", "smollm2-135m", "--layer", "3", "-o", name]) == 0
    trained = nnunet_env.trained(dataset_2d, SMOL)
    copied = trained.parent / f"nnUNetTrainerLLM__{name}__2d"
    shutil.copytree(trained, copied)
    plans_file = nnunet_env.preprocessed_folder(dataset_2d) / f"{name}.json"
    before = plans_file.read_bytes()
    folds = len({p.parent for p in copied.glob("fold_*/checkpoint_*.pth")})  # other tests may train more folds
    try:
        rc = cli.main(["plan", "-d", str(dataset_2d), "--llm", "smollm2-135m", "--layer", "20", "-o", name,
                       "--overwrite"])
        err = capsys.readouterr().err
        assert folds >= 1 and rc == 2 and f"plans {name!r} already trained {folds} fold(s)" in err and "--overwrite-trained" in err
        assert plans_file.read_bytes() == before
        assert cli.main(["plan", "-d", str(dataset_2d), "--llm", "smollm2-135m", "--layer", "20", "-o", name,
                         "--overwrite-trained"]) == 0
        assert json.loads(plans_file.read_text())["configurations"]["2d"]["llm"]["layer"] == 20
    finally:
        shutil.rmtree(copied)
        plans_file.unlink()


# ---------------------------------------------------------------- the plans a results folder's folds trained with

def _replanned(plans: dict) -> dict:
    """The plans as a re-run of planning with another planner leaves them: another architecture, same name."""
    new = json.loads(json.dumps(plans))
    arch = new["configurations"]["2d"]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    arch["arch_kwargs"]["features_per_stage"] = [f * 2 for f in arch["arch_kwargs"]["features_per_stage"]]
    return new


def test_a_fold_with_other_plans_than_the_trained_folds_is_refused_before_training(in_process_env, dataset_2d):
    """Issue 30 #1: fold 0 trained with plans A (its checkpoint's init_args hold them); fold 1 of the same results
    folder with plans B of the same name is refused by the trainer itself, before anything is loaded or written,
    naming what differs and the ways out; --c/--val of fold 0 with plans B too. The same plans pass."""
    from nnunetv2_llm.nnunet.datasets import ResultsError
    plans = in_process_env.plans(dataset_2d)
    plans["plans_name"] = "nnUNetPlans_pinned"  # a results folder of its own
    folder = in_process_env.results_folder(dataset_2d, "nnUNetTrainerSmolLM2", plans=plans["plans_name"])
    (folder / "fold_0").mkdir(parents=True)
    trained = {k: v for k, v in plans.items() if k != "continue_training"}  # as nnU-Net stores them
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"init_args": {"plans": trained, "configuration": "2d", "fold": 0}, "network_weights": {}}, checkpoint)
    (folder / "plans.json").write_text(json.dumps(trained))
    dataset_json = in_process_env.dataset_json(dataset_2d)
    try:
        same = nnUNetTrainerSmolLM2(json.loads(json.dumps(plans)), "2d", 1, dataset_json, torch.device("cpu"))
        same._check_other_folds_plans()  # nothing differs: no refusal
        fold1 = nnUNetTrainerSmolLM2(_replanned(plans), "2d", 1, dataset_json, torch.device("cpu"))
        with pytest.raises(ResultsError) as e:
            fold1.initialize()
        message = str(e.value)
        assert "fold 1 would train with plans nnUNet_preprocessed/Dataset501_Synth2D/nnUNetPlans_pinned.json" in message
        assert "from the plans fold(s) 0 of" in message and "Nothing was trained" in message
        assert ("configurations.2d.architecture.network_class_name: dynamic_network_architectures.architectures.unet."
                "PlainConvUNet -> dynamic_network_architectures.architectures.unet.ResidualEncoderUNet") in message
        assert "-overwrite_plans_name NEW_NAME" in message and "retrain every fold" in message
        assert not fold1.was_initialized and json.loads((folder / "plans.json").read_text()) == trained
        fold0 = nnUNetTrainerSmolLM2(_replanned(plans), "2d", 0, dataset_json, torch.device("cpu"))
        with pytest.raises(ResultsError, match=r"the checkpoint .*checkpoint_final.pth of fold 0 trained with other "
                                               r"plans .* cannot go on \(--c\) or be validated \(--val\)"):
            fold0.load_checkpoint(str(checkpoint))
    finally:
        shutil.rmtree(folder)


def test_every_trainer_class_of_the_package_pins_its_folders_plans():
    """Issue 38 #0: the pin is on every class `-tr` takes from this package, the plain length variants included
    (the refusal itself is tested end to end below for a plain and an LLM one)."""
    from nnunetv2_llm.nnunet import trainers
    from nnunetv2_llm.nnunet.llm_trainer import PinnedPlans, SplitPinned
    classes = [getattr(trainers, name) for name in trainers.__all__]
    assert len(classes) > 100 and [c.__name__ for c in classes if not issubclass(c, PinnedPlans)] == []
    assert [c.__name__ for c in classes if not issubclass(c, SplitPinned)] == []  # the split is pinned too
    assert issubclass(trainers.nnUNetTrainer_2epochs_5its, PinnedPlans)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", [SMOL, PLAIN])
def test_replanning_under_trained_folds_is_refused_by_train_compare_and_export(nnunet_env, dataset_2d, tmp_path,
                                                                              trainer):
    """Issue 30 #1 end to end: fold 0 trained; the dataset is planned again with nnU-Net's ResEnc planner under the
    same plans name; the stock nnUNetv2_train of fold 1 is refused before training (results plans.json untouched);
    and once plans.json holds the new plans (as after a fold trained with them), compare and export refuse fold 0.
    Issue 38 #0: the plain length variant (the baseline of the demo, the docs and the sweeps) is pinned too; #7: the
    refusal is the message alone, no traceback through nnU-Net's code."""
    trained = nnunet_env.trained(dataset_2d, trainer)  # first: it writes the split into the preprocessed folder
    env = nnunet_env.beside(tmp_path / "nnunet", dataset_2d)
    results = env.results_folder(dataset_2d, trainer)
    shutil.copytree(trained, results, ignore=lambda folder, names: [  # fold 0 only: other tests train more
        n for n in names if Path(folder) == trained and n.startswith("fold_") and n != "fold_0"])
    old_results_plans = (results / "plans.json").read_bytes()
    env.run("nnUNetv2_plan_experiment", "-d", dataset_2d, "-pl", "nnUNetPlannerResEncM", "-overwrite_plans_name",
            "nnUNetPlans")
    new_plans = json.loads((env.preprocessed_folder(dataset_2d) / "nnUNetPlans.json").read_text())
    assert new_plans["configurations"]["2d"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")

    proc = env.train(dataset_2d, "2d", "1", "-tr", trainer, check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "fold 1 would train with plans" in err and "from the plans fold(s) 0" in err
    assert "Traceback" not in err and proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
    assert "network_class_name: dynamic_network_architectures.architectures.unet.PlainConvUNet -> " in err
    assert "-overwrite_plans_name NEW_NAME" in err and "Epoch 0" not in err
    assert (results / "plans.json").read_bytes() == old_results_plans
    assert not list(results.glob("fold_1/*.pth")), "fold 1 trained"  # nnU-Net opens its log there before we refuse

    ruined = json.loads(json.dumps(new_plans))  # what fold 1's start would have written there
    if trainer == SMOL:
        ruined["configurations"]["2d"]["llm"] = _llm_entry(results)
    (results / "plans.json").write_text(json.dumps(ruined))
    compare = env.run("nnunetv2-llm", "compare", "-d", dataset_2d, "-c", "2d", "-tr", trainer, "-f", "0",
                      "-o", tmp_path / "report", check=False)
    export = env.run("nnunetv2-llm", "export", "-d", dataset_2d, "-c", "2d", "-tr", trainer, "-f", "0",
                     "-o", tmp_path / "submission", check=False)
    for proc in (compare, export):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"fold 0 trained with other plans than {results / 'plans.json'}" in proc.stderr
        assert "network_class_name" in proc.stderr and "retrain every fold" in proc.stderr
    assert not (tmp_path / "report").exists() and not (tmp_path / "submission").exists()


def test_compare_refuses_a_replicate_whose_plans_changed_under_its_folds(nnunet_env, dataset_2d, tmp_path):
    """Issue 38 #0 for nnU-Net's own classes: a replicate's results folder whose plans.json a fold trained with new
    plans replaced is named by `compare` before it scores anything, as replicate 1's is."""
    trained = nnunet_env.trained(dataset_2d, PLAIN)  # first: it writes the split into the preprocessed folder
    env = nnunet_env.beside(tmp_path / "nnunet", dataset_2d)
    first = env.results_folder(dataset_2d, PLAIN)
    second = env.results / "replicates" / "2" / first.relative_to(env.results)
    for folder in (first, second):
        shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("fold_[1-4]", "fold_all"))
    plans = json.loads((second / "plans.json").read_text())
    kwargs = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [f // 2 for f in kwargs["features_per_stage"]]
    (second / "plans.json").write_text(json.dumps(plans))
    proc = env.run("nnunetv2-llm", "compare", "-d", dataset_2d, "-c", "2d", "-tr", PLAIN, "-f", "0", "--replicates",
                   "2", "-o", tmp_path / "report", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"fold 0 trained with other plans than {second / 'plans.json'}" in proc.stderr
    assert "features_per_stage: [32, 64" in proc.stderr and not (tmp_path / "report").exists()
