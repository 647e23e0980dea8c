"""The LLM block: attention and position options, frozen / trainable / random variants, dtypes and shapes, on
tiny random checkpoints that transformers wrote. That the block equals the layer inside the whole transformers model
is tested once for every family, in test_families.py."""
from __future__ import annotations

import math

import pytest
import torch
from tiny_llm import save_tiny
from torch import nn

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.decoder_layers import build_decoder_layer, hf_config
from nnunetv2_llm.core.cost import parameter_counts
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.resolve import model_spec
from nnunetv2_llm.core.weights import load_layer

HIDDEN = 64
CHECKPOINTS = {"llama": ("llama", 1, None), "qwen2": ("qwen2", 2, "60KB")}  # arch, layer, shard size


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """One unsharded tiny Llama and one sharded tiny Qwen2 with their loaded layers."""
    made = {}
    for name, (arch, layer, shard_size) in CHECKPOINTS.items():
        folder = save_tiny(tmp_path_factory.mktemp(name), arch, max_shard_size=shard_size)
        made[name] = (folder, layer, load_layer(LLMSpec(source=str(folder), layer=layer)))
    assert (made["qwen2"][0] / "model.safetensors.index.json").is_file()
    assert not (made["llama"][0] / "model.safetensors.index.json").exists()
    return made


def pretrained_block(checkpoint, channels: int = HIDDEN, **options) -> LLMBlock:
    folder, layer, weights = checkpoint
    block = LLMBlock(channels, LLMSpec(source=str(folder), layer=layer, config=weights.config, **options))
    block.load_pretrained(weights.tensors)
    return block


def identity_projections(block: LLMBlock) -> LLMBlock:
    """With C == H and identity projections the block is exactly the decoder layer on the raster tokens."""
    with torch.no_grad():
        for proj in (block.proj_in, block.proj_out):
            proj.weight.copy_(torch.eye(HIDDEN))
            proj.bias.zero_()
    return block


def copy_weights(target: LLMBlock, source: LLMBlock) -> None:
    """The source's tensors into a block of another spec (the spec record is the target's own)."""
    target.load_state_dict({**source.state_dict(), "_extra_state": target.get_extra_state()})


def as_tokens(features: torch.Tensor) -> torch.Tensor:
    return features.flatten(2).transpose(1, 2)


def test_rope_includes_the_models_scaling(checkpoints):
    """The tiny Llama uses llama3 rope scaling; plain RoPE of the same theta would differ."""
    block = pretrained_block(checkpoints["llama"], positions="rope")
    assert block.config.rope_parameters["rope_type"] == "llama3"
    hidden = torch.zeros(1, 12, HIDDEN)
    cos, _ = block.position_embeddings((12,), hidden, torch.arange(12)[None])
    head_dim = HIDDEN // 4
    inv_freq = 1.0 / 500000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    plain = torch.cat([torch.arange(12.0)[:, None] * inv_freq] * 2, dim=-1).cos()
    assert (cos[0] - plain).abs().max() > 1e-3


@pytest.fixture(scope="module")
def attention_pair(checkpoints):
    """The same pretrained layer and projections, once causal and once bidirectional."""
    causal = pretrained_block(checkpoints["qwen2"], channels=8, positions="rope", attention="causal").eval()
    bidirectional = pretrained_block(checkpoints["qwen2"], channels=8, positions="rope",
                                     attention="bidirectional").eval()
    copy_weights(bidirectional, causal)
    return causal, bidirectional


def test_bidirectional_differs_from_causal_only_where_it_should(attention_pair):
    causal, bidirectional = attention_pair
    torch.manual_seed(2)
    features = torch.randn(2, 8, 3, 5)  # 15 tokens in raster order
    with torch.no_grad():
        out_causal, out_bidirectional = as_tokens(causal(features)), as_tokens(bidirectional(features))
    # the last token sees every token either way
    torch.testing.assert_close(out_causal[:, -1], out_bidirectional[:, -1], atol=1e-5, rtol=0)
    # every earlier token sees more under bidirectional attention
    per_token = (out_causal - out_bidirectional).abs().amax(dim=(0, 2))
    assert (per_token[:-1] > 1e-3).all(), per_token


