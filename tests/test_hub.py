"""Hub checkpoints read by byte ranges: only the header and the layer's bytes, cached once, and the fallbacks.

The "hub" is a folder served through a real fsspec file system (fsspec's DirFileSystem over a LocalFileSystem
that counts the bytes read), laid out as huggingface_hub's HfFileSystem names files (``org/name[@rev]/file``).
The hub itself stays off (HF_HUB_OFFLINE=1): nothing here reaches the network.
"""
from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
import torch.multiprocessing as mp
from test_ddp import _free_port
from test_weights import assert_same_tensors, checkpoint_tensors, offline_hub  # noqa: F401 (a fixture)
from tiny_llm import CountingFileSystem, ddp_hub_worker, hub_cache, layer_shards, save_tiny, serve

from nnunetv2_llm.core.spec import LLMSpec
from nnunetv2_llm.core.weights import hub_layer_cache, load_extracted, load_layer

LAYERS = 12  # so that one layer is about a tenth of the file, as in LLaMA-3.2-1B (16 layers + embeddings)
LAYER = 5


class RangeIgnoringFileSystem(CountingFileSystem):
    """A server that ignores Range headers: every read returns the whole file."""

    def cat_file(self, path, start=None, end=None, **kwargs):
        return super().cat_file(path, **kwargs)


class NoReadFileSystem(CountingFileSystem):
    """A server that refuses partial reads."""

    def _open(self, path, mode="rb", **kwargs):
        raise PermissionError(f"{path}: ranged reads are not allowed here")


@pytest.fixture(scope="module", params=[("llama", torch.float32), ("qwen2", torch.bfloat16)],
                ids=["llama-fp32", "qwen2-bf16"])
def checkpoint(request, tmp_path_factory):
    arch, dtype = request.param
    return save_tiny(tmp_path_factory.mktemp(arch), arch, dtype=dtype, num_hidden_layers=LAYERS)


@pytest.fixture
def hub_root(checkpoint, tmp_path):
    """``tiny/model`` on the served hub: its config.json and one model.safetensors."""
    repo = tmp_path / "served" / "tiny" / "model"
    repo.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, repo / name)
    return tmp_path / "served"


def hub_spec(checkpoint, revision=None) -> LLMSpec:
    """The spec as plans carry it (config included, so config.json needs no fetch)."""
    return LLMSpec(source="tiny/model", layer=LAYER, revision=revision,
                   config=json.loads((checkpoint / "config.json").read_text()))


def layer_bytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_hub_single_file_reads_only_header_and_layer_bytes_then_the_cache(checkpoint, hub_root, offline_hub,
                                                                          capsys):
    hub, counter = serve(hub_root)
    spec = hub_spec(checkpoint)
    layer = load_layer(spec, hub_fs=hub)

    file = checkpoint / "model.safetensors"
    header = 8 + struct.unpack("<Q", file.read_bytes()[:8])[0]
    expected = checkpoint_tensors(checkpoint, LAYER)
    assert counter.bytes_read == header + layer_bytes(expected)
    assert counter.bytes_read < file.stat().st_size / 8
    assert_same_tensors(layer.tensors, expected)
    assert layer.sha256 == load_layer(LLMSpec(source=str(checkpoint), layer=LAYER)).sha256
    assert "read layer 5 by byte ranges" in capsys.readouterr().out

    cache = hub_layer_cache("tiny/model", None, LAYER)
    assert cache.is_relative_to(offline_hub.parent) and layer.files == [str(cache)]
    assert [p.name for p in cache.parent.iterdir()] == [cache.name], "temp file left behind"
    cached = load_extracted(cache, LAYER)  # the `nnunetv2-llm extract` format, sha256 verified
    assert cached.sha256 == layer.sha256 and cached.source == "tiny/model" and cached.config == spec.config

    counter.bytes_read, counter.opened = 0, []
    for again in (load_layer(spec, hub_fs=hub), load_layer(spec)):  # later folds / runs, with or without a hub
        assert counter.bytes_read == 0 and counter.opened == []
        assert_same_tensors(again.tensors, expected)
        assert again.files == [str(cache)] and again.sha256 == layer.sha256


