"""Each spec option is declared once (a field of LLMSpec with its Option): the flags, the variant-file checks, the
sweep grid keys, plans names, log text and which fields change the computation are derived from that declaration.
The proof: a dummy option declared in a test shows up in all of them with no other change."""
import dataclasses
import json

import pytest

from nnunetv2_llm.core import spec as spec_module
from nnunetv2_llm.core.spec import LLMSpec, option


@dataclasses.dataclass
class SpecWithShimmer(LLMSpec):
    shimmer: float = option(0.0, group="adaptation", metavar="S", tag=lambda s: f"sh{s.shimmer:g}",
                            check=lambda v: None if 0 <= v <= 1 else f"shimmer={v}: a shimmer is in [0, 1].",
                            help="a dummy option of this test")


@pytest.fixture
def shimmer(monkeypatch):
    monkeypatch.setattr(spec_module, "LLMSpec", SpecWithShimmer)


def test_a_declared_option_gets_a_flag_in_plan_help(shimmer):
    from nnunetv2_llm.commands.cli import build_parser
    parser = build_parser()
    plan = parser._subparsers._group_actions[0].choices["plan"]
    text = plan.format_help()
    assert "--shimmer S" in text and "a dummy option of this test (default 0)" in text
    args = parser.parse_args(["plan", "-d", "1", "--shimmer", "0.5"])
    from nnunetv2_llm.commands.options import spec_options
    assert spec_options(args) == {"shimmer": 0.5}


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


def test_a_declared_option_names_plans_shows_in_the_log_text_and_is_checked():
    spec = SpecWithShimmer(source="x", layer=0, shimmer=0.5)
    assert spec.name_tag() == "-sh0.5" and "shimmer=0.5" in spec.options_text()
    assert "shimmer" in dataclasses.asdict(spec)
    with pytest.raises(spec_module.LLMSpecError, match=r"shimmer=2.0: a shimmer is in \[0, 1\]"):
        SpecWithShimmer(source="x", layer=0, shimmer=2.0)
    assert SpecWithShimmer(source="x", layer=0).name_tag() == "" and "shimmer" not in \
        SpecWithShimmer(source="x", layer=0).options_text()


def test_the_shipped_options_keep_their_plans_names_and_flags():
    """Plans names of 0.3 stay the same (trained results folders are named after them)."""
    spec = LLMSpec(source="x", layer=0, init="random", trainable=True, positions="none", attention="bidirectional",
                   residual=True, dtype="bfloat16", stage=2, depth=2, lora_rank=0, final_norm=True)
    assert spec.name_tag() == "-rand-T-nopos-bidir-res-bf16-stage2-d2-fnorm"
    lora = LLMSpec(source="x", layer=0, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1, gate=True)
    assert lora.name_tag() == "-lora4a8p0.1-gate"
    assert spec_module.computation_fields() == (
        "source", "layer", "init", "positions", "attention", "residual", "dtype", "stage", "depth", "lora_rank",
        "lora_alpha", "lora_targets", "gate", "final_norm", "sha256", "config")


def test_the_generated_trainers_module_equals_its_generator():
    """Every trainer name is written out in nnunetv2_llm/nnunet/trainers.py (greppable); after a change of models,
    variants or lengths, `python -m nnunetv2_llm.nnunet.trainer_catalogue` writes it again."""
    from nnunetv2_llm.nnunet import trainer_catalogue, trainers
    assert trainer_catalogue.GENERATED.read_text() == trainer_catalogue.render()
    names = [row.name for row in trainer_catalogue.trainer_table()]
    assert trainers.__all__ == names and len(names) == len(set(names))
    text = trainer_catalogue.GENERATED.read_text()
    assert all(f"class {name}(" in text for name in names if name != "nnUNetTrainerLLM")
