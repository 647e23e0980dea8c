"""The hub: whole files through huggingface_hub's cache, or of a single ``model.safetensors`` only the header and the
byte ranges of what is read (a layer, the final norm), kept in a cache of our own under HF_HOME."""
from __future__ import annotations

import contextlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from ..spec import LLMSpec
from ..files import atomic_path
from .reach import hub_access, unreachable_advice, unreachable_message
from .checkpoint import INDEX_NAME, SINGLE_NAME, HubUnreachableError, checkpoint_tensors, layer_shards
from .layer_file import load_extracted, write_extracted
from .tensors import MAX_SAFETENSORS_HEADER, FinalNorm, LayerWeights, LLMWeightsError, layer_keys, norm_keys

LAYER_CACHE = "nnunetv2-llm-layers"
NORM_CACHE = "final-norm.safetensors"
_OFFLINE_FIX = ("Set HF_TOKEN (and accept the model's licence on its hub page), or pass a local "
                "checkpoint folder or a single-layer file made with `nnunetv2-llm extract` as the source.")


def hub_download(repo_id: str, filename: str, revision: str | None, optional: bool = False) -> str | None:
    """A local path of one file of a hub repo; None if ``optional`` and the repo has no such file."""
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub import try_to_load_from_cache

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
                f"hub model {repo_id!r}: {filename!r} (revision {revision or 'main'}) is not in the local cache and "
                f"offline mode is on "
                f"(HF_HUB_OFFLINE=1), so the hub is not asked. Cache the files first where the hub is reachable "
                f"(run once without HF_HUB_OFFLINE), or there run `nnunetv2-llm extract` and pass the extracted "
                f"layer file (or a local checkpoint folder) as the source.") from None
        raise HubUnreachableError(
            f"hub model {repo_id!r}: {filename!r} (revision {revision or 'main'}) is not in the local cache and the "
            f"hub cannot be reached (no network?). {unreachable_advice(repo_id)}") from None
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


def hub_config(repo_id: str, revision: str | None) -> dict:
    from ..files import read_json
    return read_json(Path(hub_download(repo_id, "config.json", revision)))


@contextlib.contextmanager
def rank_zero_first():
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


# ---------------------------------------------------------------- byte ranges

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


def ranged_tensors(fs, path: str, choose) -> tuple[dict, int]:
    """Tensors of a safetensors file read through ``fs`` from its header and their own byte ranges only.
    ``choose(header keys)`` returns (the keys to read, a prefix to strip from their names). Returns the tensors and
    the number of bytes read."""
    header_len = struct.unpack("<Q", _read_range(fs, path, 0, 8))[0]
    if header_len > MAX_SAFETENSORS_HEADER:
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


def _hub_file_path(repo_id: str, revision: str | None, filename: str) -> str:
    """A hub file's path as huggingface_hub's ``HfFileSystem`` names it (``org/name@revision/file``)."""
    return f"{repo_id}@{quote(revision, safe='')}/{filename}" if revision else f"{repo_id}/{filename}"


@dataclass
class _Part:
    """What one hub read is about (a layer or the final norm): how to pick its keys, its cache, and its result."""

    what: str
    choose: Callable
    cached: Callable[[], object | None]  # the cached result, or None
    store: Callable[[dict], object]  # from ranged tensors: cache them, return the result
    from_files: Callable[[dict, list[str]], object]