def test_hub_revision_is_read_from_its_path_and_cached_apart(checkpoint, hub_root, offline_hub, tmp_path):
    arch = json.loads((checkpoint / "config.json").read_text())["model_type"]
    other = save_tiny(tmp_path / "v2", arch, seed=7, num_hidden_layers=LAYERS)
    shutil.copytree(other, hub_root / "tiny" / "model@v2")
    hub, _ = serve(hub_root)
    at_v2 = load_layer(hub_spec(checkpoint, revision="v2"), hub_fs=hub)
    at_main = load_layer(hub_spec(checkpoint), hub_fs=hub)
    assert_same_tensors(at_v2.tensors, checkpoint_tensors(other, LAYER))
    assert_same_tensors(at_main.tensors, checkpoint_tensors(checkpoint, LAYER))
    assert at_v2.files == [str(hub_layer_cache("tiny/model", "v2", LAYER))] != at_main.files


@pytest.mark.parametrize("fs_class", [RangeIgnoringFileSystem, NoReadFileSystem], ids=["ignores", "refuses"])
def test_hub_without_ranged_reads_falls_back_to_the_whole_file(fs_class, checkpoint, hub_root, offline_hub, capsys):
    """The whole-file path is huggingface_hub's cache, filled here as a download would have filled it."""
    snapshot = hub_cache(offline_hub, "tiny/model", {n: checkpoint / n for n in ("config.json", "model.safetensors")})
    hub, _ = serve(hub_root, fs_class)
    layer = load_layer(hub_spec(checkpoint), hub_fs=hub)
    err = capsys.readouterr().out
    assert "hub model 'tiny/model': reading only layer 5's byte ranges of model.safetensors failed (" in err
    assert "downloading the whole file into the hub cache instead" in err
    assert ("does not honour byte ranges" if fs_class is RangeIgnoringFileSystem else "PermissionError") in err
    assert layer.files == [str(snapshot / "model.safetensors")]
    assert_same_tensors(layer.tensors, checkpoint_tensors(checkpoint, LAYER))
    assert not hub_layer_cache("tiny/model", None, LAYER).exists()


def test_corrupted_layer_cache_is_fetched_again(checkpoint, hub_root, offline_hub, capsys):
    hub, counter = serve(hub_root)
    spec = hub_spec(checkpoint)
    first = load_layer(spec, hub_fs=hub)
    cache = hub_layer_cache("tiny/model", None, LAYER)
    data = bytearray(cache.read_bytes())
    data[-5] ^= 0x10
    cache.write_bytes(bytes(data))
    counter.bytes_read = 0
    again = load_layer(spec, hub_fs=hub)
    assert "is corrupted" in capsys.readouterr().out and counter.bytes_read > 0
    assert again.sha256 == first.sha256 and load_extracted(cache).sha256 == first.sha256


def test_sharded_hub_checkpoint_uses_index_and_shards_without_a_message(offline_hub, tmp_path, capsys):
    """No model.safetensors on the hub: the shards holding the layer come through huggingface_hub's cache."""
    folder = save_tiny(tmp_path / "sharded", "qwen2", max_shard_size="60KB")
    held = layer_shards(folder, 2)
    files = {p.name: p for p in held} | {n: folder / n for n in ("config.json", "model.safetensors.index.json")}
    snapshot = hub_cache(offline_hub, "tiny/sharded", files)
    (tmp_path / "served" / "tiny" / "sharded").mkdir(parents=True)
    hub, counter = serve(tmp_path / "served")
    layer = load_layer(LLMSpec(source="tiny/sharded", layer=2), hub_fs=hub)
    assert {p for p in layer.files} == {str(snapshot / p.name) for p in held}
    assert_same_tensors(layer.tensors, checkpoint_tensors(folder, 2))
    assert counter.bytes_read == 0 and "failed" not in capsys.readouterr().out


