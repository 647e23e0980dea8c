"""Exact tests of the position modes and of the block's fp16-safe output.

`reference` is checked against the authors' own formula run through a real decoder layer; `axial`
against standard RoPE on a 1-D grid and the relative-position property on 2D/3D grids; `none` against
unrotated q and k. Rotations are applied with transformers' own ``apply_rotary_pos_emb``.
"""
import pytest
import torch
from tiny_llm import TINY_LLAMA, save_tiny
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.decoder_layers import build_rotary, hf_config
from nnunetv2_llm.core.positions import axial_rotation
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.weights import load_layer

HIDDEN = 64


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = save_tiny(tmp_path_factory.mktemp("llama"), "llama")
    return folder, load_layer(LLMSpec(source=str(folder), layer=1))


def _block(llama, positions: str) -> LLMBlock:
    folder, weights = llama
    block = LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=1, positions=positions, config=weights.config)).eval()
    block.load_pretrained(weights.tensors)
    with torch.no_grad():
        for proj in (block.proj_in, block.proj_out):
            proj.weight.copy_(torch.eye(HIDDEN))
            proj.bias.zero_()
    return block


def test_reference_positions_are_the_authors_formula_through_a_real_layer(llama):
    """The authors passed [sin(t), cos(t)] of shape (1, T, 1) where transformers unpacks (cos, sin)."""
    block = _block(llama, "reference")
    spatial, tokens = (3, 5), 15
    hidden = torch.randn(2, tokens, HIDDEN, generator=torch.Generator().manual_seed(0))
    t = torch.arange(tokens, dtype=torch.float32)[None, :, None]
    authors = [torch.sin(t), torch.cos(t)]
    with torch.no_grad():
        expected = block.layer(hidden, attention_mask=None, position_ids=torch.arange(tokens)[None],
                               position_embeddings=authors, is_causal=True)
        ours = block(hidden.transpose(1, 2).reshape(2, HIDDEN, *spatial))
    torch.testing.assert_close(ours.flatten(2).transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


def test_axial_on_a_1d_grid_is_standard_rope():
    config = hf_config({**TINY_LLAMA, "rope_theta": 10000.0})
    rotary = build_rotary(config)
    x = torch.zeros(1, 7, config.hidden_size)
    cos_std, sin_std = rotary(x, torch.arange(7)[None])
    cos, sin = axial_rotation((7,), config.hidden_size // config.num_attention_heads, 10000.0)
    torch.testing.assert_close(cos, cos_std)
    torch.testing.assert_close(sin, sin_std)


@pytest.mark.parametrize("grid,shift", [((4, 6), (1, 2)), ((3, 4, 5), (1, 0, 2))])
def test_axial_attention_logits_depend_only_on_the_coordinate_difference(grid, shift):
    dim = 16
    cos, sin = axial_rotation(grid, dim, 100.0)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, dim, generator=g), torch.randn(1, 1, 1, dim, generator=g)
    n = torch.arange(cos.shape[1]).reshape(grid)

    def logit(a, b):
        qa, _ = apply_rotary_pos_emb(q, q, cos[:, n[a]][:, None], sin[:, n[a]][:, None])
        kb, _ = apply_rotary_pos_emb(k, k, cos[:, n[b]][:, None], sin[:, n[b]][:, None])
        return (qa * kb).sum()

    a, b = tuple(0 for _ in grid), tuple(1 for _ in grid)
    moved_a = tuple(x + s for x, s in zip(a, shift))
    moved_b = tuple(x + s for x, s in zip(b, shift))
    torch.testing.assert_close(logit(moved_a, moved_b), logit(a, b))
    other = tuple(x + 1 for x in b)
    assert not torch.allclose(logit(a, other), logit(a, b)), "a different difference gives a different logit"
    assert axial_rotation(grid, dim, 100.0)[0] is cos, "tables are cached per grid"


def test_none_leaves_q_and_k_unrotated(llama):
    block = _block(llama, "none")
    hidden = torch.randn(1, 6, HIDDEN)
    cos, sin = block.position_embeddings((2, 3), hidden, torch.arange(6)[None])
    q, k = torch.randn(1, 4, 6, 16), torch.randn(1, 2, 6, 16)
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(q_rot, q)
    torch.testing.assert_close(k_rot, k)


def test_block_output_saturates_instead_of_overflowing_fp16(llama):
    """nnU-Net trains under fp16 autocast on CUDA: the block computes in fp32, and casting back must not give inf."""
    dtype = torch.float16
    block = _block(llama, "reference")
    with torch.no_grad():
        block.proj_out.weight.mul_(1e6)
        out = block(torch.randn(1, HIDDEN, 2, 2).to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert out.abs().max() == torch.finfo(dtype).max, "large activations saturate at the dtype's largest value"
