"""Every model family: Llama, Qwen2 (its checkpoint sharded), Mistral, Gemma 1/2/3, Phi-3, OLMo-2, Granite.

Each is a tiny random checkpoint written by transformers' own ``save_pretrained``; one layer is read by our
loader, put in the block with identity projections, and its output compared with what that layer returned
inside the whole transformers model (inputs and positions captured with forward hooks), in float32.
"""
from __future__ import annotations

import math

import pytest
import torch
from tiny_llm import capture_layer_io, save_tiny

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.decoder_layers import hf_config
from nnunetv2_llm.core.families import FAMILIES, family_of
from nnunetv2_llm.core.layer_attention import describe_block_layers, rope_theta
from nnunetv2_llm.core.spec import LLMSpec, LLMSpecError
from nnunetv2_llm.core.weights import load_final_norm, load_layer

HIDDEN, LAYER, SPATIAL = 64, 1, (3, 4)  # 12 tokens
# (family, layer): Gemma 3's layer 0 is a sliding-window layer, its layer 1 a full-attention one.
CASES = [("llama", 1), ("qwen2-sharded", 2), ("mistral", 1), ("mistral-window", 1), ("gemma", 1), ("gemma2", 1), ("gemma3", 0), ("gemma3", 1),
         ("phi3", 1), ("olmo2", 1), ("granite", 1)]


def _checkpoint(tmp_path, family: str, **sizes):
    if family.startswith("mistral"):
        window = {"mistral": None, "mistral-window": math.prod(SPATIAL), "mistral-short-window": 11}[family]
        return save_tiny(tmp_path, "mistral", sliding_window=window)
    if family == "qwen2-sharded":
        return save_tiny(tmp_path, "qwen2", max_shard_size="60KB", **sizes)
    return save_tiny(tmp_path, family, **sizes)


def _block(folder, layer: int = LAYER, **options) -> LLMBlock:
    weights = load_layer(LLMSpec(source=str(folder), layer=layer))
    block = LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=layer, config=weights.config, **options))
    block.load_pretrained(weights.tensors)
    with torch.no_grad():
        for proj in (block.proj_in, block.proj_out):
            proj.weight.copy_(torch.eye(HIDDEN))
            proj.bias.zero_()
    return block.eval()


def _model(folder):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def _reference(folder, layer: int = LAYER):
    model = _model(folder)
    torch.manual_seed(1)
    return model, capture_layer_io(model, layer, torch.randint(0, 128, (2, math.prod(SPATIAL))))


@pytest.mark.parametrize("family,layer", CASES, ids=[f"{f}-L{i}" for f, i in CASES])
def test_block_equals_the_layer_inside_the_hf_model(tmp_path, family, layer):
    """The block's layer, at the model's own positions (`--positions rope`), gives what the model's layer gave."""
    folder = _checkpoint(tmp_path, family)
    model, io = _reference(folder, layer)
    assert type(model).__name__.lower().startswith(family.split("-")[0])
    block = _block(folder, layer, positions="rope", attention="causal")
    assert type(block.layer) is type(model.model.layers[layer])
    with torch.no_grad():
        ours = block.position_embeddings(SPATIAL, io.hidden, io.position_ids)
        out = block(io.hidden.transpose(1, 2).reshape(2, HIDDEN, *SPATIAL))
    for got, expected in zip(ours, io.position_embeddings):  # what the model passed to this very layer
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), io.output, atol=1e-5, rtol=0)
    assert (io.output - io.hidden).abs().max() > 0.1, "the layer changes its input: the comparison can fail"


def test_gemma3_rope_and_layer_description_follow_the_chosen_layer(tmp_path):
    """Gemma 3 keeps one RoPE base per kind of layer: 10 000 for its sliding-window layers, 10^6 for full attention;
    `--positions rope` and the axial positions use the chosen layer's, and info/plan name the kind."""
    folder = _checkpoint(tmp_path, "gemma3")
    sliding, full = _block(folder, 0, positions="rope"), _block(folder, 1, positions="rope")
    hidden, ids = torch.zeros(1, 12, HIDDEN), torch.arange(12)[None]
    cos_sliding, _ = sliding.position_embeddings(SPATIAL, hidden, ids)
    cos_full, _ = full.position_embeddings(SPATIAL, hidden, ids)
    # the slowest-turning pair of a 16-wide head: angle t / base^(7/8)
    torch.testing.assert_close(cos_sliding[0, 11, 7], torch.cos(torch.tensor(11 / 10_000 ** (7 / 8))))
    torch.testing.assert_close(cos_full[0, 11, 7], torch.cos(torch.tensor(11 / 1e6 ** (7 / 8))))
    config = hf_config(sliding.spec.config)
    assert (rope_theta(config, 0), rope_theta(config, 1)) == (10_000.0, 1e6)
    assert describe_block_layers(sliding.spec) == "sliding-window attention (4096 tokens), RoPE base 10000"
    assert describe_block_layers(full.spec) == "full attention, RoPE base 1e+06"
    assert describe_block_layers(sliding.spec.replace(depth=2)) == ("layer 0: sliding-window attention (4096 tokens), RoPE "
                                                          "base 10000; layer 1: full attention, RoPE base 1e+06")


