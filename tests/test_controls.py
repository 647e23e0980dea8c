"""The reviewer's controls and the authors' random init, initialised as nnUNetv2_train initialises them.

Identity: only the two projections remain (does the layer matter?). Frozen random: the layer's structure,
random and frozen (does pretraining matter?). random-reference: the authors' "+Transformer", linears
re-drawn but RMSNorm gains kept pretrained.
"""
import pytest
import torch

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.cost import parameter_counts
from nnunetv2_llm.core.init_modes import IdentityLayer
from nnunetv2_llm.core.resolve import model_spec, variant_spec
from nnunetv2_llm.nnunet.trainers import (nnUNetTrainerSmolLM2, nnUNetTrainerSmolLM2FrozenRandom,
                                   nnUNetTrainerSmolLM2Identity)
from nnunetv2_llm.core.weights import load_layer


def _initialized(env, trainer_cls, dataset_id):
    trainer = trainer_cls(env.plans(dataset_id), "2d", 0, env.dataset_json(dataset_id), torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_identity_control_keeps_only_the_projections(in_process_env, dataset_2d):
    trainer = _initialized(in_process_env, nnUNetTrainerSmolLM2Identity, dataset_2d)
    block = trainer.network.llm
    assert isinstance(block.layer, IdentityLayer)
    channels, hidden = block.proj_in.in_features, block.config.hidden_size
    assert parameter_counts(block) == {"trainable": 2 * channels * hidden + hidden + channels, "frozen": 0}
    x = torch.randn(2, channels, 4, 4)
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        expected = block.proj_out(block.proj_in(tokens)).transpose(1, 2).reshape(x.shape)
        torch.testing.assert_close(block(x), expected)
    assert trainer.plans_manager.plans["configurations"]["2d"]["llm"]["init"] == "identity"


def test_frozen_random_control_is_random_and_frozen(in_process_env, dataset_2d, smollm2_gguf):
    trainer = _initialized(in_process_env, nnUNetTrainerSmolLM2FrozenRandom, dataset_2d)
    block = trainer.network.llm
    layer = dict(block.layer.named_parameters())
    assert layer and not any(p.requires_grad for p in layer.values())
    pretrained = load_layer(block.spec.replace(init="pretrained")).tensors
    q = "self_attn.q_proj.weight"
    assert layer[q].abs().sum() > 0, "a random layer, not the all-zero placeholder"
    assert not torch.allclose(layer[q], pretrained[q].to(layer[q].dtype)), "random, not the pretrained tensors"
    trainer.network.train()
    assert not block.layer.training


def test_random_reference_init_redraws_linears_and_keeps_pretrained_norms(smollm2_gguf):
    weights = load_layer(model_spec("smollm2-135m"))
    torch.manual_seed(0)
    block = LLMBlock(32, model_spec("smollm2-135m", init="random-reference", trainable=True))
    block.load_pretrained(weights.tensors)
    state = block.layer.state_dict()
    for name, tensor in weights.tensors.items():
        if name.endswith("norm.weight"):
            torch.testing.assert_close(state[name], tensor.to(state[name].dtype), msg=name)
        else:
            assert not torch.allclose(state[name], tensor.to(state[name].dtype)), f"{name} was not re-drawn"
            bound = (6 / sum(state[name].shape)) ** 0.5
            assert state[name].abs().max() <= bound + 1e-6, f"{name} is not Xavier-uniform"


@pytest.mark.parametrize("cls", [nnUNetTrainerSmolLM2Identity, nnUNetTrainerSmolLM2FrozenRandom])
def test_controls_load_no_pretrained_tensors(cls):
    assert not variant_spec(cls.model, cls.variant).loads_pretrained
    assert variant_spec(nnUNetTrainerSmolLM2.model, nnUNetTrainerSmolLM2.variant).loads_pretrained


def test_every_built_in_model_and_variant_is_a_valid_block():
    """Every model x variant builds (DeepSeek's paper layer is its last: its two-layer block ends there)."""
    from nnunetv2_llm.core.models import MODELS
    from nnunetv2_llm.core.variants import load_variant, variant_names
    for model in MODELS:
        for variant in variant_names():
            if load_variant(variant).trainer is not None:
                spec = variant_spec(model, variant)
                assert spec.layer + spec.depth <= MODELS[model].num_layers, (model, variant)
    spec = variant_spec("deepseek-r1-distill-qwen-1.5b", "depth2")
    assert (spec.layer, spec.depth) == (26, 2)
    assert (variant_spec("llama-3.2-1b", "depth2").layer, variant_spec("llama-3.2-1b", "pang").layer) == (14, 15)
