"""The versions a submission pins: those of the packages that decide what the model computes and of every runtime
requirement of this package, as installed when the model is exported (the Dockerfile installs exactly these).
"""
from __future__ import annotations

import importlib.metadata

from .runtime import ExportError

# The packages whose versions decide what the model computes; the Dockerfile pins them (and our other requirements).
PINNED = ("torch", "nnunetv2", "transformers", "dynamic-network-architectures")


def package_versions() -> dict[str, str]:
    """Installed versions of the pinned packages and of every runtime requirement of this package."""
    from packaging.requirements import Requirement
    names = list(PINNED)
    for line in importlib.metadata.requires("nnunetv2-llm") or []:
        req = Requirement(line)
        if req.marker is None and req.name not in names:
            names.append(req.name)
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            raise ExportError(f"{name} is not installed, yet this package requires it; reinstall nnunetv2-llm "
                              f"(`pip install nnunetv2-llm`) before exporting.") from None
    versions["nnunetv2-llm"] = importlib.metadata.version("nnunetv2-llm")
    return versions
