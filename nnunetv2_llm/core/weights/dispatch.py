"""The one dispatch by source kind: each kind is a reader of the config, a layer and the final norm, and the entry
points (``read_config``, ``load_layer``, ``load_final_norm``) ask the source's reader."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ..spec import LLMSpec
from .checkpoint import checkpoint_tensors, folder_config, folder_fetch
from .gguf_file import gguf_config, gguf_final_norm, gguf_layer
from .hub import hub_config, hub_final_norm, hub_layer, rank_zero_first
from .layer_file import extracted_config, extracted_final_norm, load_extracted
from .sources import canonical_source, local_source_path, source_kind
from .tensors import FinalNorm, LayerWeights, layer_keys, norm_keys


@dataclass
class _Reader:
    """A source's reader; ``exclusive`` is what reading it takes under DDP (nothing, but for the hub)."""

    source: str
    path: Path | None

    def exclusive(self):
        return contextlib.nullcontext()

    def config(self, revision: str | None) -> dict:
        raise NotImplementedError

    def layer(self, spec: LLMSpec) -> LayerWeights:
        raise NotImplementedError

    def final_norm(self, spec: LLMSpec) -> FinalNorm:
        raise NotImplementedError


class _Folder(_Reader):
    """A checkpoint folder: config.json and safetensors (sharded or not)."""

    def config(self, revision):
        return folder_config(self.path)

    def layer(self, spec):
        tensors, files = checkpoint_tensors(spec.source, folder_fetch(self.path), layer_keys(
            spec.layer, f"checkpoint {spec.source!r}"), f"layer {spec.layer}")
        return LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, files)

    def final_norm(self, spec):
        tensors, files = checkpoint_tensors(spec.source, folder_fetch(self.path), norm_keys(
            spec.layer, f"LLM source {spec.source!r}"), "the final norm")
        return FinalNorm(tensors["weight"], files)


class _LayerFile(_Reader):
    """A layer file of ``nnunetv2-llm extract``."""

    def config(self, revision):
        return extracted_config(self.path)

    def layer(self, spec):
        return load_extracted(self.path, spec.layer)

    def final_norm(self, spec):
        return extracted_final_norm(self.path)


class _GGUF(_Reader):
    def config(self, revision):
        return gguf_config(self.path)

    def layer(self, spec):
        tensors, files = gguf_layer(self.path, spec, spec.config)
        return LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, files)

    def final_norm(self, spec):
        return gguf_final_norm(self.path)


@dataclass
class _Hub(_Reader):
    fs: object = None
    echo: object = print

    def exclusive(self):
        return rank_zero_first()

    def config(self, revision):
        return hub_config(self.source, revision)

    def layer(self, spec):
        return hub_layer(spec, self.fs, self.echo)

    def final_norm(self, spec):
        return hub_final_norm(spec, self.fs, self.echo)


def reader(source: str, hub_fs=None, echo=print) -> _Reader:
    """The reader of ``source``'s kind (a package's file is read as the file it is)."""
    if source_kind(source) == "hub":
        return _Hub(source, None, hub_fs, echo)
    path = local_source_path(source)
    if path.is_dir():
        return _Folder(source, path)
    return (_GGUF if path.suffix == ".gguf" else _LayerFile)(source, path)


def read_config(source: str, revision: str | None = None) -> dict:
    """The model config (as a plain dict with ``model_type``) of any supported source."""
    return reader(source).config(revision)


def _with_config(spec: LLMSpec, source_reader: _Reader) -> LLMSpec:
    return spec if spec.config is not None else spec.replace(config=source_reader.config(spec.revision))


def load_layer(spec: LLMSpec, hub_fs=None, echo=print) -> LayerWeights:
    """Read exactly one decoder layer of ``spec.source``; nothing else of the model is loaded.

    ``hub_fs``: the fsspec file system hub files are read from by byte ranges (default: huggingface_hub's
    ``HfFileSystem``); one passed in is used even under HF_HUB_OFFLINE, which forbids only the hub itself.
    ``echo``: where the hub's messages go (the trainer passes its log)."""
    source_reader = reader(spec.source, hub_fs, echo)
    with source_reader.exclusive():
        return source_reader.layer(_with_config(spec, source_reader))


def per_layer(spec: LLMSpec) -> list[LLMSpec]:
    """One single-layer spec for each layer of a block of ``spec.depth`` layers."""
    return [spec.replace(layer=spec.layer + i, depth=1, sha256=None, final_norm=False) for i in range(spec.depth)]


def load_layers(spec: LLMSpec, hub_fs=None, echo=print) -> list[LayerWeights]:
    """Each of the block's ``depth`` consecutive layers, each read with the one-layer loader."""
    with_config = spec if spec.config is not None else spec.replace(config=read_config(spec.source, spec.revision))
    return [load_layer(one, hub_fs, echo) for one in per_layer(with_config)]


def load_final_norm(spec: LLMSpec, hub_fs=None, echo=print) -> FinalNorm:
    """The final norm of ``spec.source``, read by the same reader as its layers: a GGUF's ``output_norm``, a
    checkpoint's ``model.norm.weight`` (for the hub by byte ranges, cached next to the layer cache), or a layer file
    that holds it."""
    source_reader = reader(spec.source, hub_fs, echo)
    with source_reader.exclusive():
        return source_reader.final_norm(spec)


def resolve_spec(spec: LLMSpec) -> LLMSpec:
    """The spec with its source made absolute (local files) and its model config filled in (from a named model,
    a local file or the hub)."""
    spec = spec.replace(source=canonical_source(spec.source))
    if spec.config is not None:
        return spec
    return spec.replace(config=read_config(spec.source, spec.revision))
