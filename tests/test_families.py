"""Model families beyond Llama and Qwen2 (tested in test_block.py): Mistral and Gemma.

Each is a tiny random checkpoint written by transformers' own ``save_pretrained``; one layer is read by our
loader, put in the block with identity projections, and its output compared with what that layer returned
inside the whole transformers model (inputs captured with forward hooks).
"""
from __future__ import annotations

import math

import pytest
import torch
from tiny_llm import capture_layer_io, save_tiny

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.weights import load_layer

HIDDEN, LAYER, SPATIAL = 64, 1, (3, 4)  # 12 tokens
GEMMA = dict(hidden_size=HIDDEN, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             num_hidden_layers=3, vocab_size=128, max_position_embeddings=256, rope_theta=10000.0)


def _save_gemma(folder):
    """A random GemmaForCausalLM (Gemma 1: RMSNorm with 1 + weight, GeGLU MLP), every tensor drawn."""
    from transformers import GemmaConfig, GemmaForCausalLM
    torch.manual_seed(0)
    model = GemmaForCausalLM(GemmaConfig(**GEMMA))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(-0.5, 0.5) if name.endswith("norm.weight") else p.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    return folder


def _checkpoint(tmp_path, family: str):
    if family == "gemma":
        return _save_gemma(tmp_path)
    window = {"mistral": None, "mistral-window": math.prod(SPATIAL), "mistral-short-window": 11}[family]
    return save_tiny(tmp_path, "mistral", sliding_window=window)


def _block(folder, **options) -> LLMBlock:
    weights = load_layer(LLMSpec(source=str(folder), layer=LAYER))
    block = LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=LAYER, config=weights.config, **options))
    block.load_pretrained(weights.tensors)
    with torch.no_grad():
        for proj in (block.proj_in, block.proj_out):
            proj.weight.copy_(torch.eye(HIDDEN))
            proj.bias.zero_()
    return block.eval()


def _reference(folder):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.manual_seed(1)
    return model, capture_layer_io(model, LAYER, torch.randint(0, 128, (2, math.prod(SPATIAL))))


@pytest.mark.parametrize("family", ["mistral", "mistral-window", "gemma"])
def test_block_equals_the_layer_inside_the_hf_model(tmp_path, family):
    """Mistral without a window and with one as long as the token grid; Gemma 1."""
    folder = _checkpoint(tmp_path, family)
    model, io = _reference(folder)
    assert type(model).__name__.lower().startswith(family.split("-")[0])
    block = _block(folder, positions="rope", attention="causal")
    assert type(block.layer) is type(model.model.layers[LAYER])
    with torch.no_grad():
        ours = block.position_embeddings(SPATIAL, io.hidden, io.position_ids)
        out = block(io.hidden.transpose(1, 2).reshape(2, HIDDEN, *SPATIAL))
    for got, expected in zip(ours, io.rotary_output):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), io.output, atol=1e-5, rtol=0)
    assert (io.output - io.hidden).abs().max() > 0.1, "the layer changes its input: the comparison can fail"


def test_a_token_grid_beyond_the_sliding_window_is_refused(tmp_path):
    """The block passes no mask, so it could not apply Mistral's window; the model itself does, and differs."""
    folder = _checkpoint(tmp_path, "mistral-short-window")
    _, io = _reference(folder)
    block = _block(folder, positions="rope", attention="causal")
    with torch.no_grad():
        unwindowed = block.layer(io.hidden, position_ids=io.position_ids, position_embeddings=io.position_embeddings,
                                 is_causal=True)
    assert (unwindowed - io.output).abs().max() > 1e-3, "the window matters for 12 tokens at a window of 11"
    with pytest.raises(ValueError, match="12 tokens exceed the 11-token sliding window of layer 1"):
        block(torch.randn(1, HIDDEN, *SPATIAL))
    assert block(torch.randn(1, HIDDEN, 11)).shape == (1, HIDDEN, 11)
