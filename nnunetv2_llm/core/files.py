"""Writing files so that a reader never sees a half-written one."""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

def honour_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode an ordinary ``open``/``mkdir`` would
    have given it, so colleagues on a shared cluster can read it as they read nnU-Net's own files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC (or a disk quota), as OSError or as a library's own error that carries the OS message (safetensors)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "Disk quota exceeded" in str(error)


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.2f} GiB"


def disk_full_error(folder: str | os.PathLike, needed: int | None = None, what: str = "the file",
                    left: str = "nothing was written"):
    """A UserError that says the disk is full, where, how much is free and (when known) how much was needed."""
    import shutil

    from .errors import UserError
    folder = Path(folder)
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"; {what} needs {_size(needed)}" if needed else ""
    return UserError(f"the disk holding {folder} is full ({free}{need}); {left}. Free space there, or "
                     f"write elsewhere, and run the same command again.")


def _temporary_prefix(path: Path) -> str:
    """``.NAME.HOST.``: a temporary file of :func:`atomic_path` names its host and (next) its writer's pid."""
    return f".{path.name}.{socket.gethostname()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by a writer on this host that no longer runs (SIGKILL, power loss): a rerun
    removes them rather than letting them pile up beside the output. Live writers' and other hosts' are kept."""
    prefix = _temporary_prefix(path)
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None):
    """Yield a temporary name next to ``path``; it replaces ``path`` only when the block succeeds. A full disk is a
    UserError saying where and how much (``needed`` bytes, when the caller knows), with the temporary file gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(path.parent, needed, path.name) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def tree_sha256(folder: str | os.PathLike) -> str:
    """sha256 over a folder's files: their relative paths and contents (``__pycache__`` left out)."""
    h = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike, fix: str = "fix the file or restore it (nnU-Net writes it again when you "
                                                 "re-run the step that made it)"):
    """A JSON file's content; a missing or damaged file is a UserError that names it and says ``fix``."""
    from .errors import UserError
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the path (nnU-Net writes dataset.json and plans.json "
                        f"next to the data and results they describe).") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a JSON file; pass the file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); {fix}.") from None


def write_json(path: str | os.PathLike, data, indent: int = 4) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
    return Path(path)


CHECKPOINT_ERRORS = (RuntimeError, EOFError, OSError, ValueError)  # what torch.load raises on a damaged file


def check_checkpoint_file(path: str | os.PathLike, error: Exception | None = None) -> None:
    """A missing or truncated checkpoint (its zip directory, at the end of the file, is gone) is a UserError that
    names the file and how to get a good one."""
    import zipfile

    from .errors import UserError
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path (nnU-Net writes "
                        f"fold_X/checkpoint_final.pth when a fold finishes training).")
    if error is not None or not zipfile.is_zipfile(path):
        cause = f" ({type(error).__name__}: {str(error)[:200]})" if error is not None else ""
        raise UserError(f"checkpoint {path} cannot be read{cause}: it is truncated or damaged. Train the fold "
                        f"again, or copy the file again from where it was made.")


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """``torch.load`` of an nnU-Net checkpoint on the CPU (``mmap``: tensors read only when used); a missing or
    damaged file is a UserError naming it."""
    import torch
    check_checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except CHECKPOINT_ERRORS as e:
        check_checkpoint_file(path, e)
