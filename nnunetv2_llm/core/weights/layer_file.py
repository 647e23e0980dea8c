"""The layer file ``nnunetv2-llm extract`` (and the hub layer cache) writes: one or more decoder layers, maybe the
final norm, the model config, the source and a sha256 of each, in a safetensors file's metadata."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..files import atomic_path
from .tensors import MAX_SAFETENSORS_HEADER, FinalNorm, LayerWeights, LLMWeightsError

EXTRACT_FORMAT = "nnunetv2-llm-layer"
_EXTRACT_KEYS = ("sha256", "layer", "source", "config")


def read_extracted_metadata(path: Path) -> dict:
    """The metadata of a layer file, refused unless extract wrote it and it records what verifies it."""
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


def extracted_config(path: Path) -> dict:
    return json.loads(read_extracted_metadata(path)["config"])


def _extracted_layers(meta: dict) -> list[int]:
    return [int(i) for i in json.loads(meta["layers"])] if "layers" in meta else [int(meta["layer"])]


def extracted_layers(path: str | os.PathLike) -> list[int]:
    """The layers a file from ``nnunetv2-llm extract`` holds."""
    return _extracted_layers(read_extracted_metadata(Path(path)))


def load_extracted(path: str | os.PathLike, layer: int | None = None) -> LayerWeights:
    """One layer of a file from :func:`write_extracted` (default: its first), verifying the recorded sha256."""
    path = Path(path)
    meta = read_extracted_metadata(path)
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


def extracted_final_norm(path: Path) -> FinalNorm:
    """The final norm a layer file holds (``extract --final-norm``), verifying its recorded sha256."""
    meta = read_extracted_metadata(path)
    if "norm_sha256" not in meta:
        raise LLMWeightsError(f"{path} holds no final norm: extract it with `nnunetv2-llm extract ... "
                              f"--final-norm`, or drop final_norm.")
    with safe_open(str(path), framework="pt") as f:
        norm = FinalNorm(f.get_tensor("norm.weight"), [str(path)])
    if norm.sha256 != meta["norm_sha256"]:
        raise LLMWeightsError(f"{path} is corrupted: its final norm hashes to {norm.sha256}, the file records "
                              f"{meta['norm_sha256']}. Extract it again.")
    return norm


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
    with atomic_path(out_path, needed=sum(v.numel() * v.element_size() for v in tensors.values())) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    return out_path


def written_by_extract(path: Path) -> bool | None:
    """Whether a safetensors file's header says extract wrote it (True), another writer did (False), or the header
    itself is unreadable (None). Read from the header alone, so a file whose tensors are truncated is recognised."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == EXTRACT_FORMAT
