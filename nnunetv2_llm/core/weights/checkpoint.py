"""Safetensors checkpoints (a local folder or the hub's files): the index or the single file, and only the shards
holding what is read. One reader for a layer and for the final norm: a *choice* (see :mod:`.tensors`) says which
keys."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..files import read_json
from .tensors import LLMWeightsError, layer_prefix

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class HubUnreachableError(LLMWeightsError):
    """A hub file is neither in the local cache nor fetchable (offline, no network)."""


def layer_shards(weight_map: dict[str, str], layer: int, where: str) -> list[str]:
    """The shard files a safetensors index maps the layer's tensors to."""
    prefix = layer_prefix(weight_map, layer, where)
    return sorted({f for k, f in weight_map.items() if k.startswith(prefix)})


def folder_fetch(path: Path):
    """``fetch(name, optional)`` of a local checkpoint folder: a file's path, or None if absent."""
    return lambda name, optional: str(path / name) if (path / name).is_file() else None


def folder_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise LLMWeightsError(f"checkpoint folder {path} has no config.json; copy the model's config.json there.")
    return read_json(cfg)


def _index(source: str, fetch, needed_for: str) -> tuple[dict | None, str | None]:
    """(weight map of the index, None) of a sharded checkpoint, or (None, its single file); ``fetch(name,
    optional)`` returns a local path of a file of the checkpoint (or None if absent)."""
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
        raise LLMWeightsError(f"checkpoint {source!r} has neither {INDEX_NAME} nor {SINGLE_NAME}, so {needed_for} "
                              f"cannot be read: only safetensors checkpoints are. Convert it with transformers' "
                              f"`save_pretrained(..., safe_serialization=True)`, or pass a .gguf file.")
    return None, single


def _shards(source: str, fetch, shards, holding: str) -> dict[str, str]:
    """Local paths of the shards holding what is read, every missing one named."""
    paths = {s: fetch(s, True) for s in sorted(set(shards))}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise LLMWeightsError(f"checkpoint {source!r} is partial: shard(s) {missing} holding {holding} are "
                              f"missing. Re-download the checkpoint (or those files).")
    return paths


def _read(key_to_file: dict[str, str], prefix: str) -> tuple[dict, list[str]]:
    """Read each key from its file, opening each file once; return prefix-stripped tensors and the files opened."""
    by_file: dict[str, list[str]] = {}
    for key, path in key_to_file.items():
        by_file.setdefault(path, []).append(key)
    tensors = {}
    for path, keys in sorted(by_file.items()):
        try:
            with safe_open(path, framework="pt") as f:
                for k in keys:
                    tensors[k[len(prefix):]] = f.get_tensor(k)
        except SafetensorError as e:
            raise LLMWeightsError(f"{path} is not a readable safetensors file ({e}); re-download it.") from None
    return tensors, sorted(by_file)


def checkpoint_tensors(source: str, fetch, choose, holding: str) -> tuple[dict, list[str]]:
    """What ``choose`` picks (a layer, the final norm) of a sharded or single-file checkpoint, reading only the
    shards that hold it; returns the tensors and the files read."""
    where = f"checkpoint {source!r}"
    weight_map, single = _index(source, fetch, holding)
    if weight_map is not None:
        keys, prefix = choose(list(weight_map))
        paths = _shards(source, fetch, [weight_map[k] for k in keys], holding)
        return _read({k: paths[weight_map[k]] for k in keys}, prefix)
    try:
        with safe_open(single, framework="pt") as f:
            all_keys = list(f.keys())
    except SafetensorError as e:
        raise LLMWeightsError(f"{where}: {single} is not a readable safetensors file ({e}); re-download it.") from None
    keys, prefix = choose(all_keys)
    return _read({k: single for k in keys}, prefix)