def test_causal_token_ignores_later_tokens(attention_pair):
    causal, bidirectional = attention_pair
    torch.manual_seed(3)
    features = torch.randn(1, 8, 3, 5)
    perturbed = features.clone()
    as_tokens(perturbed)[:, 7:] += torch.randn(1, 8, 8).transpose(1, 2)  # a view: tokens 7..14 of the map
    assert torch.equal(as_tokens(perturbed)[:, :7], as_tokens(features)[:, :7])
    with torch.no_grad():
        before, after = as_tokens(causal(features)), as_tokens(causal(perturbed))
        before_bi, after_bi = as_tokens(bidirectional(features)), as_tokens(bidirectional(perturbed))
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert ((after - before).abs().amax(dim=(0, 2))[7:] > 1e-3).all()
    assert ((after_bi - before_bi).abs().amax(dim=(0, 2))[:7] > 1e-3).all()


# ---------------------------------------------------------------- frozen, trainable and random variants

def test_frozen_block_trains_only_the_projections(checkpoints):
    block = pretrained_block(checkpoints["qwen2"], channels=16)
    block.train()
    assert block.training and block.proj_in.training
    assert not any(m.training for m in block.layer.modules()), "a frozen layer stays in eval mode"
    block(torch.randn(2, 16, 4, 4)).square().mean().backward()
    for name, p in block.layer.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    for proj in (block.proj_in, block.proj_out):
        for p in proj.parameters():
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0


def test_trainable_block_trains_the_layer_too(checkpoints):
    block = pretrained_block(checkpoints["qwen2"], channels=16, trainable=True)
    block.train()
    assert all(m.training for m in block.layer.modules())
    block(torch.randn(2, 16, 4, 4)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("trainable", [False, True])
def test_random_init_reinitialises_every_layer_parameter(checkpoints, trainable):
    """'+Transformer': Xavier-uniform linears, zero biases, and the norms back at their constructor value."""
    folder, layer, weights = checkpoints["qwen2"]
    spec = LLMSpec(source=str(folder), layer=layer, config=weights.config, init="random", trainable=trainable)
    fresh = build_decoder_layer(hf_config(weights.config), layer).state_dict()
    from_spec = LLMBlock(HIDDEN, spec)
    reset = pretrained_block(checkpoints["qwen2"], trainable=trainable)
    reset.reset_layer_parameters()
    for block in (from_spec, reset):
        params = dict(block.layer.named_parameters())
        assert sorted(params) == sorted(weights.tensors)
        for name, p in params.items():
            assert p.requires_grad == trainable, name
            assert not torch.equal(p, weights.tensors[name]), f"{name} kept its pretrained value"
            if name.endswith("norm.weight"):
                assert torch.equal(p, fresh[name]), name
            elif name.endswith(".bias"):
                assert torch.equal(p, torch.zeros_like(p)), name
            else:
                fan_out, fan_in = p.shape
                bound = math.sqrt(6 / (fan_in + fan_out))
                # Xavier's bound; nn.Linear's own init stays within 1/sqrt(fan_in), well below it
                assert 0.9 * bound < p.abs().max() <= bound, name
    reset_weights = dict(reset.layer.named_parameters())
    for name, p in from_spec.layer.named_parameters():
        if name.endswith("proj.weight"):
            assert not torch.equal(p, reset_weights[name]), f"{name}: two random inits drew the same values"


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_layer_awaiting_pretrained_weights_is_zero_and_passes_its_input_through(checkpoints, arch):
    """The structure is built without a random init (weights come next); until then it is a finite identity."""
    folder, layer, weights = checkpoints[arch]
    block = identity_projections(LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=layer, config=weights.config)))
    assert sorted(dict(block.layer.named_parameters())) == sorted(weights.tensors)
    assert all(torch.count_nonzero(p) == 0 for p in block.layer.parameters())
    features = torch.randn(2, HIDDEN, 3, 4)
    torch.testing.assert_close(block(features), features)
    block.load_pretrained(weights.tensors)
    assert not torch.allclose(block(features), features)


def test_trainable_parameter_count_for_a_llama_3_2_1b_layer():
    """Paper: +2.10 M trainable for nnU-Net 2D (C=512) with LLaMA-3.2-1B; the structure needs no download."""
    block = LLMBlock(512, model_spec("llama-3.2-1b"))
    assert parameter_counts(block) == {"trainable": 2_099_712, "frozen": 60_821_504}
    assert block.proj_in.weight.shape == (2048, 512) and block.proj_out.weight.shape == (512, 2048)


# ---------------------------------------------------------------- dtypes, autocast, shapes

