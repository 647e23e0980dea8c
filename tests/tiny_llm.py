"""Tiny random Llama / Qwen2 / Qwen3 / Mistral / Gemma 1-3 / Phi-3 / OLMo-2 / Granite checkpoints written by transformers itself, hooks that capture one
layer's I/O, and a local "hub" served through an fsspec file system that counts the bytes read.

Every parameter (norm gains and biases included) is drawn at random, so a loader that drops or
mixes up any tensor, or a block that keeps a fresh norm, shows up as a numeric difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

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


# Qwen3's head_dim is not in its GGUF metadata (transformers keeps its default, 128): keep it 128 here.
QWEN3 = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
             num_hidden_layers=3, vocab_size=128, max_position_embeddings=256, rope_theta=1000000.0,
             use_sliding_window=False)
MISTRAL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               num_hidden_layers=3, vocab_size=128, max_position_embeddings=256, rope_theta=10000.0,
               sliding_window=None)


# The newer families (issue 33): token ids inside the tiny vocabulary; each family's own twist made to matter.
_IDS = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
_SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              num_hidden_layers=3, vocab_size=128, max_position_embeddings=256, **_IDS)
GEMMA = dict(_SMALL, rope_theta=10000.0)
# Soft-capping at 2 changes the attention logits of these weights (transformers' default, 50, would not).
GEMMA2 = dict(_SMALL, query_pre_attn_scalar=16, attn_logit_softcapping=2.0)
# Layer 0 sliding-window, layer 1 full attention, each kind with its own RoPE base (transformers' defaults).
GEMMA3 = dict(_SMALL, query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention",
                                                              "sliding_attention"])
PHI3 = dict(_SMALL)
OLMO2 = dict(_SMALL)
GRANITE = dict(_SMALL, residual_multiplier=0.3, attention_multiplier=0.05, embedding_multiplier=2.0)
FAMILIES = {"llama": ("Llama", LLAMA), "qwen2": ("Qwen2", QWEN2), "qwen3": ("Qwen3", QWEN3),
            "mistral": ("Mistral", MISTRAL), "gemma": ("Gemma", GEMMA), "gemma2": ("Gemma2", GEMMA2),
            "gemma3": ("Gemma3Text", GEMMA3), "phi3": ("Phi3", PHI3), "olmo2": ("Olmo2", OLMO2),
            "granite": ("Granite", GRANITE)}


def tiny_model(arch: str, seed: int = 0, **sizes):
    """A random ``<Family>ForCausalLM`` of :data:`FAMILIES` (sizes override the defaults above), every tensor
    drawn."""
    import transformers
    name, defaults = FAMILIES[arch]
    config = getattr(transformers, f"{name}Config")(**{**defaults, **sizes})
    torch.manual_seed(seed)
    model = getattr(transformers, f"{name.removesuffix('Text')}ForCausalLM")(config)
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if param_name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    return model


def save_tiny(folder: Path, arch: str, seed: int = 0, max_shard_size: str | None = None,
              dtype: torch.dtype = torch.float32, **sizes) -> Path:
    """``save_pretrained`` of :func:`tiny_model`; sharded if asked."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    tiny_model(arch, seed, **sizes).to(dtype).save_pretrained(folder, **kwargs)
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
        assert isinstance(output, torch.Tensor), "transformers 5 decoder layers return the hidden states alone"
        seen["output"] = output

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


class CountingFileSystem(LocalFileSystem):
    """A local fsspec file system that counts what is read through it: what a hub download would transfer."""

    cachable = False  # fsspec would otherwise hand every test the same instance (and counters)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bytes_read = 0
        self.opened: list[str] = []

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        self.opened.append(path)
        read = f.read

        def counted(*args):
            data = read(*args)
            self.bytes_read += len(data)
            return data

        f.read = counted
        return f


def serve(root, fs_class=CountingFileSystem):
    """A hub served from folder ``root`` (``org/name[@rev]/file``, as HfFileSystem names files): (hub, counter)."""
    counter = fs_class()
    return DirFileSystem(path=str(root), fs=counter), counter


def ddp_hub_worker(rank: int, world: int, port: int, root: str, spec: dict, out: dict):
    """One DDP rank loading a hub layer from ``root`` (here, not in a test module, so spawning skips transformers)."""
    import os

    import torch.distributed as dist

    from nnunetv2_llm.core.spec import LLMSpec
    from nnunetv2_llm.core.weights import load_layer
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    hub, counter = serve(root)
    layer = load_layer(LLMSpec.from_dict(spec), hub_fs=hub)
    out[rank] = {"bytes_read": counter.bytes_read, "files": layer.files, "sha256": layer.sha256}
    dist.destroy_process_group()
