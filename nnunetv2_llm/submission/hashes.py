"""What export.json pins by sha256: the files of a submission that decide what the container runs, and the record
itself, so that ``export --check`` refuses a submission edited after export.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.files import file_sha256, tree_sha256

# The files of a submission whose sha256 export.json records (README.md is rewritten by --check, so it is not one).
RECORDED = ("Dockerfile", "predict.py", "src")


def recorded_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the files export wrote that decide what the container runs."""
    return {name: tree_sha256(folder / name) if (folder / name).is_dir() else file_sha256(folder / name)
            for name in RECORDED}


def record_sha256(record: dict) -> str:
    """sha256 of export.json's own content (all but this field), so an edited record is caught like an edited file."""
    import hashlib
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
