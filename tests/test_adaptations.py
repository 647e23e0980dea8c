"""Beyond a frozen layer: LoRA (peft), several consecutive layers, a zero-init gate and the model's final norm,
checked against transformers' and peft's own models of the same tiny checkpoints."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny_llm import capture_layer_io, save_tiny

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.cost import parameter_counts
from nnunetv2_llm.core.network import LLMUNet
from nnunetv2_llm.core.spec import LLMSpec, LLMSpecError
from nnunetv2_llm.core.weights import load_final_norm, load_layer, load_layers, tensors_sha256

HIDDEN = 64
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama (3 layers, hidden 64, 4 heads of 16, 2 KV heads) written by transformers, and its whole model."""
    from transformers import AutoModelForCausalLM
    folder = save_tiny(tmp_path_factory.mktemp("llama"), "llama")
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval()


def _spec(folder, **options) -> LLMSpec:
    from nnunetv2_llm.core.weights import read_config
    return LLMSpec(source=str(folder), layer=options.pop("layer", 1), config=read_config(str(folder)), **options)


def _identity(block: LLMBlock) -> LLMBlock:
    with torch.no_grad():
        for proj in (block.proj_in, block.proj_out):
            proj.weight.copy_(torch.eye(HIDDEN))
            proj.bias.zero_()
    return block


# ---------------------------------------------------------------- LoRA

