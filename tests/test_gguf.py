"""GGUF files of each supported architecture against transformers' own GGUF load, and refusal of the others.

The files are written here with the ``gguf`` package's writer from tiny random models, the way llama.cpp's
converter lays them out (llama: q/k rows permuted; qwen2/qwen3: not; gemma*: the tensor names of the ``gguf``
package's own name map, every norm gain stored as 1 + w), unquantized and Q8_0-quantized.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llm import tiny_model

from nnunetv2_llm import resolve_spec
from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.weights import LLMWeightsError, load_layer

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
LAYER = 1
HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
GEMMAS = ("gemma", "gemma2", "gemma3")


def gguf_name(key: str, arch: str, n_blocks: int) -> str:
    """A transformers tensor name as llama.cpp's converter names it: our table for the Llama layouts, the ``gguf``
    package's own name map for Gemma's (so the reader's table is checked against llama.cpp's, not itself)."""
    if arch in GEMMAS:
        stem, kind = key.rsplit(".", 1)
        return f"{gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_blocks).get_name(stem)}.{kind}"
    if key in GLOBAL_NAMES:
        return GLOBAL_NAMES[key]
    _, _, block, rest = key.split(".", 3)
    stem, kind = rest.rsplit(".", 1)
    return f"blk.{block}.{HF_TO_GGUF[stem]}.{kind}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of llama q/k rows (the inverse of what the loaders undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, model, arch: str, qtype, name: str = "tiny") -> Path:
    """``model``'s tensors in GGUF naming; 2-D ones stored as ``qtype``, 1-D ones (norms, biases) as F32."""
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    if arch in GEMMAS:  # what llama.cpp's converter writes for Gemma
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if arch != "gemma":
            writer.add_sliding_window(cfg.sliding_window)
    for key, tensor in model.state_dict().items():
        w = tensor.float().numpy()
        if key == "lm_head.weight":
            continue  # tied to token_embd, as transformers reads a file without output.weight
        gguf_name_ = gguf_name(key, arch, cfg.num_hidden_layers)
        if arch in GEMMAS and key.endswith("norm.weight"):
            w = w + 1  # llama.cpp stores what Gemma's RMSNorm multiplies by
        if arch == "llama" and ".self_attn.q_proj." in key or arch == "llama" and ".self_attn.k_proj." in key:
            heads = cfg.num_attention_heads if ".q_proj." in key else cfg.num_key_value_heads
            w = llama_cpp_permute(w, heads)
        if w.ndim == 1 or qtype == Q.F32:
            writer.add_tensor(gguf_name_, np.ascontiguousarray(w))
        elif qtype == Q.F16:
            writer.add_tensor(gguf_name_, w.astype(np.float16))
        else:
            writer.add_tensor(gguf_name_, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def ours(path: Path):
    """The layer as a user gets it from ``--llm file.gguf``: config from the file's metadata, then the tensors."""
    spec = resolve_spec(LLMSpec(source=str(path), layer=LAYER))
    return spec, load_layer(spec).tensors


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0], ids=lambda q: q.name)
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_gguf_layer_equals_transformers_gguf_load(arch, qtype, tmp_path):
    """Both dequantize the same bytes, so they agree exactly; unquantized, both equal the model's own tensors."""
    from transformers import AutoModelForCausalLM
    model = tiny_model(arch)
    path = write_gguf(tmp_path / f"{arch}.gguf", model, arch, qtype)
    spec, tensors = ours(path)
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert type(reference).__name__ == type(model).__name__ and spec.config["model_type"] == arch
    expected = reference.model.layers[LAYER].state_dict()
    original = model.model.layers[LAYER].state_dict()
    assert sorted(tensors) == sorted(expected) == sorted(original)
    for k, v in expected.items():
        torch.testing.assert_close(tensors[k].float(), v.float(), atol=0, rtol=0, msg=k)
        tolerance = {Q.F32: 0, Q.F16: 1e-3, Q.Q8_0: 4e-3}[qtype]  # 0.1 weights: fp16 ulp, Q8_0's 1/127 of a block
        torch.testing.assert_close(tensors[k].float(), original[k], atol=tolerance, rtol=0, msg=k)
    LLMBlock(8, spec).load_pretrained(tensors)  # the block builds this layer class from the GGUF's config


def test_llama_architecture_gguf_of_a_mistral_loads_as_mistral(tmp_path):
    """transformers reads a 'llama' file named 'mistral' as a Mistral (but its whole-model GGUF load then fails
    with gguf 0.19, which has no 'mistral' architecture): the layer must equal the Mistral's own tensors."""
    model = tiny_model("mistral")
    path = write_gguf(tmp_path / "mistral.gguf", model, "llama", Q.F32, name="mistral")
    spec, tensors = ours(path)
    assert spec.config["model_type"] == "mistral"
    original = model.model.layers[LAYER].state_dict()
    assert sorted(tensors) == sorted(original)
    for k, v in original.items():
        assert torch.equal(tensors[k], v), k
    LLMBlock(8, spec).load_pretrained(tensors)