def _read_part(spec: LLMSpec, fs, echo, part: _Part):
    """The cache, else byte ranges of a single ``model.safetensors`` through ``fs`` (default: an ``HfFileSystem``
    with the user's token and endpoint, unless offline or the file is already whole in the hub cache), else whole
    files through huggingface_hub's cache (index and shards of a sharded checkpoint). Any failure of the ranged read
    falls back to the download, which reports real errors."""
    from huggingface_hub import constants, try_to_load_from_cache
    found = part.cached()
    if found is not None:
        return found
    where = f"hub model {spec.source!r}"
    if fs is None and not constants.HF_HUB_OFFLINE and not isinstance(
            try_to_load_from_cache(spec.source, SINGLE_NAME, revision=spec.revision), str) and hub_access().reachable:
        from huggingface_hub import HfFileSystem  # (a whole file already in the hub cache is read from there)
        fs = HfFileSystem()
    if fs is not None:
        try:
            tensors, read = ranged_tensors(fs, _hub_file_path(spec.source, spec.revision, SINGLE_NAME), part.choose)
        except LLMWeightsError:
            raise
        except FileNotFoundError:
            pass  # sharded (or gated, or absent): the index path below fetches what it needs or says why not
        except Exception as e:
            echo(f"{where}: reading only {part.what}'s byte ranges of {SINGLE_NAME} failed "
                 f"({type(e).__name__}: {e}); downloading the whole file into the hub cache instead.")
        else:
            try:
                result = part.store(tensors)
            except OSError as e:
                raise LLMWeightsError(f"{where}: cannot write the cache of {part.what} under HF_HOME ({e}). Make "
                                      f"HF_HOME a writable folder (export HF_HOME=...).") from None
            echo(f"{where}: read {part.what} by byte ranges ({read / 2**20:.1f} MiB of {SINGLE_NAME})")
            return result
    fetch = lambda name, optional: hub_download(spec.source, name, spec.revision, optional)  # noqa: E731
    return part.from_files(*checkpoint_tensors(spec.source, fetch, part.choose, part.what))


def hub_layer(spec: LLMSpec, fs, echo) -> LayerWeights:
    """One layer of a hub checkpoint (see :func:`_read_part`), cached as a layer file."""
    cache = hub_layer_cache(spec.source, spec.revision, spec.layer)

    def cached():
        if cache.is_file():
            try:
                return load_extracted(cache, spec.layer)
            except LLMWeightsError as e:
                echo(f"{e} Fetching it again.")
        return None

    def weights(tensors, files):
        return LayerWeights(tensors, spec.config, spec.source, spec.layer, spec.revision, files)

    def store(tensors):
        cache.parent.mkdir(parents=True, exist_ok=True)
        return weights(tensors, [str(write_extracted(weights(tensors, [str(cache)]), cache))])

    return _read_part(spec, fs, echo, _Part(f"layer {spec.layer}", layer_keys(spec.layer, f"hub model {spec.source!r}"),
                                            cached, store, weights))


def hub_final_norm(spec: LLMSpec, fs, echo) -> FinalNorm:
    """The final norm of a hub checkpoint, read as its layers are, cached next to the layer cache."""
    cache = hub_layer_cache(spec.source, spec.revision, spec.layer).with_name(NORM_CACHE)

    def cached():
        if not cache.is_file():
            return None
        try:
            with safe_open(str(cache), framework="pt") as f:
                norm, recorded = FinalNorm(f.get_tensor("weight"), [str(cache)]), (f.metadata() or {}).get("sha256")
            if norm.sha256 == recorded:
                return norm
        except (SafetensorError, OSError):
            pass
        echo(f"{cache} is damaged; fetching the final norm again.")
        return None

    def store(tensors):
        norm = FinalNorm(tensors["weight"], [str(cache)])
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            save_file({"weight": norm.weight.contiguous()}, tmp, metadata={"sha256": norm.sha256})
        return norm

    return _read_part(spec, fs, echo, _Part("the final norm", norm_keys(spec.layer, f"hub model {spec.source!r}"),
                                            cached, store, lambda t, files: FinalNorm(t["weight"], files)))


def cached_layer_files(repo_id: str, layer: int, revision: str | None = None) -> list[str] | None:
    """The local files holding ``layer`` of a hub checkpoint (our layer cache, else huggingface_hub's cache of the
    index and its shards, or of the single file), or None when they are not all here."""
    from huggingface_hub import try_to_load_from_cache

    ours = hub_layer_cache(repo_id, revision, layer)
    if ours.is_file():
        return [str(ours)]
    index = try_to_load_from_cache(repo_id, INDEX_NAME, revision=revision)
    if isinstance(index, str):
        try:
            shards = layer_shards(json.loads(Path(index).read_text())["weight_map"], layer, repo_id)
        except (LLMWeightsError, OSError, ValueError, KeyError):
            return None
        paths = [try_to_load_from_cache(repo_id, s, revision=revision) for s in shards]
        return [str(p) for p in paths] if all(isinstance(p, str) for p in paths) else None
    single = try_to_load_from_cache(repo_id, SINGLE_NAME, revision=revision)
    return [single] if isinstance(single, str) else None
