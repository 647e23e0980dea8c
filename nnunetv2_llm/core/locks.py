"""One process at a time: a lock file held for a block (filelock works across processes and on shared cluster file
systems)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, what: str, echo=print, wait: bool = True):
    """Hold ``lock_file`` (filelock: works across processes and on shared cluster file systems) for the block.
    When another process holds it, say so and wait for it (``wait``), else yield False at once without it."""
    from filelock import FileLock, Timeout
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            yield False
            return
        echo(f"waiting for another run that holds {what} ({lock_file}) to finish ...")
        lock.acquire()
    try:
        yield True
    finally:
        lock.release()