@pytest.mark.parametrize("arch", ["phi3", "olmo2"])
def test_gguf_architecture_whose_layer_differs_is_refused_naming_it(arch, tmp_path):
    """phi3 fuses q/k/v, olmo2's norms follow attention and MLP: refused at planning and at loading."""
    path = write_gguf(tmp_path / f"{arch}.gguf", tiny_model("llama"), arch, Q.F32)
    message = (rf"{path.name}: GGUF architecture '{arch}' is not supported: .* Supported GGUF architectures: "
               rf"llama, qwen2, qwen3, gemma, gemma2, gemma3 .* Pass the model's safetensors checkpoint")
    with pytest.raises(LLMWeightsError, match=message):
        resolve_spec(LLMSpec(source=str(path), layer=LAYER))
    with pytest.raises(LLMWeightsError, match=message):
        load_layer(LLMSpec(source=str(path), layer=LAYER, config={"model_type": arch, "num_hidden_layers": 3}))


# ---------------------------------------------------------------- Gemma 1/2/3 (llama.cpp's layout, norms + 1)

@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0], ids=lambda q: q.name)
@pytest.mark.parametrize("arch", GEMMAS)
def test_gemma_gguf_layer_is_the_models_own(arch, qtype, tmp_path):
    """llama.cpp's tensor names and its stored 1 + w undone: the layer's tensors are the model's, within the
    quantization's error; the block builds the model's layer class from the GGUF's config."""
    model = tiny_model(arch)
    path = write_gguf(tmp_path / f"{arch}.gguf", model, arch, qtype)
    spec, tensors = ours(path)
    assert spec.config["model_type"] == model.config.model_type
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "num_hidden_layers", "rms_norm_eps"):
        assert spec.config[key] == pytest.approx(getattr(model.config, key)), key
    original = model.model.layers[LAYER].state_dict()
    assert sorted(tensors) == sorted(original)
    for k, v in original.items():
        # (w + 1) - 1 in float32 rounds a little; Q8_0: 1/127 of a block of 0.1-sized weights
        tolerance = 1e-6 if qtype == Q.F32 or k.endswith("norm.weight") else 4e-3
        torch.testing.assert_close(tensors[k], v, atol=tolerance, rtol=0, msg=k)
    block = LLMBlock(8, spec)
    block.load_pretrained(tensors)
    assert type(block.layer) is type(model.model.layers[LAYER])


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0], ids=lambda q: q.name)
@pytest.mark.parametrize("arch", GEMMAS)
def test_gemma_gguf_layer_equals_transformers_gguf_load(arch, qtype, tmp_path):
    """Both dequantize the same bytes and take the same 1 off the norms, so they agree exactly."""
    if arch == "gemma":
        pytest.skip("transformers reads no 'gemma' (Gemma 1) GGUF architecture (only gemma2, gemma3): the layer is "
                    "checked against the model's own tensors only")
    from transformers import AutoModelForCausalLM
    path = write_gguf(tmp_path / f"{arch}.gguf", tiny_model(arch), arch, qtype)
    _, tensors = ours(path)
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    expected = reference.model.layers[LAYER].state_dict()
    assert sorted(tensors) == sorted(expected)
    for k, v in expected.items():
        torch.testing.assert_close(tensors[k].float(), v.float(), atol=0, rtol=0, msg=k)


def test_gemma_gguf_final_norm_and_one_layer_reading(tmp_path, monkeypatch):
    """The final norm is read with the same offset; a layer dequantizes only its own tensors (blk.N.*)."""
    from nnunetv2_llm.core.weights import gguf_file, load_final_norm
    model = tiny_model("gemma3")
    path = write_gguf(tmp_path / "gemma3.gguf", model, "gemma3", Q.Q8_0)
    spec = resolve_spec(LLMSpec(source=str(path), layer=LAYER, final_norm=True))
    read, real = [], gguf_file._dequantized
    monkeypatch.setattr(gguf_file, "_dequantized", lambda p, t, arch: read.append(t.name) or real(p, t, arch))
    load_layer(spec)
    assert read and all(name.startswith(f"blk.{LAYER}.") for name in read), read
    assert len(read) == len(model.model.layers[LAYER].state_dict())
    torch.testing.assert_close(load_final_norm(spec).weight, model.model.norm.weight, atol=1e-6, rtol=0)