def test_lora_layer_equals_peft_own_model_of_that_layer(llama):
    """The model wrapped by peft's get_peft_model, adapters set to random values, and our block's layer with the
    same adapter tensors: equal outputs on the hidden states the full model fed the layer."""
    from peft import LoraConfig, get_peft_model
    folder, model = llama
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)  # a nonzero update, so the comparison tests the adapters
    inner = peft_model.base_model.model
    io = capture_layer_io(inner, 1, torch.randint(0, 128, (1, 9)))

    spec = _spec(folder, positions="rope", lora_rank=4, lora_alpha=8)
    block = LLMBlock(HIDDEN, spec)
    block.load_pretrained(load_layer(spec).tensors)
    adapters = {k[len("base_model.model.model.layers.1."):]: v for k, v in peft_model.state_dict().items()
                if k.startswith("base_model.model.model.layers.1.") and "lora_" in k}
    missing, unexpected = block.layer.load_state_dict(adapters, strict=False)
    assert not unexpected and all("lora_" not in k for k in missing), "the same adapter names as peft's"
    with torch.no_grad():
        ours = block.layer(io.hidden, attention_mask=None, position_ids=io.position_ids,
                           position_embeddings=io.position_embeddings, is_causal=True)
        plain = model.model.layers[1](io.hidden, attention_mask=None, position_ids=io.position_ids,
                                      position_embeddings=io.position_embeddings)
    torch.testing.assert_close(ours, io.output, rtol=1e-5, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3, "the adapters change the layer"


def test_lora_trains_only_adapters_and_projections_and_keeps_the_base_bit_identical(llama):
    folder, _ = llama
    spec = _spec(folder, lora_rank=4, lora_alpha=8, init="pretrained")
    weights = load_layer(spec)
    block = LLMBlock(HIDDEN, spec)
    block.load_pretrained(weights.tensors)
    block.train()
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    optimizer = torch.optim.SGD([p for p in block.parameters() if p.requires_grad], lr=0.1)
    for step in range(3):
        optimizer.zero_grad()
        block(torch.randn(2, HIDDEN, 3, 3, generator=torch.Generator().manual_seed(step))).square().mean().backward()
        optimizer.step()
    assert tensors_sha256(block.pretrained_tensors()[0]) == weights.sha256, "the frozen tensors are bit-identical"
    moved = {n for n, p in block.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".lora_" in n or n.startswith(("proj_in.", "proj_out.")) for n in moved)
    assert any(".lora_A." in n for n in moved) and any(".lora_B." in n for n in moved)
    assert {n for n, p in block.named_parameters() if p.requires_grad} >= moved


def test_lora_trainable_count_is_the_projections_plus_rank_times_in_plus_out():
    """SmolLM2's layer (hidden 576; q, o: 576 -> 576; k, v: 576 -> 192) at nnU-Net 2D's 512 bottleneck channels,
    rank 8 on q, k, v, o: 512*576 + 576 + 576*512 + 512 = 590,912 for the projections, and
    8 * ((576+576) + (576+192) + (576+192) + (576+576)) = 30,720 for the adapters; the lora-mlp variant adds the MLP's
    gate, up (576 -> 1536) and down (1536 -> 576): 8 * 3 * (576+1536) = 50,688 more."""
    from nnunetv2_llm.core.resolve import model_spec, variant_spec
    block = LLMBlock(512, model_spec("smollm2-135m", lora_rank=8))
    counts = parameter_counts(block)
    assert counts["trainable"] == 590_912 + 30_720
    assert counts["frozen"] == 3_540_096, "SmolLM2's layer, unchanged"
    every_linear = parameter_counts(LLMBlock(512, variant_spec("smollm2-135m", "lora-mlp")))
    assert every_linear == {"trainable": 590_912 + 30_720 + 50_688, "frozen": 3_540_096}


def test_the_optimizer_holds_exactly_the_trainable_parameters(in_process_env, dataset_2d, smollm2_gguf):
    """nnU-Net's initialize() of a LoRA trainer: the adapters and projections train, the frozen layer gets no
    optimizer state (the one test of configure_optimizers, for every trainer: they share it)."""
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerSmolLM2LoRA
    env = in_process_env
    trainer = nnUNetTrainerSmolLM2LoRA(env.plans(dataset_2d), "2d", 0, env.dataset_json(dataset_2d),
                                       torch.device("cpu"))
    trainer.initialize()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in trainer.network.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    block = trainer.network.llm
    lora = [p for n, p in block.named_parameters() if ".lora_" in n]
    assert lora and all(id(p) in in_optimizer for p in lora)
    assert not any(id(p) in in_optimizer for p in block.layer.parameters() if not p.requires_grad)
    assert trainer.plans_manager.plans["configurations"]["2d"]["llm"]["lora_rank"] == 8


# ---------------------------------------------------------------- depth

def test_two_layers_equal_the_two_decoder_layers_in_sequence(llama):
    folder, model = llama
    spec = _spec(folder, layer=0, depth=2, positions="rope")
    block = _identity(LLMBlock(HIDDEN, spec))
    block.load_pretrained([w.tensors for w in load_layers(spec)])
    io = capture_layer_io(model, 0, torch.randint(0, 128, (1, 9)))
    with torch.no_grad():
        hidden = io.hidden
        for i in (0, 1):
            hidden = model.model.layers[i](hidden, attention_mask=None, position_ids=io.position_ids,
                                           position_embeddings=io.position_embeddings)
        ours = block(io.hidden.transpose(1, 2).reshape(1, HIDDEN, 3, 3))
    torch.testing.assert_close(ours.reshape(1, HIDDEN, 9).transpose(1, 2), hidden, rtol=1e-5, atol=1e-5)
    one = parameter_counts(LLMBlock(HIDDEN, _spec(folder, layer=0)))["frozen"]
    assert parameter_counts(block)["frozen"] == 2 * one, "frozen count = N layers"


def test_depth_past_the_last_layer_is_refused(llama):
    folder, _ = llama
    with pytest.raises(LLMSpecError, match=r"depth=2 from layer 2 runs past the last decoder layer .* use --layer 1 "
                                           r"or lower, or --depth 1 or less"):
        _spec(folder, layer=2, depth=2)


# ---------------------------------------------------------------- final norm

def test_final_norm_is_the_models_own_norm_after_the_last_layer(llama):
    folder, model = llama
    spec = _spec(folder, layer=2, final_norm=True, positions="rope")
    block = _identity(LLMBlock(HIDDEN, spec))
    norm = load_final_norm(spec)
    torch.testing.assert_close(norm.weight, model.model.norm.weight)
    block.load_pretrained(load_layer(spec).tensors, norm.weight)
    assert not block.norm.weight.requires_grad, "frozen with the layer"
    io = capture_layer_io(model, 2, torch.randint(0, 128, (1, 4)))
    with torch.no_grad():
        expected = model.model.norm(io.output)
        ours = block(io.hidden.transpose(1, 2).reshape(1, HIDDEN, 2, 2))
    torch.testing.assert_close(ours.reshape(1, HIDDEN, 4).transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gate

def test_a_zero_init_gate_starts_as_the_plain_unet_and_gets_a_gradient(llama):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    folder, _ = llama
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [8, 16, 32], torch.nn.Conv2d, 3, [1, 2, 2], 1, 2, 1, conv_bias=True,
                         norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, deep_supervision=False)
    plain = copy.deepcopy(unet).eval()
    spec = _spec(folder, gate=True)
    net = LLMUNet(unet, spec).eval()
    net.llm.load_pretrained(load_layer(spec).tensors)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x)), "at initialisation the gate passes the bottleneck through unchanged"
    net(x).square().mean().backward()
    assert net.llm.gate.grad is not None and net.llm.gate.grad.abs() > 0


# ---------------------------------------------------------------- bad input, named with the fix

@pytest.mark.parametrize("options,message", [
    ({"lora_rank": -1}, "lora_rank=-1: a LoRA rank is >= 0"),
    ({"lora_rank": 4, "trainable": True}, "LoRA adapts a frozen layer"),
    ({"gate": True, "init": "identity"}, "init='identity' replaces the layer by identity .* --gate has nothing"),
    ({"gate": True, "residual": True}, "--gate already adds the block's input"),
    ({"lora_dropout": 1.0}, "lora_dropout=1.0: a dropout probability is in \\[0, 1\\)"),
    ({"depth": 0}, "depth=0: the block holds 1 or more"),
])
def test_adaptation_options_out_of_range_are_refused(llama, options, message):
    folder, _ = llama
    with pytest.raises(LLMSpecError, match=message):
        _spec(folder, **options)


def test_an_unknown_lora_target_names_the_layers_linears(llama):
    folder, _ = llama
    with pytest.raises(LLMSpecError, match=r"lora_targets \['qkv'\] are not linears of layer 1 .* its linears are "
                                           r"down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"):
        LLMBlock(HIDDEN, _spec(folder, lora_rank=2, lora_targets=["qkv"]))