def test_bf16_layer_tracks_the_fp32_layer(checkpoints):
    fp32 = pretrained_block(checkpoints["llama"], channels=8, positions="rope").eval()
    bf16 = pretrained_block(checkpoints["llama"], channels=8, positions="rope", dtype="bfloat16").eval()
    copy_weights(bf16, fp32)
    assert {p.dtype for p in bf16.layer.parameters()} == {torch.bfloat16}
    assert bf16.proj_in.weight.dtype == torch.float32
    features = torch.randn(2, 8, 4, 5)
    with torch.no_grad():
        expected, got = fp32(features), bf16(features)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - expected).norm() / expected.norm() < 0.05


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16], ids=["fp16-autocast", "bf16-autocast"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_autocast_leaves_the_layer_in_its_own_dtype(checkpoints, dtype, autocast_dtype):
    """nnU-Net trains under fp16 autocast; the LLM layer must compute in its own dtype (fp32 or bf16)
    and fp16-range activations must come out finite."""
    block = pretrained_block(checkpoints["llama"], channels=8, positions="rope", dtype=dtype).eval()
    computed_in = set()
    for m in block.layer.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda module, args, out: computed_in.add(out.dtype))
    torch.manual_seed(4)
    features = (torch.randn(2, 8, 4, 4) * 2e4).clamp(-6e4, 6e4).half()
    with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype):
        out = block(features)
    assert computed_in == {getattr(torch, dtype)}
    assert out.dtype == torch.float16 and out.shape == features.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("positions", ["reference", "rope", "axial", "none"])
@pytest.mark.parametrize("spatial", [(3, 5), (3, 3, 3), (1, 1)], ids=["2d-odd", "3d-odd", "single-token"])
def test_2d_3d_maps_and_odd_token_counts(checkpoints, positions, spatial):
    block = pretrained_block(checkpoints["llama"], channels=8, positions=positions).eval()
    features = torch.randn(2, 8, *spatial)
    with torch.no_grad():
        out = block(features)
    assert out.shape == features.shape and torch.isfinite(out).all()
    # batch items are independent
    with torch.no_grad():
        torch.testing.assert_close(block(features[1:]), out[1:], atol=1e-5, rtol=1e-5)


def test_residual_adds_the_input(checkpoints):
    plain = pretrained_block(checkpoints["llama"], channels=8).eval()
    residual = pretrained_block(checkpoints["llama"], channels=8, residual=True).eval()
    copy_weights(residual, plain)
    features = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(residual(features), plain(features) + features, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- weights that do not fit the config

def test_weights_of_another_model_name_the_mismatch(checkpoints):
    llama_folder, _, llama = checkpoints["llama"]
    qwen_folder, layer, qwen = checkpoints["qwen2"]
    block = LLMBlock(HIDDEN, LLMSpec(source=str(qwen_folder), layer=layer, config=qwen.config))
    with pytest.raises(ValueError, match=r"missing \['self_attn\.k_proj\.bias', 'self_attn\.q_proj\.bias', "
                                         r"'self_attn\.v_proj\.bias'\].*store the checkpoint's own config\.json"):
        block.load_pretrained(llama.tensors)

    with_rotary_buffer = dict(llama.tensors, **{"self_attn.rotary_emb.inv_freq": torch.ones(8)})
    LLMBlock(HIDDEN, LLMSpec(source=str(llama_folder), layer=1, config=llama.config)).load_pretrained(
        with_rotary_buffer)  # older exports saved this buffer: it is not a weight and is skipped
    wider = dict(llama.config, intermediate_size=96)
    block = LLMBlock(HIDDEN, LLMSpec(source=str(llama_folder), layer=1, config=wider))
    with pytest.raises(ValueError, match=r"shape mismatches \['mlp\.down_proj\.weight: checkpoint \(64, 128\) vs "
                                         r"config \(64, 96\)'.*different models"):
        block.load_pretrained(llama.tensors)


def test_every_position_and_init_value_has_its_mode():
    """The block chooses what a spec value does from one table per option (as transformers picks its attention),
    so a value the spec accepts without a mode fails here, not in a forward pass."""
    from nnunetv2_llm.core.init_modes import INIT_MODES
    from nnunetv2_llm.core.positions import POSITION_MODES
    from nnunetv2_llm.core.spec import INIT, POSITIONS
    assert set(POSITION_MODES) == set(POSITIONS) and set(INIT_MODES) == set(INIT)