@pytest.mark.parametrize("family", ["mistral-short-window", "gemma3"])
def test_a_token_grid_beyond_the_sliding_window_is_refused(tmp_path, family):
    """The block passes no window mask, so it could not apply Mistral's window or that of Gemma 3's local layers;
    the model itself does, and differs. Gemma 3's full-attention layer takes the same grid."""
    folder = _checkpoint(tmp_path, family, **({"sliding_window": 11} if family == "gemma3" else {}))
    layer = 0 if family == "gemma3" else LAYER
    _, io = _reference(folder, layer)
    block = _block(folder, layer, positions="rope", attention="causal")
    with torch.no_grad():
        unwindowed = block.layer(io.hidden, position_ids=io.position_ids, position_embeddings=io.position_embeddings,
                                 is_causal=True)
    assert (unwindowed - io.output).abs().max() > 1e-3, "the window matters for 12 tokens at a window of 11"
    with pytest.raises(ValueError, match=f"12 tokens exceed the 11-token sliding window of layer {layer}"):
        block(torch.randn(1, HIDDEN, *SPATIAL))
    assert block(torch.randn(1, HIDDEN, 11)).shape == (1, HIDDEN, 11)
    if family == "gemma3":
        assert _block(folder, 1, positions="rope")(torch.randn(1, HIDDEN, *SPATIAL)).shape == (1, HIDDEN, *SPATIAL)


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3", "phi3", "olmo2", "granite"])
def test_final_norm_is_the_familys_own(tmp_path, family):
    """`--final-norm` applies the model's own final norm (Gemma's multiplies by 1 + w) with its checkpoint gain."""
    folder = _checkpoint(tmp_path, family)
    model = _model(folder)
    spec = LLMSpec(source=str(folder), layer=LAYER, final_norm=True)
    weights, norm = load_layer(spec), load_final_norm(spec)
    block = LLMBlock(HIDDEN, spec.replace(config=weights.config))
    block.load_pretrained(weights.tensors, norm.weight)
    assert type(block.norm) is type(model.model.norm)
    x = torch.randn(2, 12, HIDDEN)
    with torch.no_grad():
        torch.testing.assert_close(block.norm(x), model.model.norm(x), atol=1e-6, rtol=0)
        assert (block.norm(x) - type(model.model.norm)(HIDDEN)(x)).abs().max() > 0.1, "the gain is not the default"


def test_lora_targets_the_familys_attention_linears(tmp_path):
    """Phi-3 fuses q/k/v into qkv_proj: the default targets are refused naming Phi-3's attention linears, which
    then take adapters."""
    folder = _checkpoint(tmp_path, "phi3")
    config = load_layer(LLMSpec(source=str(folder), layer=LAYER)).config
    with pytest.raises(LLMSpecError, match=r"lora_targets \['k_proj', 'q_proj', 'v_proj'\] are not linears .* "
                                           r"\(Phi-3's attention: --lora-targets o_proj,qkv_proj\)"):
        LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=LAYER, config=config, lora_rank=4))
    block = LLMBlock(HIDDEN, LLMSpec(source=str(folder), layer=LAYER, config=config, lora_rank=4,
                                     lora_targets=["qkv_proj", "o_proj"]))
    adapted = {n.split(".lora_")[0] for n, _ in block.layer.named_parameters() if ".lora_" in n}
    assert adapted == {"self_attn.qkv_proj", "self_attn.o_proj"}


def test_every_family_in_the_table_is_tested_here():
    """The table doctor and plan --help print lists what this file (and test_block/test_gguf) proves."""
    tested = {"qwen3"} | {f.split("-")[0] for f, _ in CASES}
    types = {t.replace("_text", "") for f in FAMILIES for t in f.model_types}
    assert types == tested
    assert family_of("phi3").attention_linears == ("qkv_proj", "o_proj")