@pytest.mark.parametrize("checkpoint", [("llama", torch.float32)], ids=["llama-fp32"], indirect=True)
def test_under_ddp_only_rank_0_reads_the_hub(checkpoint, hub_root, offline_hub):
    """Two gloo ranks; the spawned ones find HF_HOME (so the layer cache) in the environment the fixture set."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(ddp_hub_worker, args=(2, _free_port(), str(hub_root), hub_spec(checkpoint).to_dict(), out),
                 nprocs=2, join=True)
        results = dict(out)
    cache = str(hub_layer_cache("tiny/model", None, LAYER))
    assert results[0]["bytes_read"] > 0 and results[1]["bytes_read"] == 0
    assert results[0]["files"] == results[1]["files"] == [cache]
    assert results[0]["sha256"] == results[1]["sha256"] == load_extracted(cache).sha256


def _final_norm(checkpoint):
    from safetensors import safe_open
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("model.norm.weight")


def test_hub_final_norm_reads_its_byte_ranges_once_then_the_cache(checkpoint, hub_root, offline_hub):
    from nnunetv2_llm.core.weights import load_final_norm
    hub, counter = serve(hub_root)
    spec = hub_spec(checkpoint).replace(final_norm=True, layer=LAYERS - 1)
    norm = load_final_norm(spec, hub_fs=hub)
    torch.testing.assert_close(norm.weight, _final_norm(checkpoint))
    assert counter.bytes_read < (checkpoint / "model.safetensors").stat().st_size / 8
    counter.bytes_read = 0
    again = load_final_norm(spec, hub_fs=hub)
    assert counter.bytes_read == 0 and again.sha256 == norm.sha256


@pytest.mark.parametrize("fs_class", [RangeIgnoringFileSystem, NoReadFileSystem], ids=["ignores", "refuses"])
def test_hub_final_norm_without_ranged_reads_falls_back_to_the_whole_file(fs_class, checkpoint, hub_root,
                                                                          offline_hub, capsys):
    from nnunetv2_llm.core.weights import load_final_norm
    snapshot = hub_cache(offline_hub, "tiny/model", {n: checkpoint / n for n in ("config.json", "model.safetensors")})
    hub, _ = serve(hub_root, fs_class)
    norm = load_final_norm(hub_spec(checkpoint).replace(final_norm=True, layer=LAYERS - 1), hub_fs=hub)
    assert "reading only the final norm's byte ranges of model.safetensors failed" in capsys.readouterr().out
    assert norm.files == [str(snapshot / "model.safetensors")]
    torch.testing.assert_close(norm.weight, _final_norm(checkpoint))


def test_a_folder_without_a_checkpoint_has_no_final_norm_to_read(checkpoint, tmp_path):
    from nnunetv2_llm.core.weights import LLMWeightsError, load_final_norm
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder / "config.json")
    spec = LLMSpec(source=str(folder), layer=LAYERS - 1, final_norm=True,
                   config=json.loads((checkpoint / "config.json").read_text()))
    with pytest.raises(LLMWeightsError, match=r"has neither model.safetensors.index.json nor model.safetensors"):
        load_final_norm(spec)


# ---------------------------------------------------------------- an unreachable hub (issue 32 #4)

def _unreachable_hub_env(tmp_path) -> dict:
    """The hub on a closed local port (nothing reaches the network), offline mode off, an empty hub cache."""
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}", "HF_HOME": str(tmp_path / "hf_home")}


def test_extract_from_an_unreachable_hub_fails_in_seconds_with_advice_that_fits_the_model(tmp_path):
    import subprocess
    import time

    from conftest import BIN
    env = _unreachable_hub_env(tmp_path)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "nnunetv2-llm"), "extract", "--llm", "deepseek-r1-distill-qwen-1.5b", "-o",
                           str(tmp_path / "layer.safetensors")], env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "is not in the local cache and the hub (http://127.0.0.1:" in proc.stderr and "cannot be reached" in proc.stderr
    assert "HF_TOKEN" not in proc.stderr and "licence" not in proc.stderr, "DeepSeek is not gated"
    assert "nnunetv2-llm extract --llm deepseek-r1-distill-qwen-1.5b -o layer.safetensors" in proc.stderr
    assert "downloading the whole file" not in proc.stdout + proc.stderr
    assert elapsed < 30, f"{elapsed:.0f} s to find out that the hub cannot be reached"
    assert not (tmp_path / "layer.safetensors").exists()


def test_unreachable_message_names_the_licence_only_for_a_gated_model():
    from nnunetv2_llm.core.weights.reach import HubAccess, unreachable_message
    access = HubAccess(False, "http://127.0.0.1:9", "ConnectError: refused")
    llama = unreachable_message("meta-llama/Llama-3.2-1B", "'model.safetensors'", access)
    assert "licence at https://huggingface.co/meta-llama/Llama-3.2-1B" in llama and "HF_TOKEN" in llama
    assert "--llm llama-3.2-1b" in llama
    assert "licence" not in unreachable_message("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "x", access)


def test_unreachable_advice_gives_the_route_that_trains_with_nnunetv2_train():
    """nnUNetv2_train has no --llm (issue 39 #5): the advice plans the copied layer file and names the trainer."""
    from nnunetv2_llm.core.weights.reach import unreachable_advice
    advice = unreachable_advice("meta-llama/Llama-3.2-1B")
    assert "nnunetv2-llm plan -d DATASET --llm layer.safetensors -o NAME" in advice
    assert "-tr nnUNetTrainerLLM -p NAME" in advice
    assert "pass it as --llm" not in advice
