"""core/resolve.py is the one place a spec is decided: every caller asks it, and nothing else reads the spec out of
plans or out of a checkpoint's record of the block (nor writes it into plans but core/plans_entry.py)."""
import ast
from pathlib import Path

import pytest

from nnunetv2_llm.core.plans_entry import put_spec_in_plans
from nnunetv2_llm.core.resolve import model_spec, spec_for_trainer, spec_of_checkpoint, variant_spec
from nnunetv2_llm.core.spec import LLMSpecError

ROOT = Path(__file__).resolve().parents[1]
# resolve reads plans and records; plans_entry writes plans; the block writes and checks its own record.
READERS = {"nnunetv2_llm/core/resolve.py", "nnunetv2_llm/core/plans_entry.py", "nnunetv2_llm/core/block.py"}


def spec_reads(source: str) -> list[str]:
    """Where ``source`` reads or writes a spec itself: ``x[PLANS_KEY]`` (read or written), ``x.get(PLANS_KEY)``, a
    dict with the key PLANS_KEY (``in`` and ``pop`` do not count), a ``f"llm.{EXTRA_STATE}"`` key, or the block's
    ``recorded_spec``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) and node.slice.id == "PLANS_KEY":
            found.append(f"line {node.lineno}: [PLANS_KEY]")
        elif isinstance(node, ast.Dict) and any(isinstance(k, ast.Name) and k.id == "PLANS_KEY" for k in node.keys):
            found.append(f"line {node.lineno}: {{PLANS_KEY: ...}}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and \
                node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "PLANS_KEY":
            found.append(f"line {node.lineno}: .get(PLANS_KEY)")
        elif isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                                                     and v.value.id == "EXTRA_STATE" for v in node.values):
            found.append(f"line {node.lineno}: a key built from EXTRA_STATE")
        elif isinstance(node, ast.Constant) and node.value == "llm._extra_state":
            found.append(f"line {node.lineno}: 'llm._extra_state'")
        elif isinstance(node, ast.Attribute) and node.attr == "recorded_spec":
            found.append(f"line {node.lineno}: recorded_spec")
    return found


def test_the_checker_sees_each_way_of_reading_a_spec():
    source = ("a = plans[PLANS_KEY]\nb = conf.get(PLANS_KEY)\nc = state[f'llm.{EXTRA_STATE}']\n"
              "d = state['llm._extra_state']\ne = LLMBlock.recorded_spec(d)\n"
              "conf[PLANS_KEY] = {}\ng = {PLANS_KEY: {}}\nf = PLANS_KEY in conf\nconf.pop(PLANS_KEY, None)\n")
    assert sorted(r.split(":")[0] for r in spec_reads(source)) == [f"line {i}" for i in range(1, 8)]


def test_no_module_outside_resolve_reads_a_spec_from_plans_or_a_checkpoint():
    files = [p for folder in ("nnunetv2_llm", "benchmarks", "scripts") for p in (ROOT / folder).rglob("*.py")]
    reads = {str(p.relative_to(ROOT)): spec_reads(p.read_text()) for p in files}
    assert not {k: v for k, v in reads.items() if v and k not in READERS}, \
        "ask core/resolve.py (spec_in_plans, spec_for_trainer, spec_of_checkpoint); write with put_spec_in_plans"


class Builtin:
    model, variant = "smollm2-135m", "paper"


class FromPlans:
    pass


def plans_with(spec=None) -> dict:
    plans = {"plans_name": "nnUNetPlans_x", "dataset_name": "Dataset501_Synth2D", "configurations": {"2d": {}}}
    if spec is not None:
        put_spec_in_plans(plans, "2d", spec)
    return plans


def test_a_trainer_gets_its_built_in_spec_and_refuses_plans_that_carry_another():
    assert spec_for_trainer(Builtin, plans_with(), {}) == variant_spec("smollm2-135m", "paper")
    same = plans_with(model_spec("smollm2-135m", sha256="a" * 64))
    assert spec_for_trainer(Builtin, same, same["configurations"]["2d"]).sha256 is None  # the built-in one
    other = plans_with(model_spec("smollm2-135m", layer=3))
    with pytest.raises(LLMSpecError, match=r"Builtin trains its built-in smollm2-135m layer, but plans "
                                           r"'nnUNetPlans_x' carry another LLM spec \(layer: built-in 14, plans 3\)"):
        spec_for_trainer(Builtin, other, other["configurations"]["2d"])


def test_a_trainer_without_a_built_in_spec_takes_the_plans_and_refuses_plans_without_one():
    planned = plans_with(model_spec("smollm2-135m", layer=3))
    assert spec_for_trainer(FromPlans, planned, planned["configurations"]["2d"]).layer == 3
    with pytest.raises(LLMSpecError, match=r"plans 'nnUNetPlans_x' of Dataset501_Synth2D .* carry no LLM spec"):
        spec_for_trainer(FromPlans, plans_with(), {})
    assert spec_for_trainer(FromPlans, plans_with(), {}, required=False) is None


def test_a_checkpoint_without_a_record_of_its_block_falls_back_to_its_plans_only_when_asked():
    planned = plans_with(model_spec("smollm2-135m", layer=5))
    checkpoint = {"network_weights": {}, "init_args": {"plans": planned, "configuration": "2d"}}
    assert spec_of_checkpoint(checkpoint) is None
    assert spec_of_checkpoint(checkpoint, plans_too=True).layer == 5
    plain = {"network_weights": {}, "init_args": {"plans": plans_with(), "configuration": "2d"}}
    assert spec_of_checkpoint(plain, plans_too=True) is None


def test_a_trainer_of_your_own_names_a_model_and_a_variant_file(tmp_path):
    """What CHANGELOG.md tells authors of a trainer subclass: set ``model`` and ``variant`` (a file of your own)."""
    mine = tmp_path / "mine.json"
    mine.write_text('{"description": "mine", "layer": 3, "gate": true}')
    trainer = type("nnUNetTrainerMine", (), {"model": "smollm2-135m", "variant": str(mine)})
    spec = spec_for_trainer(trainer, plans_with(), {})
    assert (spec.source, spec.layer, spec.gate) == (model_spec("smollm2-135m").source, 3, True)


def test_a_trainer_of_0_3_that_overrides_llm_spec_is_refused_not_ignored():
    """0.3's hook is gone; a subclass that still defines it would otherwise train another spec without a word."""
    old = type("nnUNetTrainerOld", (), {"llm_spec": classmethod(lambda cls, plans_manager, configuration_manager:
                                                                 model_spec("smollm2-135m", layer=3))})
    with pytest.raises(LLMSpecError, match=r"nnUNetTrainerOld defines llm_spec, which nnunetv2-llm 0.4 no longer "
                                           r"calls .* Set the class attributes model .* and variant"):
        spec_for_trainer(old, plans_with(model_spec("smollm2-135m", layer=5)), {})
