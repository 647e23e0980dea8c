"""Tiny random Llama / Qwen2 checkpoints written by transformers itself, and hooks that capture one layer's I/O.

Every parameter (norm gains and biases included) is drawn at random, so a loader that drops or
mixes up any tensor, or a block that keeps a fresh norm, shows up as a numeric difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

LLAMA = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=3, vocab_size=128, max_position_embeddings=256, rope_theta=500000.0,
             # llama3 scaling with a short original context, so the scaling really changes frequencies
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
# A minimal model config (plans format, with model_type) for building blocks without any checkpoint.
TINY_LLAMA = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_attention_heads=2,
                  num_key_value_heads=1, num_hidden_layers=2, vocab_size=64)
QWEN2 = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=4, vocab_size=128, max_position_embeddings=256, rope_theta=10000.0,
             use_sliding_window=False)


def save_tiny(folder: Path, arch: str, seed: int = 0, max_shard_size: str | None = None,
              dtype: torch.dtype = torch.float32) -> Path:
    """``save_pretrained`` of a random ``LlamaForCausalLM`` or ``Qwen2ForCausalLM``; sharded if asked."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    config_cls, model_cls, sizes = {"llama": (LlamaConfig, LlamaForCausalLM, LLAMA),
                                    "qwen2": (Qwen2Config, Qwen2ForCausalLM, QWEN2)}[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**sizes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(folder, **kwargs)
    return folder


def layer_shards(folder: Path, layer: int) -> set[Path]:
    """The shard files the checkpoint's index maps ``model.layers.{layer}.*`` to."""
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return {folder / f for k, f in weight_map.items() if k.startswith(f"model.layers.{layer}.")}


@dataclass
class LayerIO:
    """What the full HF model fed into and got out of one decoder layer, plus its rotary output."""

    hidden: torch.Tensor
    position_ids: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    rotary_output: tuple[torch.Tensor, torch.Tensor]
    output: torch.Tensor
    attention_mask: object


def capture_layer_io(model, layer: int, input_ids: torch.Tensor) -> LayerIO:
    """Run the whole model once and record layer ``layer``'s call through forward hooks."""
    seen = {}

    def before(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = kwargs

    def after(module, args, output):
        seen["output"] = output[0] if isinstance(output, tuple) else output

    def rotary(module, args, output):
        seen["rotary"] = output

    handles = [model.model.layers[layer].register_forward_pre_hook(before, with_kwargs=True),
               model.model.layers[layer].register_forward_hook(after),
               model.model.rotary_emb.register_forward_hook(rotary)]
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        for h in handles:
            h.remove()
    kw = seen["kwargs"]
    return LayerIO(seen["hidden"], kw["position_ids"], kw["position_embeddings"], seen["rotary"],
                   seen["output"], kw.get("attention_mask"))


def hub_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str = "0" * 40) -> Path:
    """Lay files out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/...), for offline reads."""
    import shutil
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, snapshot / name)
    return snapshot
